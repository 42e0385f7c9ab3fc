"""Continuous batching on a tiny real model: a lone request, one that moves into the batch when
others arrive, several at once, cancellation, the prefix cache. Greedy text must not depend on
which path produced it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mlxk.generation.chunks import Chunk
from mlxk.generation.request import GenerationRequest, Message, Sampling
from tests.modelfix import build_tiny_chat_model, install


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("batch")
    repo = install(hub, "test/batch", build_tiny_chat_model(max_position_embeddings=2048))
    yield load_engine(str(repo.snapshot))


def request(text: str = "Hello", tokens: int = 60) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),), max_tokens=tokens, sampling=Sampling(temperature=0.0)
    )


class Collector:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.last: Chunk | None = None

    def __call__(self, item: Chunk | BaseException) -> None:
        assert isinstance(item, Chunk), item
        self.texts.append(item.content)
        if item.finish_reason is not None:
            self.last = item

    @property
    def text(self) -> str:
        return "".join(self.texts)


def reference(engine: Any, req: GenerationRequest) -> str:
    return "".join(c.content for c in engine.generate(req))


def drain(runner: Any, *collectors: Collector, add_at: dict[int, Any] | None = None) -> None:
    steps = 0
    while any(c.last is None for c in collectors):
        if add_at and steps in add_at:
            add_at.pop(steps)()
        runner.step()
        steps += 1
        assert steps < 10_000


def test_a_lone_request_equals_the_engine(engine: Any) -> None:
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    alone = Collector()
    runner.add(request(), alone, threading.Event())
    drain(runner, alone)
    assert alone.text == reference(engine, request())
    assert alone.last is not None and alone.last.finish_reason == "length" and alone.last.usage is not None
    assert alone.last.usage.completion_tokens == 60


def test_a_request_that_moves_into_the_batch_keeps_its_text(engine: Any) -> None:
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    first, second, third = Collector(), Collector(), Collector()
    runner.add(request(), first, threading.Event())
    later = {
        15: lambda: runner.add(request("Hi there", 40), second, threading.Event()),
        30: lambda: runner.add(request(), third, threading.Event()),
    }
    drain(runner, first, second, third, add_at=later)
    assert first.text == reference(engine, request())  # 15 tokens alone, the rest in the batch
    assert second.text == reference(engine, request("Hi there", 40))
    assert third.text == first.text
    assert (
        first.last is not None and first.last.usage is not None and first.last.usage.completion_tokens == 60
    )


def test_cancel_in_either_path(engine: Any) -> None:
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    lone, lone_cancel = Collector(), threading.Event()
    runner.add(request(tokens=500), lone, lone_cancel)
    for _ in range(5):
        runner.step()
    lone_cancel.set()
    runner.step()
    assert lone.last is not None and lone.last.finish_reason == "cancelled" and runner.active == 0
    a, b, b_cancel = Collector(), Collector(), threading.Event()
    runner.add(request(tokens=50), a, threading.Event())
    runner.add(request(tokens=500), b, b_cancel)
    runner.step()
    b_cancel.set()
    drain(runner, a, b)
    assert b.last is not None and b.last.finish_reason == "cancelled"
    assert a.text == reference(engine, request(tokens=50))


def test_the_prefix_cache_serves_a_repeated_prompt(engine: Any) -> None:
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    once, again = Collector(), Collector()
    runner.add(request(tokens=20), once, threading.Event())
    drain(runner, once)
    runner.add(request(tokens=20), again, threading.Event())
    drain(runner, again)
    assert again.text == once.text
    assert again.last is not None and again.last.usage is not None and again.last.usage.cached_tokens > 10


def test_a_seeded_request_repeats_whatever_runs_beside_it(engine: Any) -> None:
    from mlxk.generation.batch import BatchRunner

    seeded = GenerationRequest(
        messages=(Message("user", "Hello"),),
        max_tokens=40,
        sampling=Sampling(temperature=1.0, top_p=0.9, seed=42),
    )
    noisy = GenerationRequest(
        messages=(Message("user", "Other"),), max_tokens=40, sampling=Sampling(temperature=1.0)
    )
    alone = reference(engine, seeded)
    assert alone == reference(engine, seeded)
    runner = BatchRunner(engine)
    a, b = Collector(), Collector()
    runner.add(noisy, b, threading.Event())  # alone first, then moved into the batch
    runner.add(seeded, a, threading.Event())
    drain(runner, a, b)
    assert a.text == alone
