"""One model's grammar machinery: its tokenizer in llguidance's terms, and compiled grammars.

Compiling a grammar against a vocabulary takes from under a millisecond (a small schema) to tens
of milliseconds (large ones, tool sets); requests repeat the same schema, so each grammar text is
compiled once per model and kept (a bounded LRU). A request gets a copy of the pristine matcher,
which shares the lexer states the first request built, so later requests start fast too.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any

from mlxk.errors import InvalidField
from mlxk.generation.tokens import Vocabulary, backend_tokenizer

GRAMMAR_CACHE_ENTRIES = 64


class _Encoder:
    """What llguidance's ``TokenizerWrapper`` reads: the bytes of every token, the special ids,
    an end id and ``__call__(text) -> ids``. Used where llguidance cannot read the tokenizer.json
    itself (decoders it does not know, such as WordLevel + Fuse)."""

    def __init__(self, backend: Any, vocab: Vocabulary, end_id: int) -> None:
        self._backend = backend
        self.tokens = list(vocab.pieces)
        self.special_token_ids = sorted(vocab.special)
        self.eos_token_id = end_id
        self.bos_token_id = None

    def __call__(self, text: str) -> list[int]:
        ids: list[int] = self._backend.encode(text, add_special_tokens=False).ids
        return ids


_POSITION = re.compile(r"^at \d+\(\d+\): (failed to compile JSON schema: )?")
_ECHO = re.compile(r"^\s*\d+ \| ")  # the grammar's own line, quoted under the message


def _one_line(message: str) -> str:
    """llguidance's message without where in our grammar text it happened (the client never saw
    that text), drawn on one line (some are several: a regex with a caret under the problem)."""
    lines = [line.strip() for line in message.splitlines() if not _ECHO.match(line)]
    text = " ".join(line for line in lines if line and set(line) != {"^"})
    return _POSITION.sub("", text)


class Grammars:
    """Per model: ``matcher(grammar)`` gives a fresh matcher for a grammar text (llguidance's
    JSON or Lark form), compiled once and cached; a grammar it cannot compile raises
    ``InvalidField`` naming the problem."""

    def __init__(
        self, tokenizer: Any, vocab: Vocabulary, end_ids: frozenset[int], model_vocab: int | None
    ) -> None:
        import llguidance

        backend = backend_tokenizer(tokenizer)
        ends = sorted(end_ids)
        width = max(model_vocab or 0, len(vocab.pieces))
        try:
            self.tokenizer = llguidance.LLTokenizer(backend.to_str(), n_vocab=width, eos_token=ends)
        except ValueError:  # a decoder llguidance does not read: give it the bytes of each token
            wrapper = llguidance.TokenizerWrapper(_Encoder(backend, vocab, ends[0]))
            self.tokenizer = llguidance.LLTokenizer(wrapper, eos_token=ends)
        self.vocab = vocab
        self.words = (self.tokenizer.vocab_size + 31) // 32  # int32 words of one mask row
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the engine thread compiles; a CLI thread may too
        self.last_compile_seconds = 0.0

    def matcher(self, grammar: str, param: str) -> Any:
        """A matcher at the start of ``grammar``; ``param``: the request field to blame."""
        import llguidance

        with self._lock:
            pristine = self._compiled.get(grammar)
            if pristine is not None:
                self._compiled.move_to_end(grammar)
                return pristine.deep_copy()
            started = time.perf_counter()
            pristine = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
            self.last_compile_seconds = time.perf_counter() - started
            if pristine.is_error():
                raise InvalidField(
                    param, f"{_what(param)} cannot be enforced: {_one_line(pristine.get_error())}"
                )
            self._compiled[grammar] = pristine
            if len(self._compiled) > GRAMMAR_CACHE_ENTRIES:
                self._compiled.popitem(last=False)
            return pristine.deep_copy()


def _what(param: str) -> str:
    return "the JSON schema" if param == "response_format" else "the tool's parameters"
