"""One thread owns MLX: it loads models and runs requests one after another, handing chunks to
the event loop of the request that asked. A bounded queue keeps the number of waiting requests
(and so memory) in check; beyond it a request is refused at once, not queued forever.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mlxk.runner.engine import Engine
from mlxk.runner.request import Chunk, GenerationRequest

Item = Chunk | BaseException


class Busy(Exception):
    """The queue is full."""


@dataclass
class Job:
    model: str
    request: GenerationRequest | None  # None: only make sure the model is loaded
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:
            self.cancel.set()  # the loop is gone (server stopping): nobody is listening


class EngineWorker:
    def __init__(self, load: Callable[[str], Engine], max_queue: int) -> None:
        self._load = load
        self._max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.engine: Engine | None = None
        self.model: str | None = None
        self.loading: str | None = None
        self._thread = threading.Thread(target=self._run, name="mlxk-engine", daemon=True)

    @property
    def queue_depth(self) -> int:
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._pending >= self._max_queue:
                raise Busy
            self._pending += 1
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._serve(job)
            except BaseException as exc:  # handed to the request; the worker lives on
                job.emit(exc)
            finally:
                with self._lock:
                    self._pending -= 1

    def _serve(self, job: Job) -> None:
        if job.cancel.is_set():
            job.emit(Chunk("", "cancelled"))
            return
        if self.model != job.model or self.engine is None:
            self.loading = job.model
            try:
                self.engine = None
                self.engine = self._load(job.model)
                self.model = job.model
            finally:
                self.loading = None
        if job.request is None:
            job.emit(Chunk("", "stop"))
            return
        for chunk in self.engine.generate(job.request, job.cancel):
            job.emit(chunk)


async def chunks(job: Job) -> AsyncIterator[Chunk]:
    """The job's chunks as they come; leaving early (a client that went away) cancels the job."""
    try:
        while True:
            item = await job.out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return
    finally:
        job.cancel.set()
