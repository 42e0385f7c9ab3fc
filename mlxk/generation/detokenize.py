"""A streaming detokenizer for the tokenizers mlx-lm has no streaming decoder for.

mlx-lm streams byte-level BPE and SentencePiece vocabularies token by token; for any other
tokenizer it falls back to decoding the whole current line again at each new token. Compact JSON
(structured output) and long lines of code have no line break, so each token costs time in
proportion to the answer so far: the answer costs the square of its length.

``WindowedDetokenizer`` decodes a short window instead: the tokens whose text is not settled yet,
after the tokens of the last settled piece, whose own text is subtracted again. Those earlier
tokens give the decoder its context (a space the decoder puts between words or strips at the
start), so the pieces add up to what decoding the whole answer gives. A window whose text ends in
U+FFFD (part of a UTF-8 character) waits for the rest of the character, and so does one that ends
in a space when the tokenizer removes spaces before punctuation (the next token may be a comma),
up to ``MAX_HELD`` tokens, so that no run of tokens makes the window grow with the answer.
"""

from __future__ import annotations

from typing import Any

_PARTIAL = "\ufffd"
# The most tokens held back: a UTF-8 character is at most 4 bytes (4 byte tokens). Past that, a
# run of U+FFFD is invalid bytes, not a character still coming, a long run of spaces settles
# (should a comma follow, the one space a whole decode would remove before it stays), and so do
# tokens without text of their own.
MAX_HELD = 8


class WindowedDetokenizer:
    """What ``Sequence`` uses of mlx-lm's ``StreamingDetokenizer`` (``reset``, ``add_token``,
    ``last_segment``, ``finalize``, ``tokens``), for any tokenizer with ``decode``."""

    __slots__ = ("_clean_spaces", "_decode", "_fresh", "_prefix", "_read", "tokens")

    def __init__(self, tokenizer: Any) -> None:
        self._decode = tokenizer.decode
        probe = tokenizer.encode("a ,b", add_special_tokens=False)
        self._clean_spaces = " ," not in tokenizer.decode(probe)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self._prefix = 0  # the window starts here: context for the decoder, already settled
        self._read = 0  # tokens from here on are not settled yet
        self._fresh: list[str] = []  # text settled since ``last_segment`` was read

    def add_token(self, token: int) -> None:
        self.tokens.append(token)
        before, text = self._window()
        waits = (
            len(text) <= len(before)  # nothing new yet
            or text.endswith(_PARTIAL)
            or (self._clean_spaces and text.endswith(" "))
        )
        if not waits or len(self.tokens) - self._read >= MAX_HELD:
            self._settle(text[len(before) :])

    def finalize(self) -> None:
        if self._read < len(self.tokens):
            before, text = self._window()
            self._settle(text[len(before) :])

    def _window(self) -> tuple[str, str]:
        """The text of the settled context tokens, and of the whole window."""
        window = self.tokens[self._prefix :]
        settled = self._read - self._prefix
        return (self._decode(window[:settled]) if settled else ""), self._decode(window)

    def _settle(self, piece: str) -> None:
        self._fresh.append(piece)
        self._prefix, self._read = self._read, len(self.tokens)

    @property
    def last_segment(self) -> str:
        """The text settled since the last time this was read."""
        fresh = self._fresh
        if not fresh:
            return ""
        segment = fresh[0] if len(fresh) == 1 else "".join(fresh)
        fresh.clear()
        return segment
