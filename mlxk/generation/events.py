"""What a segmenter emits, and the result those events add up to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum


class Channel(str, Enum):
    """Where a piece of model output goes."""

    CONTENT = "content"
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    # A call whose start (and perhaps some arguments) was already emitted turned out malformed or
    # truncated: the call is void and `text` (its raw text, markers included) is content instead.
    FAILED_CALL = "failed_call"


@dataclass(slots=True)
class Delta:
    """One event of a segmenter (not frozen: one is made per token, and a frozen one costs more).

    CONTENT / REASONING: `text` is the next piece of that channel.
    TOOL_CALL: a call's first delta carries `index`, `id` and `name` (and empty `text`); the next ones
    carry the same `index` and the next piece of the arguments in `text`. A call's argument pieces joined
    are exactly its final arguments (a JSON object text).
    FAILED_CALL: call `index` is void; `text` is content.
    """

    channel: Channel
    text: str = ""
    index: int | None = None
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A parsed call: `arguments` is the JSON object text a client receives."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ParseResult:
    """A whole output, segmented. Empty channels are None, as in an OpenAI message."""

    content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


class ResultBuilder:
    """Adds up deltas into a ParseResult: what a non-streaming response holds."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, argument pieces...]

    def add(self, deltas: Iterable[Delta]) -> None:
        for delta in deltas:
            if delta.channel is Channel.CONTENT:
                self._content.append(delta.text)
            elif delta.channel is Channel.REASONING:
                self._reasoning.append(delta.text)
            elif delta.channel is Channel.TOOL_CALL:
                assert delta.index is not None
                if delta.name is not None:
                    self._calls[delta.index] = [delta.id or "", delta.name]
                elif delta.text:
                    self._calls[delta.index].append(delta.text)
            else:
                assert delta.index is not None
                self._calls.pop(delta.index, None)
                self._content.append(delta.text)

    def result(self) -> ParseResult:
        calls = [
            ToolCall(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
            for _, parts in sorted(self._calls.items())
        ]
        return ParseResult(
            content="".join(self._content) or None,
            reasoning="".join(self._reasoning) or None,
            tool_calls=calls,
        )
