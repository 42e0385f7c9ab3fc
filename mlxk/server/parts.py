"""Chunks -> the parts of an answer, in order, for protocols that send an answer as a list of parts
(Responses' output items, Messages' content blocks): thinking, text, each tool call.

A part opens with its first piece, grows with each later one, and closes when another part begins
or the answer ends. The streamed events and the whole answer come from the same ``Parts``, so a
stream, put together, is the answer sent whole: streamed, each chunk is fed as it comes; whole,
the merged answer is fed once. A call that turned out malformed (its pieces voided; its text comes
as content) is not in a whole answer (merging chunks drops it); a stream that has sent its start
closes it as it is (see docs/tools.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlxk.generation.chunks import Chunk

REASONING = "reasoning"
TEXT = "text"
CALL = "call"


@dataclass(slots=True)
class Part:
    kind: str  # reasoning | text | call
    position: int  # its place in the answer, from 0
    call_index: int | None = None  # calls: the pipeline's index of the call
    call_id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The thinking, the text, or a call's arguments (JSON text)."""
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Opened:
    part: Part


@dataclass(frozen=True, slots=True)
class Grew:
    part: Part
    piece: str


@dataclass(frozen=True, slots=True)
class Closed:
    part: Part


Event = Opened | Grew | Closed


class Parts:
    def __init__(self) -> None:
        self.parts: list[Part] = []
        self._open: Part | None = None
        self._calls: dict[int, Part] = {}

    def feed(self, chunk: Chunk) -> list[Event]:
        events: list[Event] = []
        if chunk.reasoning:
            self._grow(REASONING, chunk.reasoning, events)
        if chunk.content:
            self._grow(TEXT, chunk.content, events)
        for delta in chunk.tool_calls:
            if delta.failed:
                self._void(delta.index, events)
            elif delta.id is not None or delta.name is not None or delta.index not in self._calls:
                part = self._start(CALL, events)
                part.call_index, part.call_id, part.name = delta.index, delta.id or "", delta.name or ""
                self._calls[delta.index] = part
                if delta.arguments:
                    part.pieces.append(delta.arguments)
                    events.append(Grew(part, delta.arguments))
            elif delta.arguments:
                part = self._calls[delta.index]
                part.pieces.append(delta.arguments)
                events.append(Grew(part, delta.arguments))
        return events

    def close(self) -> list[Event]:
        """The end of the answer: the open part closes."""
        events: list[Event] = []
        if self._open is not None:
            events.append(Closed(self._open))
            self._open = None
        return events

    def _grow(self, kind: str, piece: str, events: list[Event]) -> None:
        part = self._open if self._open is not None and self._open.kind == kind else self._start(kind, events)
        part.pieces.append(piece)
        events.append(Grew(part, piece))

    def _start(self, kind: str, events: list[Event]) -> Part:
        events.extend(self.close())
        part = Part(kind, len(self.parts))
        self.parts.append(part)
        self._open = part
        events.append(Opened(part))
        return part

    def _void(self, index: int, events: list[Event]) -> None:
        part = self._calls.pop(index, None)
        if part is None:
            return
        if part is self._open:  # its start was sent: it closes as it is
            self._open = None
            events.append(Closed(part))


def whole(answer: Chunk) -> list[Part]:
    """The parts of a whole answer (its chunks merged)."""
    parts = Parts()
    parts.feed(answer)
    parts.close()
    return parts.parts
