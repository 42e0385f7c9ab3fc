"""Continuous batching on several ranks at once: one model sharded over an ``mx.distributed``
group, every rank running the same batch steps in the same order.

Rank 0 decides (which requests join the batch, which leave because their client went away) and
shares those decisions with the other ranks through the group itself every few steps: an
``all_sum`` of four integers (what comes next, the length of the decisions that follow, how long
the others may stay away when the batch is idle, and a roll call), then, only when something
changed, an ``all_sum`` of the decisions' bytes. The other ranks contribute zeros (and 1 to the
roll call), so the sum is rank 0's message. Everything else a step does (prompts, sampling, stop
strings, the prefix cache) follows from the same inputs on every rank, so the ranks stay in step
without sharing anything more. The group is formed by ``mlx.launch`` from the user's own hosts;
the decisions are pickled request values between those trusted processes.

An idle group meets on a heartbeat: rank 0 shares an empty step (which finds a lost rank while
nothing is generated) and tells the others how long until the next one, which they spend asleep
instead of waiting inside the next collective. MLX's ring backend polls its sockets while it
waits, which kept a whole core busy on every other rank for as long as the service was idle. The
price: a request that comes to an idle group waits for the others to wake. The pause between two
heartbeats grows with the time the group has been idle (a quarter of it, from 20 ms up to
``IDLE_PAUSE_MAX_S``), so a request that follows another closely waits little, and one after a
long quiet spell at most a quarter of a second.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlxk.errors import MlxkError
from mlxk.generation.batch import DEFAULT_MAX_BATCH, BatchRunner, Sink
from mlxk.generation.chunks import Chunk
from mlxk.generation.engine import Engine
from mlxk.generation.request import GenerationRequest

log = logging.getLogger("mlxk.generation")

STEP, STOP = 1, 2  # what the ranks do after a share: one batch step, or leave
# the heartbeat of an idle group (see above): a pause of this share of the time idle, within bounds
IDLE_PAUSE_SHARE, IDLE_PAUSE_MIN_S, IDLE_PAUSE_MAX_S = 0.25, 0.02, 0.25
EARLY_S = 0.005  # how much sooner than rank 0 the others come back from an idle pause
STALL_S = 60.0  # a share or step that takes longer: a rank hangs (a long prompt's prefill is one step)
STEPS_PER_SHARE = 8  # batch steps between two shares of rank 0's decisions (see LockstepRunner)


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
    stall_s: float = STALL_S
    _busy_since: float | None = None

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Around each share and step: the watchdog's measure of progress."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    def watch(self) -> None:
        """A daemon thread that declares the group lost when one share or step makes no progress
        for ``stall_s`` seconds. MLX raises for a peer that closed its connection in most places,
        but an evaluation already queued when it happens may wait for ever; this bounds that."""

        def run() -> None:
            while self.lost is None:
                time.sleep(min(1.0, self.stall_s / 4))
                since = self._busy_since
                if since is not None and time.monotonic() - since > self.stall_s:
                    self.lose(TimeoutError(f"a step made no progress for {self.stall_s:g} s"))

        threading.Thread(target=run, name="mlxk-group-watchdog", daemon=True).start()

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

    @contextlib.contextmanager
    def peers_watched(self) -> Iterator[None]:
        """Around work that runs collectives among other things (loading the shards, a batch step
        with the model's own collectives): the backend's report of a lost peer becomes
        ``GroupLost`` (through ``lose``); any other error stays what it is."""
        try:
            yield
        except RuntimeError as exc:
            if "[ring]" in str(exc) or "peer" in str(exc):
                raise self.lose(exc) from None
            raise

    def lose(self, error: BaseException) -> GroupLost:
        """The group failed: remember why (once), tell ``on_lost``, and return the error to raise."""
        if self.lost is None:
            self.lost = f"the distributed group lost a rank ({self.others()}): {error}"
            log.error("%s", self.lost)
            self.on_lost(self.lost)
        return GroupLost(self.lost)


def share(
    group: Group, what: int, decisions: Decisions | None = None, pause_s: float = 0.0
) -> tuple[int, Decisions, float]:
    """Rank 0's ``what`` (STEP or STOP), decisions and idle pause (how long the other ranks may stay
    away before the next share), as every rank gets them."""
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
        # the last number is a roll call: every rank adds 1, so a sum short of the group's size is
        # a collective that came back without a peer's part (a lost rank that raised nothing)
        mine = [what, len(payload), round(pause_s * 1000), 1] if leader else [0, 0, 0, 1]
        summed = as_ints(mx.distributed.all_sum(mx.array(mine, dtype=mx.int64), **on), "int64")
        what, size, pause_ms, present = summed
        if present != group.size:
            raise RuntimeError(f"a share came back with {present} of {group.size} ranks")
        if size == 0:
            return what, Decisions(), pause_ms / 1000
        data = from_bytes(payload) if leader else mx.zeros((size,), dtype=mx.uint8)
        received = bytes(as_ints(mx.distributed.all_sum(data, **on), "uint8"))
    except RuntimeError as exc:  # the backend's report of a lost peer
        raise group.lose(exc) from None
    shared = decisions if leader else pickle.loads(received)
    assert isinstance(shared, Decisions)
    return what, shared, pause_ms / 1000


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
    """Rank 0's batch runner: a ``BatchRunner`` whose changes are shared with the other ranks.

    Sharing is a synchronisation point (every rank waits for the slowest, and mlx-lm's loops stop
    overlapping one step's computation with the next step's bookkeeping), so the ranks share once
    every ``STEPS_PER_SHARE`` steps, and whenever the batch runs empty: a request joins, or leaves
    for a client that went away, at most that many steps later. Between two shares every rank
    steps on its own while its batch has work (the same batch everywhere, so the same count)."""

    def __init__(self, engine: Engine, group: Group, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._runner = BatchRunner(engine, max_batch)
        self._group = group
        self._keys = itertools.count()
        self._open: dict[int, _Open] = {}
        self._pending: list[tuple[int, GenerationRequest, Sink]] = []  # checked, joining at the next share
        self._since_share = 0
        self._idle_since: float | None = None  # when the batch last ran empty (None: it runs)
        self._pause_s = 0.0  # the idle pause rank 0 announced at its last share

    @property
    def engine(self) -> Engine:
        return self._runner.engine

    @property
    def active(self) -> int:
        return self._runner.active + len(self._pending)

    @property
    def idle_step_s(self) -> float:
        """How long until the next heartbeat while the batch is idle: the pause the other ranks
        were told at the last share (they come back just before it)."""
        return self._pause_s

    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None:
        """Check now (raises as ``BatchRunner.add`` does); join at the next share, on every rank."""
        if self._group.lost is not None:
            raise GroupLost(self._group.lost)
        self.engine.sequence(request)  # a prompt the context cannot hold is refused here, at once
        key = next(self._keys)
        self._open[key] = _Open(cancel)
        self._pending.append((key, request, _tracked(sink, self._open, key)))

    def step(self) -> None:
        """One step of the batch, after a share when one is due (also when the batch is empty: the
        heartbeat of an idle group, every ``IDLE_PAUSE_S``)."""
        with self._group.working():
            if self._since_share >= STEPS_PER_SHARE or not self._runner.active:
                self._share()
            if self._runner.active:
                self._step()
                self._since_share += 1

    def _share(self) -> None:
        asked = [key for key, entry in self._open.items() if entry.asked is not None and entry.asked.is_set()]
        pending, self._pending = self._pending, []
        decisions = Decisions(
            tuple((key, request) for key, request, _sink in pending),
            tuple(key for key in asked if not self._open[key].shared.is_set()),
        )
        self._pause_s = self._idle_pause(idle=not pending and not self._runner.active)
        share(self._group, STEP, decisions, self._pause_s)
        self._since_share = 0
        for key, request, sink in pending:
            try:
                self._runner.add(request, sink, self._open[key].shared)
            except Exception as exc:  # checked in add(): only a bug gets here, on every rank alike
                sink(exc)
        _apply_cancels(self._open, decisions)

    def _idle_pause(self, *, idle: bool) -> float:
        """The pause to announce at this share: none while the batch runs; a share of the time it
        has been idle otherwise (bounded)."""
        if not idle:
            self._idle_since = None
            return 0.0
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return min(IDLE_PAUSE_MAX_S, max(IDLE_PAUSE_MIN_S, (now - self._idle_since) * IDLE_PAUSE_SHARE))

    def _step(self) -> None:
        with self._group.peers_watched():  # a collective inside the model's forward pass
            self._runner.step()

    def fail(self, exc: BaseException) -> None:
        self._runner.fail(exc)
        pending, self._pending = self._pending, []
        for _key, _request, sink in pending:
            sink(exc)
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
            what, decisions, pause_s = share(group, 0)  # waits for rank 0 as long as it takes
            if what == STOP:
                return
            for key, request in decisions.joined:
                entry = open_requests[key] = _Open(None)
                try:
                    runner.add(request, _tracked(_discard, open_requests, key), entry.shared)
                except Exception:  # as on rank 0, where add() raised the same before sharing
                    open_requests.pop(key, None)
            _apply_cancels(open_requests, decisions)
            try:
                with group.working():
                    for _ in range(STEPS_PER_SHARE):  # as rank 0 steps until its next share
                        if not runner.active:
                            break
                        runner.step()
            except RuntimeError as exc:
                raise group.lose(exc) from None
            except Exception as exc:  # as rank 0 does: the batch ends, a new one starts
                runner.fail(exc)
                runner = BatchRunner(engine, max_batch)
                open_requests.clear()
            if pause_s > 0 and not runner.active:  # idle: asleep until just before rank 0 shares again
                time.sleep(max(pause_s - EARLY_S, 0.0))
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
