"""One thread owns MLX: it loads models and runs every request through continuous batching
(``mlxk.generation.batch``), handing chunks to the event loop of the request that asked. Other
MLX work (the embedding batches) runs on the same thread, between two decoding steps (``call``):
MLX is never used from two threads at once.

New requests join the running batch between decoding steps; a request for another model waits
until the batch has drained, then the model is switched. A bounded count of requests (waiting or
running) keeps memory in check; beyond it a request is refused at once, not queued forever.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mlxk.generation.batch import DEFAULT_MAX_BATCH, BatchRunner, Sink
from mlxk.generation.chunks import Chunk, Usage, merge
from mlxk.generation.engine import Engine
from mlxk.generation.request import GenerationRequest

log = logging.getLogger("mlxk.server")
Item = Chunk | BaseException
Task = Callable[[], None]  # MLX work of another kind, run on the engine thread between steps


class Runner(Protocol):
    """What runs the batch of a loaded engine: a ``BatchRunner``, or a ``LockstepRunner`` that
    keeps the other ranks of a distributed group in step."""

    @property
    def engine(self) -> Engine: ...
    @property
    def active(self) -> int: ...
    @property
    def idle_step_s(self) -> float | None: ...
    def add(self, request: GenerationRequest, sink: Sink, cancel: threading.Event) -> None: ...
    def step(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def close(self) -> None: ...


RunnerFactory = Callable[[Engine, int], Runner]
# Chunks wait at most this long on the engine thread, so the event loop wakes ~200 times a second
# at most instead of once per token (on a small machine the wake-ups compete with generation).
DELIVERY_INTERVAL_S = 0.005
DELIVERY_INTERVAL_ALONE_S = 0.02  # one stream: nobody else waits on the loop, so wake it less


class Busy(Exception):
    """Too many requests are waiting or running."""


@dataclass(eq=False)  # a job is itself: hashed and compared by identity
class Job:
    model: str
    request: GenerationRequest | None  # None: only make sure the model is loaded
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # a first chunk has been handed over

    def emit(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:
            self.cancel.set()  # the loop is gone (server stopping): nobody is listening


class EngineWorker:
    def __init__(
        self,
        load: Callable[[str], Engine],
        max_queue: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        finished: Callable[[Usage, str], None] = lambda usage, reason: None,
        runner: RunnerFactory = BatchRunner,
    ) -> None:
        self._load = load
        self._new_runner = runner
        self._finished = finished  # told of every generation's end, whether or not a client still reads
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._jobs: queue.Queue[Job | Task | None] = queue.Queue()
        self._tasks: list[Task] = []
        self._pending = 0
        self._lock = threading.Lock()
        self._runner: Runner | None = None
        self._outbox: list[tuple[Job, Item]] = []
        self._last_delivery = 0.0
        self._urgent = False  # the outbox holds a first or last chunk: deliver without waiting
        self.model: str | None = None
        self.loading: str | None = None
        self._thread = threading.Thread(target=self._run, name="mlxk-engine", daemon=True)

    @property
    def engine(self) -> Engine | None:
        """The loaded engine (for work on the engine thread, inside a ``call``)."""
        return self._runner.engine if self._runner is not None else None

    @property
    def queue_depth(self) -> int:
        """Requests waiting or being generated."""
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # not started, or stopped already: nothing to wait for
            self._jobs.put(None)
            self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        self.submit_all([job])

    def call(self, task: Task) -> None:
        """Run ``task`` on the engine thread, between two decoding steps (it must not raise)."""
        self._jobs.put(task)

    def submit_all(self, jobs: list[Job]) -> None:
        """Queue every job of a request, or none of them (Busy) when they do not all fit."""
        with self._lock:
            if self._pending + len(jobs) > self._max_queue:
                raise Busy
            self._pending += len(jobs)
        for job in jobs:
            self._jobs.put(job)

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def _finish(self, job: Job, item: Item) -> None:
        job.emit(item)  # outside the outbox: these end a request that never joined the batch
        self._done()

    def _run(self) -> None:
        waiting: deque[Job] = deque()
        while True:
            busy = self._runner is not None and self._runner.active > 0
            if not self._take(waiting, block=not busy and not waiting):
                if self._runner is not None:
                    self._runner.close()
                return
            self._run_tasks()
            self._admit(waiting)
            if self._runner is not None and (self._runner.active or self._runner.idle_step_s is not None):
                try:
                    self._runner.step()
                except Exception as exc:  # a failed step ends every request in it; the worker lives on
                    failed = self._runner
                    self._runner = self._new_runner(failed.engine, self._max_batch)
                    failed.fail(exc)
            self._deliver()

    def _deliver(self) -> None:
        """Hand chunks to their event loops: one wake-up per loop for all of them, at most every
        few milliseconds, except that a first chunk or a last one goes at once (time to first
        token and the end of a request are never held back)."""
        if not self._outbox:
            return
        now = time.monotonic()
        if not self._urgent:
            alone = self._runner is not None and self._runner.active <= 1
            interval = DELIVERY_INTERVAL_ALONE_S if alone else DELIVERY_INTERVAL_S
            if now - self._last_delivery < interval:
                return
        self._urgent = False
        self._last_delivery = now
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Item]]] = {}
        for job, item in self._outbox:
            by_loop.setdefault(job.loop, []).append((job, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop is gone (server stopping): nobody is listening
                for job, _item in items:
                    job.cancel.set()

    def _take(self, waiting: deque[Job], *, block: bool) -> bool:
        """Move submitted jobs to ``waiting``; False when the worker is to stop."""
        if not block and self._jobs.empty():
            return True  # the common case while generating: nothing new, no exception raised
        # an idle runner that steps on a heartbeat (a distributed group's) waits for work that long
        idle_step_s = self._runner.idle_step_s if self._runner is not None else None
        try:
            while True:
                job = self._jobs.get(block=block, timeout=idle_step_s if block else None)
                block = False
                if job is None:
                    for pending in waiting:
                        self._finish(pending, Chunk(finish_reason="cancelled"))
                    return False
                if isinstance(job, Job):
                    waiting.append(job)
                else:
                    self._tasks.append(job)
        except queue.Empty:
            return True

    def _run_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            try:
                task()
            except Exception:  # a bug in a task: logged; the engine thread lives on
                log.exception("a task on the engine thread failed")

    def _admit(self, waiting: deque[Job]) -> None:
        for job in [j for j in waiting if j.cancel.is_set()]:  # clients that left while they waited
            waiting.remove(job)
            self._finish(job, Chunk(finish_reason="cancelled"))
        while waiting:
            job = waiting[0]
            if job.cancel.is_set():  # the client left while it waited
                waiting.popleft()
                self._finish(job, Chunk(finish_reason="cancelled"))
                continue
            if job.model != self.model or self._runner is None:
                if self._runner is not None and self._runner.active:
                    return  # another model: let the running batch drain first
                waiting.popleft()
                if not self._switch(job):
                    continue
                waiting.appendleft(job)
                continue
            waiting.popleft()
            if job.request is None:
                self._finish(job, Chunk(finish_reason="stop"))
                continue

            def sink(item: Item, job: Job = job) -> None:
                self._outbox.append((job, item))  # delivered together after the step
                if not job.started:  # a first chunk goes out at once: time to first token
                    job.started = self._urgent = True
                if isinstance(item, BaseException) or item.finish_reason is not None:
                    self._urgent = True  # so does a last one
                    self._done()
                    if isinstance(item, Chunk) and item.usage is not None:
                        self._finished(item.usage, item.finish_reason or "length")

            try:
                self._runner.add(job.request, sink, job.cancel)
            except Exception as exc:  # e.g. a prompt too long for the context: this request only
                self._finish(job, exc)

    def _switch(self, job: Job) -> bool:
        if self._runner is not None:
            self._runner.close()
        self._runner = None
        self.model = None
        self.loading = job.model
        try:
            engine = self._load(job.model)
            self._runner = self._new_runner(engine, self._max_batch)
            self.model = job.model
            return True
        except BaseException as exc:
            self._finish(job, exc)
            return False
        finally:
            self.loading = None


def _put_all(items: list[tuple[Job, Item]]) -> None:
    for job, item in items:
        job.out.put_nowait(item)


async def chunks(job: Job) -> AsyncIterator[Chunk]:
    """The job's chunks as they come; leaving early (a client that went away) cancels the job.

    Whatever piled up while the consumer was busy comes out as one chunk: a slow client gets
    fewer, larger events instead of falling further behind one token at a time."""
    try:
        while True:
            item = await job.out.get()
            if isinstance(item, BaseException):
                raise item
            pending = [item]
            while item.finish_reason is None and not job.out.empty():
                following = job.out.get_nowait()
                if isinstance(following, BaseException):
                    job.out.put_nowait(following)  # raised on the next turn, after this text
                    break
                pending.append(following)
                item = following
            yield merge(pending)
            if item.finish_reason is not None:
                return
    finally:
        job.cancel.set()
