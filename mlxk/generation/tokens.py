"""The bytes each token id stands for, read from a Hugging Face fast tokenizer.

Grammar masks need them (which tokens may come next is a question about bytes) and so do
logprobs (OpenAI's ``bytes`` field). A token's bytes are not what ``decode([id])`` returns for
byte-level BPE vocabularies, where one token may be half of a UTF-8 character: they come from the
decoder's own alphabet. Added tokens (``<|im_end|>``, ``<tool_call>``) are their text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_METASPACE = "\u2581"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """``pieces[id]``: the bytes of token ``id``; ``added``: the added tokens (``<|im_end|>``,
    ``<tool_call>``, ``[TOOL_CALLS]``: text -> id), of which ``special`` are marked special."""

    pieces: tuple[bytes, ...]
    special: frozenset[int]
    added: Mapping[str, int]

    def text(self, token: int) -> str:
        """A token as text (a piece of a UTF-8 character shows as U+FFFD)."""
        if 0 <= token < len(self.pieces):
            return self.pieces[token].decode("utf-8", "replace")
        return ""

    def bytes_of(self, token: int) -> bytes:
        return self.pieces[token] if 0 <= token < len(self.pieces) else b""


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_kinds(decoder: Any) -> set[str]:
    """The types of a tokenizer.json decoder, including those inside a Sequence."""
    if not isinstance(decoder, dict):
        return set()
    kinds = {str(decoder.get("type"))}
    for inner in decoder.get("decoders") or ():
        kinds |= _decoder_kinds(inner)
    return kinds


def backend_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind mlx-lm's tokenizer wrapper or a transformers fast
    tokenizer (each wraps the next in ``_tokenizer`` or ``backend_tokenizer``)."""
    current = tokenizer
    for _ in range(4):
        if hasattr(current, "to_str") and hasattr(current, "id_to_token"):
            return current
        inner = getattr(current, "backend_tokenizer", None) or getattr(current, "_tokenizer", None)
        if inner is None:
            break
        current = inner
    raise TypeError("this model's tokenizer is not a fast (tokenizers) tokenizer")


def vocabulary(tokenizer: Any) -> Vocabulary:
    """The bytes of every id of mlx-lm's tokenizer wrapper (or a transformers fast tokenizer)."""
    backend = backend_tokenizer(tokenizer)
    kinds = _decoder_kinds(json.loads(backend.to_str()).get("decoder"))
    added = backend.get_added_tokens_decoder()
    special = frozenset(i for i, token in added.items() if token.special)
    added_text = {i: token.content for i, token in added.items()}
    alphabet = _byte_level_alphabet() if "ByteLevel" in kinds else None
    pieces: list[bytes] = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        piece = backend.id_to_token(i)
        if i in added_text:
            pieces.append(added_text[i].encode())
        elif piece is None:
            pieces.append(b"")
        elif alphabet is not None and all(c in alphabet for c in piece):
            pieces.append(bytes(alphabet[c] for c in piece))
        elif "ByteFallback" in kinds and (byte := _BYTE_PIECE.fullmatch(piece)) is not None:
            pieces.append(bytes([int(byte.group(1), 16)]))
        elif "Metaspace" in kinds or (kinds & {"Replace"} and _METASPACE in piece):
            pieces.append(piece.replace(_METASPACE, " ").encode())
        else:  # WordLevel, Fuse, ...: what the tokenizer decodes for the token alone
            pieces.append(backend.decode([i], skip_special_tokens=False).encode())
    return Vocabulary(tuple(pieces), special, {text: i for i, text in added_text.items()})
