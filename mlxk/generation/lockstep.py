"""Continuous batching on several ranks at once: one model sharded over an ``mx.distributed``
group, every rank running the same batch steps in the same order.

Rank 0 decides (which requests join the batch, which leave because their client went away) and
shares those decisions with the other ranks through the group itself before each step: an
``all_sum`` of two integers (what comes next, and the length of the decisions that follow), then,
only when something changed, an ``all_sum`` of the decisions' bytes. The other ranks contribute
zeros, so the sum is rank 0's message. Everything else a step does (prompts, sampling, stop
strings, the prefix cache) follows from the same inputs on every rank, so the ranks stay in step
without sharing anything more. The group is formed by ``mlx.launch`` from the user's own hosts;
the decisions are pickled request values between those trusted processes.

A rank that dies shows as a failed collective (the ring backend reports the lost connection);
from then on every step and every new request fails with ``GroupLost`` (HTTP 503), and the
``on_lost`` callback ends the service.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxk.errors import MlxkError
from mlxk.generation.batch import DEFAULT_MAX_BATCH, BatchRunner, Sink
from mlxk.generation.chunks import Chunk
from mlxk.generation.engine import Engine
from mlxk.generation.request import GenerationRequest

log = logging.getLogger("mlxk.generation")

STEP, STOP = 1, 2  # what the ranks do after a share: one batch step, or leave
HEARTBEAT_S = 1.0  # an idle rank 0 steps an empty batch this often, so a lost rank shows at once


class GroupLost(MlxkError):
    """A rank of the distributed group is gone: nothing can be generated any more."""

    error_type = "group_lost"
    http_status = 503


@dataclass(frozen=True)
class Decisions:
    """What rank 0 changed in the batch since the last step, in the order it did it."""

    joined: tuple[tuple[int, GenerationRequest], ...] = ()
    cancelled: tuple[int, ...] = ()


@dataclass
class Group:
    """An ``mx.distributed`` group and what the service says about it."""

    handle: Any  # mx.distributed.Group
    backend: str
    hosts: tuple[str, ...] = ()  # by rank, as each rank named itself at start
    on_lost: Callable[[str], None] = lambda why: None
    lost: str | None = None

    @property
    def rank(self) -> int:
        return int(self.handle.rank())

    @property
    def size(self) -> int:
        return int(self.handle.size())

    def others(self) -> str:
        """The ranks this one depends on, for messages (by host when known)."""
        ranks = [r for r in range(self.size) if r != self.rank]
        return ", ".join(f"rank {r}" + (f" ({self.hosts[r]})" if r < len(self.hosts) else "") for r in ranks)

    def lose(self, error: BaseException) -> GroupLost:
        """The group failed: remember why (once), tell ``on_lost``, and return the error to raise."""
        if self.lost is None:
            self.lost = f"the distributed group lost a rank ({self.others()}): {error}"
            log.error("%s", self.lost)
            self.on_lost(self.lost)
        return GroupLost(self.lost)


def share(group: Group, what: int, decisions: Decisions | None = None) -> tuple[int, Decisions]:
    """Rank 0's ``what`` (STEP or STOP) and decisions, as every rank gets them."""
    import mlx.core as mx
    from mlx_lm.generate import generation_stream

    if group.lost is not None:
        raise GroupLost(group.lost)
    leader = group.rank == 0
    # on the stream the model's steps run on: mlx-lm's loops queue the next step's collectives
    # ahead of time, and only one stream keeps every rank's collectives in the same order
    on = {"group": group.handle, "stream": generation_stream}
    payload = (
        pickle.dumps(decisions) if leader and decisions is not None and decisions != Decisions() else b""
    )
    try:
        header = mx.array([what, len(payload)] if leader else [0, 0], dtype=mx.int64)
        what, size = as_ints(mx.distributed.all_sum(header, **on), "int64")
        if size == 0:
            return what, Decisions()
        data = from_bytes(payload) if leader else mx.zeros((size,), dtype=mx.uint8)
        received = bytes(as_ints(mx.distributed.all_sum(data, **on), "uint8"))
    except RuntimeError as exc:  # the backend's report of a lost peer
        raise group.lose(exc) from None
    shared = decisions if leader else pickle.loads(received)
    assert isinstance(shared, Decisions)
    return what, shared


