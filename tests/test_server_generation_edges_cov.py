"""The engine thread's edges on a tiny real model: a client that leaves while its model loads, and
a decoding step that fails after some text went out (the text reaches the client, then the error;
the thread lives on and serves the next request)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk.generation.batch import BatchRunner
from mlxk.generation.chunks import Chunk
from mlxk.generation.request import GenerationRequest, Message, Sampling
from mlxk.server.worker import EngineWorker, Job, chunks
from tests.modelfix import build_tiny_chat_model, install


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("worker-edges")
    return install(hub, "test/worker-edges", build_tiny_chat_model()).snapshot


@pytest.fixture(scope="module")
def engine(snapshot: Path) -> Any:
    from mlxk.generation.engine import load_engine

    return load_engine(str(snapshot))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop that runs only when the test reads: the engine thread's deliveries wait in it
    until then (so what a job received is read after the thread has stopped)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def request(tokens: int = 40) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "Hello"),), max_tokens=tokens, sampling=Sampling(temperature=0.0)
    )


def received(loop: asyncio.AbstractEventLoop, job: Job) -> tuple[list[Chunk], BaseException | None]:
    """What ``chunks(job)`` hands its reader: the chunks, and the error that ended them, if any."""

    async def read() -> tuple[list[Chunk], BaseException | None]:
        got: list[Chunk] = []
        try:
            async for chunk in chunks(job):
                got.append(chunk)
        except Exception as exc:
            return got, exc
        return got, None

    return loop.run_until_complete(read())


def test_a_client_that_leaves_while_its_model_loads_is_cancelled_and_the_model_stays(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    job = Job("tiny", request(), loop)
    loading, admitted = threading.Event(), threading.Event()

    def load(name: str) -> Any:
        job.cancel.set()  # the client goes away while the model loads
        loading.set()
        return engine

    worker = EngineWorker(load=load, max_queue=4)
    worker.start()
    try:
        worker.submit(job)
        assert loading.wait(timeout=60)
        worker.call(admitted.set)  # runs on the engine thread once the job's turn is over
        assert admitted.wait(timeout=60)
    finally:
        worker.stop()
    got, error = received(loop, job)
    assert error is None
    assert [(c.content, c.finish_reason, c.usage) for c in got] == [("", "cancelled", None)]
    assert worker.model == "tiny"  # loaded for it, and kept for the next request
    assert worker.queue_depth == 0


class StepFailed(RuntimeError):
    pass


class FailingStep(BatchRunner):
    """Stand-in for a decoding step that fails (a device out of memory, say: no such failure can
    be caused with the CPU backend here). Steps normally until ``FAIL_AT`` steps were taken, then
    raises ``StepFailed`` and sets ``failed``."""

    FAIL_AT = 6

    def __init__(self, engine: Any, max_batch: int, failed: threading.Event) -> None:
        super().__init__(engine, max_batch)
        self.steps = 0
        self.failed = failed

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.FAIL_AT:
            self.failed.set()
            raise StepFailed("the device failed")
        super().step()


def test_a_failed_step_delivers_the_text_before_the_error_and_the_worker_lives_on(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    reference = "".join(c.content for c in engine.generate(request(tokens=FailingStep.FAIL_AT)))
    assert reference  # the steps before the failure wrote text
    first = Job("tiny", request(), loop)
    second = Job("tiny", request(tokens=3), loop)
    failed, second_done = threading.Event(), threading.Event()
    worker = EngineWorker(
        load=lambda name: engine,
        max_queue=4,
        finished=lambda usage, reason: second_done.set(),  # only the second ends with usage
        runner=lambda engine, max_batch: FailingStep(engine, max_batch, failed),
    )
    worker.start()
    try:
        worker.submit(first)
        assert failed.wait(timeout=120)
        worker.submit(second)
        assert second_done.wait(timeout=120)
    finally:
        worker.stop()
    got, error = received(loop, first)
    text = "".join(c.content for c in got)
    assert isinstance(error, StepFailed)  # the error, after the text (none of it lost)
    assert text and reference.startswith(text)
    assert all(c.finish_reason is None for c in got)
    again, error = received(loop, second)  # a fresh runner serves the next request
    assert error is None and again[-1].finish_reason == "length"
    assert again[-1].usage is not None and again[-1].usage.completion_tokens == 3
