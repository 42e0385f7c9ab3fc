"""One sequence: its sampled tokens in, chunks of its answer out. Both loops drive it.

Per token: the end-of-turn check, the streaming detokenizer, the segmenter (content | reasoning |
tool call), stop strings on the content, the token budget. At the end: what was held back, the
finish reason and usage. The single-sequence loop (``engine``) and the batch loop (``batch``) only
feed tokens and read what comes back, so a feature that touches tokens or text lives here, once.

The segmenter slot: an object with ``feed(text) -> events`` and ``finish() -> events``; an event
has a ``channel`` and ``text``: the next piece of ``content`` or ``reasoning``; on ``tool_call``,
the first event of call ``index`` names it (``id``, ``name``) and the next ones carry pieces of
its arguments; ``failed_call`` voids call ``index`` (malformed or truncated) and its ``text`` is
content. ``None`` means the whole answer is content; that case takes a path with no per-token
work beyond the detokenizer and the stop matcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mlxk.generation.chunks import Chunk, ToolCallDelta, Usage
from mlxk.generation.grammar.constraint import Constraint, ConstraintProcessor
from mlxk.generation.logprobs import TokenLogprob, token_logprob
from mlxk.generation.prompt import Prompt
from mlxk.generation.stops import StopMatcher
from mlxk.generation.tokens import Vocabulary

CONTENT = "content"
REASONING = "reasoning"
TOOL_CALL = "tool_call"
FAILED_CALL = "failed_call"
log = logging.getLogger("mlxk.generation")


class SegmentEvent(Protocol):
    """What a segmenter emits (read-only fields; any frozen dataclass of this shape will do)."""

    @property
    def channel(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def index(self) -> int | None: ...
    @property
    def id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Segment:
    """A segmenter event of our own making (see ``SegmentEvent``)."""

    channel: str
    text: str = ""
    index: int | None = None
    id: str | None = None
    name: str | None = None


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

    __slots__ = (
        "cached_tokens",
        "calls",
        "cancel",
        "constraint",
        "detokenizer",
        "end_ids",
        "first_token_at",
        "generated",
        "logprobs",
        "max_tokens",
        "processors",
        "prompt",
        "prompt_tail",
        "reason",
        "reasoning_tokens",
        "sampler",
        "segmenter",
        "single_call",
        "solo_processors",
        "solo_sampler",
        "started",
        "stops",
        "unsettled",
    )

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
        single_call: bool = False,
    ) -> None:
        self.prompt = prompt.tokens
        self.prompt_tail = prompt.tail
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.processors = processors  # logits processors: penalties
        self.constraint: Constraint | None = None  # the grammar the answer is held to, if any
        self.solo_processors = processors  # the single-sequence loop's: the constraint too
        self.solo_sampler = sampler  # the single-sequence loop's: tells the constraint its token
        # (how many alternatives, the vocabulary, entries not yet in a chunk) when asked for
        self.logprobs: tuple[int, Vocabulary, list[TokenLogprob]] | None = None
        self.detokenizer = detokenizer
        self.end_ids = end_ids
        self.stops = StopMatcher(stops)
        self.segmenter = segmenter
        self.cancel = cancel if cancel is not None else threading.Event()
        self.generated: list[int] = []
        self.reason: str | None = None  # set when the sequence must end
        self.cached_tokens = 0  # prompt tokens whose KV came from a prefix cache
        # tokens whose text went to the reasoning channel; a token whose text is held back (a
        # marker, part of one) counts with the chunk that its text, or the text after it, ends up in
        self.reasoning_tokens = 0
        self.unsettled = 0
        self.calls: set[int] = set()  # the tool calls of the answer (by index), but for failed ones
        # parallel_tool_calls false: the first call is the answer; a second one ends the sequence
        self.single_call = single_call
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    def constrain(self, constraint: Constraint, processor: ConstraintProcessor) -> None:
        """Holds the answer to ``constraint``: the batch applies it to the whole batch at once,
        the single-sequence loop through ``processor`` (after the penalties), which its sampler
        tells each token it samples."""
        self.constraint = constraint
        self.solo_processors = [*(self.processors or ()), processor]
        self.solo_sampler = processor.watching(self.sampler)

    def report_logprobs(self, top: int, vocab: Vocabulary) -> None:
        """Each chunk carries the log-probabilities of its tokens, with ``top`` alternatives."""
        self.logprobs = (top, vocab, [])

    def _with_logprobs(self, chunk: Chunk | None) -> Chunk | None:
        assert self.logprobs is not None
        pending = self.logprobs[2]
        if chunk is not None and pending:
            chunk.logprobs = tuple(pending)
            pending.clear()
        return chunk

    @property
    def produced(self) -> int:
        return len(self.generated)

    def add(self, token: int, logprobs: Any = None) -> Chunk | None:
        """One sampled token (and the log-probabilities it was drawn from); the chunk it completes,
        if any. Sets ``reason`` when the sequence is done: an end-of-turn token (which is not part
        of the answer), a stop string, the budget."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.constraint is not None and self.constraint.broken is not None:
            self._refused(token)
            return None
        if token in self.end_ids:
            self.reason = "stop"
            return None
        if self.logprobs is not None and logprobs is not None:
            top, vocab, pending = self.logprobs
            pending.append(token_logprob(logprobs, token, top, vocab))
            return self._with_logprobs(self._add(token))
        return self._add(token)

    def _refused(self, token: int) -> None:
        """The grammar refused the token the sequence sampled (its mask allows only tokens the
        grammar accepts, so this is a bug, ours or llguidance's): the answer ends before that
        token with ``length``, the one finish under which a held answer may not parse, and the
        cause goes to the log. Never a ``stop``: that promises an answer that validates."""
        assert self.constraint is not None
        log.warning(
            "the grammar refused token %d (%s); the answer ends before it (finish_reason length)",
            token,
            self.constraint.broken,
        )
        self.reason = "length"

    def _add(self, token: int) -> Chunk | None:
        generated = self.generated
        generated.append(token)
        detokenizer = self.detokenizer
        detokenizer.add_token(token)
        if self.segmenter is not None:
            chunk = self._segmented(self.segmenter.feed(detokenizer.last_segment))
            self.unsettled += 1
            if chunk is not None:
                self._settle(chunk)
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
                self._settle(tail)
            else:
                text = self.stops.feed(text)
                tail = Chunk(text + ("" if self.stops.stopped else self.stops.flush()))
            if self.stops.stopped:
                reason = "stop"
        if reason == "stop" and self.calls:
            reason = "tool_calls"
        first = self.first_token_at or now
        usage = Usage(
            len(self.prompt),
            len(self.generated),
            first - self.started,
            now - first,
            int(mx.get_peak_memory()),
            self.cached_tokens,
            self.reasoning_tokens,
        )
        stop = self.stops.matched if reason == "stop" else None
        last = Chunk(tail.content, tail.reasoning, tail.tool_calls, reason, usage, stop_sequence=stop)
        return self._with_logprobs(last) or last if self.logprobs is not None else last

    def _settle(self, chunk: Chunk) -> None:
        """The tokens since the last chunk made this one: reasoning tokens if it is all reasoning."""
        if chunk.reasoning and not chunk.content and not chunk.tool_calls:
            self.reasoning_tokens += self.unsettled
        self.unsettled = 0

    def _segmented(self, events: Iterable[SegmentEvent], *, last: bool = False) -> Chunk | None:
        """The segmenter's events as one chunk; stop strings apply to the content channel, and
        nothing after a stop string is kept."""
        stops = self.stops
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCallDelta] = []
        for event in events:
            channel = event.channel
            if self.single_call and event.index is not None and event.index > 0:
                # a second call: the first is complete, and is the answer (nothing after it is)
                self.reason = self.reason or "stop"
                break
            if channel in (CONTENT, FAILED_CALL):
                if channel == FAILED_CALL and event.index is not None:
                    self.calls.discard(event.index)
                    calls.append(ToolCallDelta(event.index, failed=True))
                content.append(stops.feed(event.text))
                if stops.stopped:
                    break
            elif channel == REASONING:
                reasoning.append(event.text)
            elif channel == TOOL_CALL and event.index is not None:
                self.calls.add(event.index)
                calls.append(ToolCallDelta(event.index, event.id, event.name, event.text))
        if stops.stopped:
            self.reason = "stop"
        elif last:
            content.append(stops.flush())
        text, thinking = "".join(content), "".join(reasoning)
        if not (text or thinking or calls):
            return None
        return Chunk(text, thinking, tuple(calls))
