"""Continuous batching: many requests share each forward pass of one model.

mlx-lm's ``BatchGenerator`` does the batched prefill and decoding (each sequence with its own
sampler, logits processors and token budget, and the model's end tokens as stop sequences); this
module adds what every request needs on top: its own streaming detokenizer and stop-string
matcher, cancellation, a prompt-prefix KV cache, and the same ``Chunk`` stream the single-request
engine gives. New requests join between steps; finished or cancelled ones leave at once.

A request that is alone runs on mlx-lm's single-sequence loop (``generate_step``), which overlaps
the next step's computation with this one's bookkeeping and so is faster than a batch of one.
When a second request arrives, the lone one moves into the batch: its tokens so far become the
prompt of its batch sequence (their KV comes from the prefix cache, so nothing is recomputed), and
its detokenizer and stop matcher carry on as they were.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlxk.runner.engine import Engine, PromptTooLong
from mlxk.runner.request import Chunk, GenerationRequest, Usage
from mlxk.runner.stops import StopMatcher

PROMPT_CACHE_ENTRIES = 16
PROMPT_CACHE_BYTES = 2 << 30  # KV kept for reuse: a repeated system prompt is not prefilled again

Sink = Callable[[Chunk | BaseException], None]  # an exception ends that request's stream


@dataclass
class _Sequence:
    sink: Sink
    cancel: threading.Event
    detokenizer: Any
    stops: StopMatcher
    prompt: list[int]
    max_tokens: int
    sampler: Any
    processors: Any
    added_at: float
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    first_token_at: float | None = None
    generated: list[int] = field(default_factory=list)

    @property
    def produced(self) -> int:
        return len(self.generated)


@dataclass
class _Solo:
    key: int
    steps: Iterator[tuple[Any, Any]]
    cache: list[Any]


class BatchRunner:
    def __init__(self, engine: Engine, max_batch: int = 32) -> None:
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.models.cache import LRUPromptCache

        self.engine = engine
        self._generator = BatchGenerator(
            engine.model,
            stop_tokens=[[token] for token in sorted(engine.end_ids)],
            completion_batch_size=max_batch,
            prefill_batch_size=min(8, max_batch),
        )
        self._active: dict[int, _Sequence] = {}
        self._solo: _Solo | None = None
        self._solo_keys = itertools.count(-1, -1)  # batch uids count up from 0; solo keys down from -1
        self._prompt_cache = LRUPromptCache(max_size=PROMPT_CACHE_ENTRIES, max_bytes=PROMPT_CACHE_BYTES)
        self._cache_key = id(engine)  # one runner per engine; the key only has to tell models apart

    @property
    def active(self) -> int:
        return len(self._active)

    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None:
        """Join (raises PromptTooLong, before joining, for a prompt too long for the context)."""
        prompt = self.engine.encode(request)
        context = self.engine.context_length
        if context and len(prompt) >= context:
            raise PromptTooLong(len(prompt), context)
        max_tokens = min(request.max_tokens, context - len(prompt)) if context else request.max_tokens
        sampler, processors = self.engine.sampling_for(request.sampling)
        detokenizer = copy.copy(self.engine.tokenizer.detokenizer)  # its own state; the token map is shared
        detokenizer.reset()
        seq = _Sequence(
            sink, cancel, detokenizer, StopMatcher(request.stops), prompt, max_tokens, sampler, processors,
            time.perf_counter(),
        )  # fmt: skip
        if not self._active:
            self._start_solo(seq)
            return
        if self._solo is not None:
            self._move_solo_to_batch()
        seq.cached_tokens = self._insert(seq, prompt, max_tokens)

    # --- joining ------------------------------------------------------------------------------

    def _cached_prefix(self, tokens: list[int]) -> tuple[Any, list[int]]:
        """The KV cache of the longest prefix an earlier request computed, and what is left to
        prefill (at least one token: the model must see something to produce the next one)."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        cache, rest = self._prompt_cache.fetch_nearest_cache(self._cache_key, tokens)
        if cache is not None and not rest:
            if not can_trim_prompt_cache(cache):
                return None, tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, list(rest)

    def _insert(self, seq: _Sequence, tokens: list[int], max_tokens: int) -> int:
        """Into the batch; returns how many of ``tokens`` came from the prefix cache."""
        cache, rest = self._cached_prefix(tokens)
        cached = len(tokens) - len(rest)
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[max_tokens],
            caches=[cache],
            all_tokens=[tokens[:cached]],
            samplers=[seq.sampler],
            logits_processors=[seq.processors or []],
        )
        self._active[uid] = seq
        return cached

    def _start_solo(self, seq: _Sequence) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.models.cache import make_prompt_cache

        cache, rest = self._cached_prefix(seq.prompt)
        seq.cached_tokens = len(seq.prompt) - len(rest)
        cache = cache if cache is not None else make_prompt_cache(self.engine.model)
        steps = generate_step(
            mx.array(rest),
            self.engine.model,
            max_tokens=seq.max_tokens,
            sampler=seq.sampler,
            logits_processors=seq.processors,
            prompt_cache=cache,
        )
        key = next(self._solo_keys)
        self._solo = _Solo(key, steps, cache)
        self._active[key] = seq

    def _keep_solo_cache(self, solo: _Solo, seq: _Sequence) -> None:
        """What the lone request computed goes to the prefix cache (keyed by exactly the tokens
        its KV holds: the single-sequence loop may have fed one token more than it yielded)."""
        offset = getattr(solo.cache[0], "offset", None) if solo.cache else None
        tokens = seq.prompt + seq.generated
        if isinstance(offset, int) and 0 < offset <= len(tokens):
            self._prompt_cache.insert_cache(self._cache_key, tokens[:offset], solo.cache)

    def _move_solo_to_batch(self) -> None:
        solo, self._solo = self._solo, None
        assert solo is not None
        seq = self._active.pop(solo.key)
        close = getattr(solo.steps, "close", None)
        if close is not None:
            close()
        self._keep_solo_cache(solo, seq)
        left = seq.max_tokens - seq.produced
        if left <= 0:
            self._finish_sequence(seq, "length", time.perf_counter())
            return
        self._insert(seq, seq.prompt + seq.generated, left)

    # --- stepping -----------------------------------------------------------------------------

    def step(self) -> None:
        """One decoding step for every sequence (prefill for new ones), chunks out to their sinks."""
        self._drop_cancelled()
        if not self._active:
            return
        if self._solo is not None:
            self._solo_step(self._solo)
            return
        for response in self._generator.next_generated():  # type: ignore[no-untyped-call]
            seq = self._active.get(response.uid)
            if seq is None:
                continue
            if response.finish_reason is not None and response.prompt_cache is not None:
                # what this request computed, for the next one that starts the same way
                self._prompt_cache.insert_cache(
                    self._cache_key, list(response.all_tokens), response.prompt_cache
                )
            reason = self._take_token(seq, int(response.token), response.finish_reason)
            if reason is not None:
                if response.finish_reason is None:  # a stop string: still in the batch, take it out
                    self._generator.remove([response.uid])  # type: ignore[no-untyped-call]
                self._finish(response.uid, reason)

    def _solo_step(self, solo: _Solo) -> None:
        seq = self._active[solo.key]
        try:
            token, _logprobs = next(solo.steps)
        except StopIteration:
            reason: str | None = "length"
        else:
            at_limit = seq.produced + 1 >= seq.max_tokens
            reason = self._take_token(seq, int(token), "length" if at_limit else None)
        if reason is not None:
            self._solo = None
            self._keep_solo_cache(solo, seq)
            self._finish(solo.key, reason)

    def _take_token(self, seq: _Sequence, token: int, ended: str | None) -> str | None:
        """One new token of ``seq``; the finish reason when the sequence is done."""
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        if token in self.engine.end_ids:
            return "stop"
        seq.generated.append(token)
        seq.detokenizer.add_token(token)
        text = seq.stops.feed(seq.detokenizer.last_segment)
        if text:
            seq.sink(Chunk(text))
        if seq.stops.stopped:
            return "stop"
        return "length" if ended is not None else None

    def _drop_cancelled(self) -> None:
        if self._solo is not None and not self._active[self._solo.key].cancel.is_set():
            return  # one sequence: one flag to look at
        gone = [key for key, seq in self._active.items() if seq.cancel.is_set()]
        if not gone:
            return
        if self._solo is not None and self._solo.key in gone:
            close = getattr(self._solo.steps, "close", None)
            if close is not None:
                close()
            self._solo = None
        batch = [key for key in gone if key >= 0]
        if batch:
            self._generator.remove(batch)  # type: ignore[no-untyped-call]
        for key in gone:
            self._finish(key, "cancelled")

    def _finish(self, key: int, reason: str) -> None:
        self._finish_sequence(self._active.pop(key), reason, time.perf_counter())

    def _finish_sequence(self, seq: _Sequence, reason: str, now: float) -> None:
        import mlx.core as mx

        if not seq.stops.stopped:
            seq.detokenizer.finalize()
            tail = seq.stops.feed(seq.detokenizer.last_segment)
            tail += "" if seq.stops.stopped else seq.stops.flush()
            if tail:
                seq.sink(Chunk(tail))
            if seq.stops.stopped:
                reason = "stop"
        first = seq.first_token_at or now
        peak = int(mx.get_peak_memory())
        usage = Usage(
            len(seq.prompt), seq.produced, first - seq.added_at, now - first, peak, seq.cached_tokens
        )
        seq.sink(Chunk("", reason, usage))

    def fail(self, exc: BaseException) -> None:
        """A step failed: every request in the batch ends with the error (the batch is unusable)."""
        active, self._active = self._active, {}
        self._solo = None
        for seq in active.values():
            seq.sink(exc)

    def close(self) -> None:
        for seq in self._active.values():
            seq.cancel.set()
        self._drop_cancelled()
        self._generator.close()  # type: ignore[no-untyped-call]
