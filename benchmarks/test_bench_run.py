"""Engine overhead: mlxk's generation vs ``mlx_lm.stream_generate`` on the same model and prompt.

The model is the tests' tiny real llama (about 1,600 tokens/s here), the hardest case for an
engine: per-token work of ours weighs most when a token takes well under a millisecond. Rounds
are paired (mlx-lm and mlxk back to back, in alternating order, greedy, same prompt) and the gates
are medians of per-pair values: generation tokens/s >= 97 % of mlx-lm's, time to first token at
most 20 ms more (the goals, full mode); quick mode's alarms catch a real regression only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.gates import QUICK, Gate, enforce, first_then_fresh, paired
from mlxk.runner.request import GenerationRequest, Message, Sampling
from tests.modelfix import build_tiny_chat_model, install

TOKENS = 256 if QUICK else 1024
PAIRS = 15
SPEED = Gate("engine tokens/s / stream_generate's", goal=0.97, alarm=0.80)
TTFT = Gate(
    "engine first token - stream_generate's", goal=20.0, alarm=30.0, higher_is_better=False, unit="ms"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.runner.engine import load_engine

    hub = tmp_path_factory.mktemp("run-bench")
    repo = install(hub, "bench/Tiny", build_tiny_chat_model(max_position_embeddings=4 * TOKENS))
    yield load_engine(str(repo.snapshot))


def _request() -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "Hello"),), max_tokens=TOKENS, sampling=Sampling(temperature=0.0)
    )


def _mlx_lm(engine: Any, prompt: list[int]) -> tuple[float, float, int]:
    """(time to first token, generation tokens/s, tokens) of stream_generate, timed like ours."""
    from mlx_lm.generate import stream_generate

    started = time.perf_counter()
    first = started
    count = 0
    for response in stream_generate(engine.model, engine.tokenizer, prompt, max_tokens=TOKENS):
        if count == 0:
            first = time.perf_counter()
        count = response.generation_tokens
    ended = time.perf_counter()
    return first - started, (count - 1) / (ended - first), count


def _mlxk(engine: Any) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    usage = None
    for chunk in engine.generate(_request()):
        if first is None:
            first = time.perf_counter()
        usage = chunk.usage
    ended = time.perf_counter()
    assert usage is not None and first is not None
    return first - started, (usage.completion_tokens - 1) / (ended - first), usage.completion_tokens


Round = tuple[tuple[float, float, int], tuple[float, float, int]]  # (mlx-lm's, ours)


def test_engine_keeps_mlx_lm_speed(engine: Any) -> None:
    prompt = engine.encode(_request())
    _mlx_lm(engine, prompt), _mlxk(engine)  # warm both paths (compiled kernels, caches)

    def measure() -> list[Round]:
        rounds = paired(lambda: _mlx_lm(engine, prompt), lambda: _mlxk(engine), PAIRS)
        assert all(ours[2] == theirs[2] == TOKENS for theirs, ours in rounds)
        print(
            f"\n{TOKENS} tokens x {PAIRS} pairs: "
            f"mlx-lm {statistics.median(t[1] for t, _ in rounds):.0f} tok/s, "
            f"mlxk {statistics.median(o[1] for _, o in rounds):.0f} tok/s; first token "
            f"mlx-lm {statistics.median(t[0] for t, _ in rounds) * 1000:.1f} ms, "
            f"mlxk {statistics.median(o[0] for _, o in rounds) * 1000:.1f} ms"
        )
        return rounds

    def speed(rounds: list[Round]) -> float:
        return statistics.median(ours[1] / theirs[1] for theirs, ours in rounds)

    def ttft(rounds: list[Round]) -> float:
        return statistics.median((ours[0] - theirs[0]) * 1000 for theirs, ours in rounds)

    first = measure()
    enforce(SPEED, first_then_fresh(first, measure, speed))
    enforce(TTFT, first_then_fresh(first, measure, ttft))


def test_engine_generation(benchmark: Any, engine: Any) -> None:
    """For the table: one whole greedy generation through the engine."""
    benchmark.pedantic(lambda: list(engine.generate(_request())), rounds=3 if QUICK else 7, iterations=1)


def test_mlx_lm_generation(benchmark: Any, engine: Any) -> None:
    prompt = engine.encode(_request())
    benchmark.pedantic(lambda: _mlx_lm(engine, prompt), rounds=3 if QUICK else 7, iterations=1)
