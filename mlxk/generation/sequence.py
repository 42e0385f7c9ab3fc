"""One sequence: its sampled tokens in, chunks of its answer out. Both loops drive it.

Per token: the end-of-turn check, the streaming detokenizer, the segmenter (content | reasoning |
tool call), stop strings on the content, the token budget. At the end: what was held back, the
finish reason and usage. The single-sequence loop (``engine``) and the batch loop (``batch``) only
feed tokens and read what comes back, so a feature that touches tokens or text lives here, once.

The segmenter slot: an object with ``feed(text) -> events`` and ``finish() -> events``, where an
event is a ``Segment`` (text on the ``content`` or ``reasoning`` channel) or a ``ToolCallDelta``.
``None`` means the whole answer is content; that case takes a path with no per-token work beyond
the detokenizer and the stop matcher.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mlxk.generation.chunks import Chunk, ToolCallDelta, Usage
from mlxk.generation.prompt import Prompt
from mlxk.generation.stops import StopMatcher

CONTENT = "content"
REASONING = "reasoning"


@dataclass(frozen=True, slots=True)
class Segment:
    """Text of the answer on one channel: ``content`` or ``reasoning``."""

    channel: str
    text: str


SegmentEvent = Segment | ToolCallDelta


class Segmenter(Protocol):
    """Splits a model's output into channels as it streams (one per sequence: it keeps state)."""

    def feed(self, text: str) -> Iterable[SegmentEvent]:
        """The events that ``text`` (the next piece of output) completes; text that may still
        turn out to be part of a marker is held back until a later piece settles it."""
        ...

    def finish(self) -> Iterable[SegmentEvent]:
        """The end of the output: everything still held back."""
        ...


class PlainText:
    """The segmenter of a model whose output is all answer (its events, for callers that want
    one; the sequence itself takes a faster path when it has no segmenter)."""

    def feed(self, text: str) -> Iterable[SegmentEvent]:
        return (Segment(CONTENT, text),) if text else ()

    def finish(self) -> Iterable[SegmentEvent]:
        return ()


class Sequence:
    """The state of one generation. ``add`` each sampled token; when ``reason`` is set, stop
    feeding and call ``finish`` for the last chunk."""

    def __init__(
        self,
        prompt: Prompt,
        max_tokens: int,
        sampler: Any,
        processors: list[Any] | None,
        detokenizer: Any,
        end_ids: frozenset[int],
        stops: tuple[str, ...] = (),
        segmenter: Segmenter | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.prompt = prompt.tokens
        self.prompt_tail = prompt.tail
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.processors = processors  # logits processors: penalties (and, later, a grammar mask)
        self.detokenizer = detokenizer
        self.end_ids = end_ids
        self.stops = StopMatcher(stops)
        self.segmenter = segmenter
        self.cancel = cancel if cancel is not None else threading.Event()
        self.generated: list[int] = []
        self.reason: str | None = None  # set when the sequence must end
        self.cached_tokens = 0  # prompt tokens whose KV came from a prefix cache
        self.tool_calls = 0  # how many tool calls the answer has started
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    @property
    def produced(self) -> int:
        return len(self.generated)

    def add(self, token: int) -> Chunk | None:
        """One sampled token; the chunk it completes, if any. Sets ``reason`` when the sequence is
        done: an end-of-turn token (which is not part of the answer), a stop string, the budget."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token in self.end_ids:
            self.reason = "stop"
            return None
        generated = self.generated
        generated.append(token)
        detokenizer = self.detokenizer
        detokenizer.add_token(token)
        if self.segmenter is not None:
            chunk = self._segmented(self.segmenter.feed(detokenizer.last_segment))
        else:
            stops = self.stops
            text = stops.feed(detokenizer.last_segment)
            chunk = Chunk(text) if text else None
            if stops.stopped:
                self.reason = "stop"
                return chunk
        if self.reason is None and len(generated) >= self.max_tokens:
            self.reason = "length"
        return chunk

    def finish(self, reason: str | None = None) -> Chunk:
        """The last chunk: the text held back (by the detokenizer, the segmenter, the stop
        matcher), the finish reason and usage. ``reason`` is the driver's (``cancelled``, or
        ``length`` when the model's loop ran out) where the sequence set none itself."""
        import mlx.core as mx

        now = time.perf_counter()
        reason = self.reason or reason or "length"
        tail = Chunk()
        if not self.stops.stopped:
            self.detokenizer.finalize()
            text = self.detokenizer.last_segment
            if self.segmenter is not None:
                events = [*self.segmenter.feed(text), *self.segmenter.finish()]
                tail = self._segmented(events, last=True) or tail
            else:
                text = self.stops.feed(text)
                tail = Chunk(text + ("" if self.stops.stopped else self.stops.flush()))
            if self.stops.stopped:
                reason = "stop"
        if reason == "stop" and self.tool_calls:
            reason = "tool_calls"
        first = self.first_token_at or now
        usage = Usage(
            len(self.prompt),
            len(self.generated),
            first - self.started,
            now - first,
            int(mx.get_peak_memory()),
            self.cached_tokens,
        )
        return Chunk(tail.content, tail.reasoning, tail.tool_calls, reason, usage)

    def _segmented(self, events: Iterable[SegmentEvent], *, last: bool = False) -> Chunk | None:
        """The segmenter's events as one chunk; stop strings apply to the content channel, and
        nothing after a stop string is kept."""
        stops = self.stops
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCallDelta] = []
        for event in events:
            if isinstance(event, ToolCallDelta):
                calls.append(event)
                self.tool_calls = max(self.tool_calls, event.index + 1)
            elif event.channel == CONTENT:
                content.append(stops.feed(event.text))
                if stops.stopped:
                    break
            else:
                reasoning.append(event.text)
        if stops.stopped:
            self.reason = "stop"
        elif last:
            content.append(stops.flush())
        text, thinking = "".join(content), "".join(reasoning)
        if not (text or thinking or calls):
            return None
        return Chunk(text, thinking, tuple(calls))
