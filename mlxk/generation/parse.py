"""The public entry points: a segmenter for a format, and a whole output parsed offline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlxk.generation.core import Segmenter
from mlxk.generation.events import ParseResult, ResultBuilder
from mlxk.generation.registry import FORMATS


def list_formats() -> list[str]:
    """The names `format=` accepts."""
    return list(FORMATS)


def make_segmenter(
    format: str,
    *,
    tools: Iterable[Mapping[str, Any]] | None = None,
    prompt_tail: str | None = None,
    seed: int | None = None,
    calls: bool = True,
) -> Segmenter:
    """A segmenter for one output: feed() it each text delta, then finish() it once.

    `seed` makes the generated call ids repeatable (the same output gets the same ids). Without
    `calls` (a model that was offered no tools) only reasoning is split off: call markers are text.
    """
    info = FORMATS.get(format)
    if info is None:
        raise ValueError(f"unknown output format {format!r}; known: {', '.join(FORMATS)}")
    return info.segmenter(tools, prompt_tail=prompt_tail, seed=seed, calls=calls)


def parse_output(
    output: str | Iterable[str],
    *,
    format: str,
    tools: Iterable[Mapping[str, Any]] | None = None,
    prompt_tail: str | None = None,
) -> ParseResult:
    """Segments a model's raw output as the server does: content, reasoning and tool calls.

    `output` is the whole text or an iterable of text deltas (fed one by one, as when streaming);
    `tools` the tools offered, in OpenAI's shape; `prompt_tail` the end of the rendered prompt, which
    tells whether the output starts inside a reasoning block or a channel. Nothing is raised for a bad
    output: malformed or truncated calls come back as content.
    """
    segmenter = make_segmenter(format, tools=tools, prompt_tail=prompt_tail)
    builder = ResultBuilder()
    for delta in [output] if isinstance(output, str) else output:
        builder.add(segmenter.feed(delta))
    builder.add(segmenter.finish())
    return builder.result()
