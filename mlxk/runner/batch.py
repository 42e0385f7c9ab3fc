"""Continuous batching: many requests share each forward pass of one model.

mlx-lm's ``BatchGenerator`` does the batched prefill and decoding (each sequence with its own
sampler, logits processors and token budget, and the model's end tokens as stop sequences); this
module adds what every request needs on top: its own streaming detokenizer and stop-string
matcher, cancellation, and the same ``Chunk`` stream the single-request engine gives. New
requests join between steps; finished or cancelled ones leave at once.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxk.errors import ValidationError
from mlxk.runner.engine import Engine
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
    prompt_tokens: int
    added_at: float
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    first_token_at: float | None = None
    produced: int = 0
    done: bool = field(default=False)


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
        self._prompt_cache = LRUPromptCache(max_size=PROMPT_CACHE_ENTRIES, max_bytes=PROMPT_CACHE_BYTES)
        self._cache_key = id(engine)  # one runner per engine; the key only has to tell models apart

    @property
    def active(self) -> int:
        return len(self._active)

    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None:
        """Join the batch (raises ValidationError, before joining, for a prompt too long)."""
        prompt = self.engine.encode(request)
        context = self.engine.context_length
        if context and len(prompt) >= context:
            raise ValidationError(f"the prompt is {len(prompt)} tokens; the model's context holds {context}")
        max_tokens = min(request.max_tokens, context - len(prompt)) if context else request.max_tokens
        sampler, processors = self.engine.sampling_for(request.sampling)
        cache, rest = self._cached_prefix(prompt)
        cached = len(prompt) - len(rest)
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[max_tokens],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            samplers=[sampler],
            logits_processors=[processors or []],
        )
        detokenizer = copy.copy(self.engine.tokenizer.detokenizer)  # its own state; the token map is shared
        detokenizer.reset()
        self._active[uid] = _Sequence(
            sink, cancel, detokenizer, StopMatcher(request.stops), len(prompt), time.perf_counter(), cached
        )

    def _cached_prefix(self, prompt: list[int]) -> tuple[Any, list[int]]:
        """The KV cache of the longest prefix an earlier request computed, and what is left to
        prefill (at least one token: the model must see something to produce the next one)."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        cache, rest = self._prompt_cache.fetch_nearest_cache(self._cache_key, prompt)
        if cache is not None and not rest:
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, list(rest)

    def step(self) -> None:
        """One decoding step for every sequence (prefill for new ones), chunks out to their sinks."""
        self._drop_cancelled()
        if not self._active:
            return
        for response in self._generator.next_generated():  # type: ignore[no-untyped-call]
            seq = self._active.get(response.uid)
            if seq is None:
                continue
            now = time.perf_counter()
            if seq.first_token_at is None:
                seq.first_token_at = now
            token = int(response.token)
            if response.finish_reason is not None and response.prompt_cache is not None:
                # what this request computed, for the next one that starts the same way
                self._prompt_cache.insert_cache(
                    self._cache_key, list(response.all_tokens), response.prompt_cache
                )
            if response.finish_reason == "stop" and token in self.engine.end_ids:
                self._finish(response.uid, "stop", now)
                continue
            seq.produced += 1
            seq.detokenizer.add_token(token)
            text = seq.stops.feed(seq.detokenizer.last_segment)
            if text:
                seq.sink(Chunk(text))
            if seq.stops.stopped:
                if response.finish_reason is None:  # still in the batch: take it out
                    self._generator.remove([response.uid])  # type: ignore[no-untyped-call]
                self._finish(response.uid, "stop", now)
            elif response.finish_reason is not None:
                self._finish(response.uid, "length", now)

    def _drop_cancelled(self) -> None:
        gone = [uid for uid, seq in self._active.items() if seq.cancel.is_set()]
        if gone:
            self._generator.remove(gone)  # type: ignore[no-untyped-call]
            now = time.perf_counter()
            for uid in gone:
                self._finish(uid, "cancelled", now)

    def _finish(self, uid: int, reason: str, now: float) -> None:
        import mlx.core as mx

        seq = self._active.pop(uid)
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
            seq.prompt_tokens, seq.produced, first - seq.added_at, now - first, peak, seq.cached_tokens
        )
        seq.sink(Chunk("", reason, usage))

    def fail(self, exc: BaseException) -> None:
        """A step failed: every request in the batch ends with the error (the batch is unusable)."""
        active, self._active = self._active, {}
        for seq in active.values():
            seq.sink(exc)

    def close(self) -> None:
        for uid in list(self._active):
            self._active[uid].cancel.set()
        self._drop_cancelled()
        self._generator.close()  # type: ignore[no-untyped-call]
