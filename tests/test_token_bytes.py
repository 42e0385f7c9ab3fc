"""The bytes each token stands for (``mlxk.generation.tokens``), which logprobs report and grammar
masks decide on: for every kind of vocabulary a model may bring, the bytes of a text's tokens put
together are the text's UTF-8, characters that take several tokens included.

Vocabularies: character-level (WordLevel with a Fuse decoder, the tiny test models), byte-level BPE
(GPT-2, Qwen, SmolLM), and sentencepiece-style BPE with byte fallback, decoded by a Metaspace decoder
(Mistral's newer tokenizers) or by Replace + ByteFallback + Fuse + Strip (Llama 2's).
"""

from __future__ import annotations

from typing import Any

import pytest

from mlxk.generation.tokens import backend_tokenizer, vocabulary
from tests.modelfix import _bpe_tokenizer, char_tokenizer

TEXT = "Hello world, café 20 € ok"
SPACE = "\u2581"  # sentencepiece's word boundary


def sentencepiece_style(decoder: str) -> Any:
    """A BPE over single characters and a few merges, with byte fallback: what it has no piece for
    (é, €) becomes <0xNN> byte tokens, as Llama's and Mistral's vocabularies do."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>"]
    chars = [SPACE, *sorted(set(TEXT.replace(" ", "")) - {"é", "€"})]
    merged = [f"{SPACE}H", f"{SPACE}w", "ll"]
    pieces = [*specials, *(f"<0x{b:02X}>" for b in range(256)), *chars, *merged]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merges = [(SPACE, "H"), (SPACE, "w"), ("l", "l")]
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if decoder == "metaspace":
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
    else:
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
        )
        tokenizer.decoder = decoders.Sequence(
            [
                decoders.Replace(SPACE, " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def joined_bytes(tokenizer: Any, text: str) -> bytes:
    vocab = vocabulary(tokenizer)
    return b"".join(vocab.bytes_of(i) for i in tokenizer.encode(text, add_special_tokens=False).ids)


def test_character_level_tokens_are_their_characters() -> None:
    tokenizer = char_tokenizer()
    assert joined_bytes(tokenizer, "Hello world, ok") == b"Hello world, ok"


def test_byte_level_bpe_tokens_are_the_bytes_their_characters_stand_for() -> None:
    tokenizer = _bpe_tokenizer()
    assert joined_bytes(tokenizer, TEXT) == TEXT.encode()
    vocab = vocabulary(tokenizer)
    halves = [vocab.bytes_of(i) for i in tokenizer.encode("€", add_special_tokens=False).ids]
    assert b"".join(halves) == "€".encode() and len(halves) > 1  # a character over several tokens
    assert "\ufffd" in vocab.text(tokenizer.encode("€", add_special_tokens=False).ids[0])


@pytest.mark.parametrize("decoder", ["metaspace", "llama2"])
def test_sentencepiece_tokens_are_what_the_tokenizer_decodes_them_to(decoder: str) -> None:
    """The word boundary is a space (the one the decoders strip at the very start is kept: a token
    is read on its own); byte tokens are bytes where the decoder falls back to bytes (Llama 2's),
    and their text where it does not (a Metaspace decoder alone)."""
    tokenizer = sentencepiece_style(decoder)
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    assert {tokenizer.id_to_token(i) for i in ids} >= {"<0xE2>", "<0x82>", "<0xAC>", f"{SPACE}H", "ll"}
    assert joined_bytes(tokenizer, TEXT) == (" " + tokenizer.decode(ids)).encode()
    if decoder == "llama2":
        assert tokenizer.decode(ids) == TEXT


def test_ids_outside_the_vocabulary_have_no_bytes() -> None:
    vocab = vocabulary(char_tokenizer())
    size = len(vocab.pieces)
    assert (vocab.text(size), vocab.bytes_of(size), vocab.text(-1), vocab.bytes_of(-1)) == ("", b"", "", b"")


def test_special_and_added_tokens_are_their_text() -> None:
    tokenizer = char_tokenizer(added=("<tool_call>",))
    vocab = vocabulary(tokenizer)
    call = vocab.added["<tool_call>"]
    assert vocab.bytes_of(call) == b"<tool_call>" and call in vocab.special


def test_a_tokenizer_that_is_not_a_fast_one_is_named_as_such() -> None:
    with pytest.raises(TypeError, match="not a fast"):
        backend_tokenizer(object())