def from_bytes(data: bytes) -> Any:
    """An mx.array of uint8 holding ``data``."""
    import mlx.core as mx
    import numpy as np

    return mx.array(np.frombuffer(data, dtype=np.uint8))


def as_ints(array: Any, dtype: str) -> list[int]:
    """The values of an mx.array of integers. Evaluated with ``mx.eval`` first: that raises when a
    peer is lost, where a read through the buffer protocol would wait for ever."""
    import mlx.core as mx
    import numpy as np

    mx.eval(array)
    return [int(v) for v in np.array(array, dtype=dtype)]


@dataclass
class _Open:
    """A request in the batch: its client's cancel flag (rank 0) and the flag the runner sees,
    set only at the step where every rank drops the request."""

    asked: threading.Event | None
    shared: threading.Event = field(default_factory=threading.Event)


class LockstepRunner:
    """Rank 0's batch runner: a ``BatchRunner`` whose every change is shared before each step."""

    def __init__(self, engine: Engine, group: Group, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._runner = BatchRunner(engine, max_batch)
        self._group = group
        self._keys = itertools.count()
        self._open: dict[int, _Open] = {}
        self._joined: list[tuple[int, GenerationRequest]] = []

    @property
    def engine(self) -> Engine:
        return self._runner.engine

    @property
    def active(self) -> int:
        return self._runner.active

    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None:
        if self._group.lost is not None:
            raise GroupLost(self._group.lost)
        key = next(self._keys)
        entry = _Open(cancel)
        self._runner.add(request, _tracked(sink, self._open, key), entry.shared)  # raises before joining
        self._open[key] = entry
        self._joined.append((key, request))

    def step(self) -> None:
        """Share what changed, then step (also when the batch is empty: a heartbeat that finds a
        lost rank while the service is idle)."""
        asked = [key for key, entry in self._open.items() if entry.asked is not None and entry.asked.is_set()]
        decisions = Decisions(
            tuple(self._joined), tuple(k for k in asked if not self._open[k].shared.is_set())
        )
        self._joined = []
        share(self._group, STEP, decisions)
        _apply_cancels(self._open, decisions)
        self._step()

    def _step(self) -> None:
        try:
            self._runner.step()
        except RuntimeError as exc:
            if "[ring]" in str(exc) or "peer" in str(exc):  # a collective inside the model's forward pass
                raise self._group.lose(exc) from None
            raise

    def fail(self, exc: BaseException) -> None:
        self._runner.fail(exc)
        self._open.clear()

    def close(self) -> None:
        """The service stops: the other ranks leave too."""
        if self._group.lost is None:
            with contextlib.suppress(GroupLost):
                share(self._group, STOP)
        self._runner.close()


def follow(engine: Engine, group: Group, max_batch: int = DEFAULT_MAX_BATCH) -> None:
    """A rank other than 0: apply rank 0's decisions and step with it until it says stop (returns)
    or the group fails (raises GroupLost)."""
    runner = BatchRunner(engine, max_batch)
    open_requests: dict[int, _Open] = {}
    try:
        while True:
            what, decisions = share(group, 0)
            if what == STOP:
                return
            for key, request in decisions.joined:
                entry = _Open(None)
                runner.add(request, _tracked(_discard, open_requests, key), entry.shared)
                open_requests[key] = entry
            _apply_cancels(open_requests, decisions)
            try:
                runner.step()
            except RuntimeError as exc:
                raise group.lose(exc) from None
            except Exception as exc:  # as rank 0 does: the batch ends, a new one starts
                runner.fail(exc)
                runner = BatchRunner(engine, max_batch)
                open_requests.clear()
    finally:
        runner.close()


def _apply_cancels(open_requests: dict[int, _Open], decisions: Decisions) -> None:
    for key in decisions.cancelled:
        entry = open_requests.get(key)
        if entry is not None:
            entry.shared.set()


def _tracked(sink: Sink, open_requests: dict[int, _Open], key: int) -> Sink:
    """``sink``, forgetting the request once its last chunk (or its error) has gone out."""

    def deliver(item: Chunk | BaseException) -> None:
        if isinstance(item, BaseException) or item.finish_reason is not None:
            open_requests.pop(key, None)
        sink(item)

    return deliver


def _discard(item: Chunk | BaseException) -> None:
    """The other ranks compute the same chunks; only rank 0 hands them to clients."""
