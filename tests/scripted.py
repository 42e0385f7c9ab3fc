"""Making a tiny real model write a scripted answer: a logits processor that, at each step, leaves
only the script's next token possible. Everything else is real: the chat template renders the
prompt, the model runs its forward passes on it (and on each scripted token it is fed back), the
sampler picks, the detokenizer and the segmenter turn the tokens into chunks, the server sends them.

``install(scripts)`` patches ``Engine.sequence`` in this process: a chat request whose last message
contains a key of ``scripts`` gets that script (text, the family's special tokens written out, its
end-of-turn token included); other requests generate freely. ``python -m tests.scripted SCRIPTS.json
serve ...`` runs ``mlxk`` (the real CLI, a real HTTP server) with the scripts installed.

A script is followed step by step (a count of the processor's calls), so one request must not move
from the single-sequence loop into a batch while it runs (that loop may compute one step ahead):
tests send scripted requests one at a time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


class ScriptedLogits:
    """A logits processor: step n allows only ``tokens[n]`` (the last one repeats if the model is
    asked for more)."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.step = 0

    def __call__(self, context: Any, logits: Any) -> Any:
        import mlx.core as mx

        token = self.tokens[min(self.step, len(self.tokens) - 1)]
        self.step += 1
        allowed = mx.arange(logits.shape[-1]) == token
        return mx.where(allowed, logits, mx.array(-1e9, dtype=logits.dtype))


def script_for(scripts: Mapping[str, str], request: Any) -> str | None:
    if not request.messages:
        return None
    last = request.messages[-1].text
    return next((text for key, text in scripts.items() if key in last), None)


def install(scripts: Mapping[str, str]) -> None:
    from mlxk.generation.engine import Engine

    original = Engine.sequence
    if getattr(original, "scripted", False):
        original = original.original  # type: ignore[attr-defined]

    def sequence(self: Engine, request: Any, cancel: Any = None) -> Any:
        seq = original(self, request, cancel)
        text = script_for(scripts, request)
        if text is not None:
            tokens = [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]
            seq.processors = [*(seq.processors or []), ScriptedLogits(tokens)]
        return seq

    sequence.scripted = True  # type: ignore[attr-defined]
    sequence.original = original  # type: ignore[attr-defined]
    Engine.sequence = sequence  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    from mlxk.cli import main as mlxk_main

    with open(argv[0], encoding="utf-8") as file:
        install(json.load(file))
    sys.exit(mlxk_main(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
