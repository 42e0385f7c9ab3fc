"""Continuous batching: many requests share each forward pass of one model.

mlx-lm's ``BatchGenerator`` does the batched prefill and decoding (each sequence with its own
sampler, logits processors and token budget, and the model's end tokens as stop sequences); each
request is a ``Sequence`` (``sequence``), the same object the single-sequence engine drives, which
turns its tokens into chunks. This module adds cancellation, a prompt-prefix KV cache, and the
hand-off of chunks to each request's sink. New requests join between steps; finished or cancelled
ones leave at once.

A request that is alone runs on mlx-lm's single-sequence loop (``generate_step``), which overlaps
the next step's computation with this one's bookkeeping and so is faster than a batch of one.
When a second request arrives, the lone one moves into the batch: its tokens so far become the
prompt of its batch sequence (their KV comes from the prefix cache, so nothing is recomputed), and
its sequence (detokenizer, segmenter, stop matcher) carries on as it was.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mlxk.generation.chunks import Chunk
from mlxk.generation.engine import Engine
from mlxk.generation.grammar.batching import install
from mlxk.generation.grammar.constraint import Constraint, MaskBuffer
from mlxk.generation.request import GenerationRequest
from mlxk.generation.sequence import Sequence

PROMPT_CACHE_ENTRIES = 16
DEFAULT_MAX_BATCH = 16  # sequences decoded together by the server (every rank of a group alike)
PROMPT_CACHE_BYTES = 2 << 30  # KV kept for reuse: a repeated system prompt is not prefilled again

Sink = Callable[[Chunk | BaseException], None]  # an exception ends that request's stream


@dataclass(slots=True)
class _Member:
    seq: Sequence
    sink: Sink


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
        self._active: dict[int, _Member] = {}
        self._constrained = 0  # members with a grammar (none: the batch step does no grammar work)
        self._masks: MaskBuffer | None = None
        install(self._generator, self._constraint_of, self._mask_buffer, lambda: self._constrained > 0)
        self._solo: _Solo | None = None
        self._solo_keys = itertools.count(-1, -1)  # batch uids count up from 0; solo keys down from -1
        self._prompt_cache = LRUPromptCache(max_size=PROMPT_CACHE_ENTRIES, max_bytes=PROMPT_CACHE_BYTES)
        self._cache_key = id(engine)  # one runner per engine; the key only has to tell models apart

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def idle_step_s(self) -> float | None:
        """None: with nothing to generate, nothing to step (a distributed runner's idle group
        steps on a heartbeat)."""
        return None

    def _constraint_of(self, key: int) -> Constraint | None:
        member = self._active.get(key)
        return member.seq.constraint if member is not None else None

    def _mask_buffer(self) -> MaskBuffer:
        if self._masks is None:
            self._masks = self.engine.mask_buffer()
        return self._masks

    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None:
        """Join (raises ValidationError, before joining, for a prompt too long for the context)."""
        member = _Member(self.engine.sequence(request, cancel), sink)
        if member.seq.constraint is not None:
            self._constrained += 1
        if not self._active:
            self._start_solo(member)
            return
        if self._solo is not None:
            self._move_solo_to_batch()
        member.seq.cached_tokens = self._insert(member, member.seq.prompt, member.seq.max_tokens)

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

    def _insert(self, member: _Member, tokens: list[int], max_tokens: int) -> int:
        """Into the batch; returns how many of ``tokens`` came from the prefix cache."""
        cache, rest = self._cached_prefix(tokens)
        cached = len(tokens) - len(rest)
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[max_tokens],
            caches=[cache],
            all_tokens=[tokens[:cached]],
            samplers=[member.seq.sampler],
            logits_processors=[member.seq.processors or []],
        )
        self._active[uid] = member
        return cached

    def _start_solo(self, member: _Member) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.models.cache import make_prompt_cache

        seq = member.seq
        cache, rest = self._cached_prefix(seq.prompt)
        seq.cached_tokens = len(seq.prompt) - len(rest)
        cache = cache if cache is not None else make_prompt_cache(self.engine.model)
        steps = generate_step(
            mx.array(rest),
            self.engine.model,
            max_tokens=seq.max_tokens,
            sampler=seq.solo_sampler,
            logits_processors=seq.solo_processors,
            prompt_cache=cache,
        )
        key = next(self._solo_keys)
        self._solo = _Solo(key, steps, cache)
        self._active[key] = member

    def _keep_solo_cache(self, solo: _Solo, seq: Sequence) -> None:
        """What the lone request computed goes to the prefix cache (keyed by exactly the tokens
        its KV holds: the single-sequence loop may have fed one token more than it yielded)."""
        offset = getattr(solo.cache[0], "offset", None) if solo.cache else None
        tokens = seq.prompt + seq.generated
        if isinstance(offset, int) and 0 < offset <= len(tokens):
            self._prompt_cache.insert_cache(self._cache_key, tokens[:offset], solo.cache)

    def _move_solo_to_batch(self) -> None:
        solo, self._solo = self._solo, None
        assert solo is not None
        member = self._active.pop(solo.key)
        close = getattr(solo.steps, "close", None)
        if close is not None:
            close()
        seq = member.seq
        self._keep_solo_cache(solo, seq)
        left = seq.max_tokens - seq.produced
        if left <= 0:
            self._active[solo.key] = member
            self._finish(solo.key, "length")
            return
        if seq.constraint is not None:
            seq.constraint.skip_next = True  # the solo loop's constraint consumed the last token
        self._insert(member, seq.prompt + seq.generated, left)

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
            member = self._active.get(response.uid)
            if member is None:
                continue
            ended = response.finish_reason is not None
            if ended and response.prompt_cache is not None:
                # what this request computed, for the next one that starts the same way
                self._prompt_cache.insert_cache(
                    self._cache_key, list(response.all_tokens), response.prompt_cache
                )
            seq = member.seq
            chunk = seq.add(int(response.token), response.logprobs)
            if chunk is not None:
                member.sink(chunk)
            if seq.reason is not None or ended:
                if not ended:  # a stop string or the budget: still in the batch, take it out
                    self._generator.remove([response.uid])  # type: ignore[no-untyped-call]
                self._finish(response.uid, "length")

    def _solo_step(self, solo: _Solo) -> None:
        member = self._active[solo.key]
        seq = member.seq
        try:
            token, logprobs = next(solo.steps)
        except StopIteration:
            ended = True
        else:
            chunk = seq.add(int(token), logprobs)
            if chunk is not None:
                member.sink(chunk)
            ended = seq.reason is not None
        if ended:
            self._solo = None
            self._keep_solo_cache(solo, seq)
            self._finish(solo.key, "length")

    def _drop_cancelled(self) -> None:
        if self._solo is not None and not self._active[self._solo.key].seq.cancel.is_set():
            return  # one sequence: one flag to look at
        gone = [key for key, member in self._active.items() if member.seq.cancel.is_set()]
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
        """The last chunk of the sequence under ``key``; ``reason`` counts only where the sequence
        set none itself (a cancel, or the model's loop that ran out)."""
        member = self._active.pop(key)
        if member.seq.constraint is not None:
            self._constrained -= 1
        member.sink(member.seq.finish(reason))

    def fail(self, exc: BaseException) -> None:
        """A step failed: every request in the batch ends with the error (the batch is unusable)."""
        active, self._active = self._active, {}
        self._solo = None
        self._constrained = 0
        for member in active.values():
            member.sink(exc)

    def close(self) -> None:
        for member in self._active.values():
            member.seq.cancel.set()
        self._drop_cancelled()
        self._generator.close()  # type: ignore[no-untyped-call]
