"""Engine overhead: mlxk's generation vs ``mlx_lm.stream_generate`` on the same model and prompt.

The model is the tests' tiny real llama (about 1,600 tokens/s here), the hardest case for an
engine: per-token work of ours weighs most when a token takes well under a millisecond. Rounds
are paired (mlx-lm, then mlxk, greedy, same prompt) and the goals are medians of per-pair
ratios: generation tokens/s >= 97 % of mlx-lm's, time to first token at most 20 ms more.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.conftest import QUICK
from mlxk.generation.request import GenerationRequest, Message, Sampling
from tests.modelfix import build_tiny_chat_model, install

TOKENS = 256 if QUICK else 1024
PAIRS = 5 if QUICK else 15
MIN_SPEED_RATIO = 0.97
MAX_TTFT_OVERHEAD_S = 0.020


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

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


def test_engine_keeps_mlx_lm_speed(engine: Any) -> None:
    prompt = engine.prompt(_request()).tokens
    _mlx_lm(engine, prompt), _mlxk(engine)  # warm both paths (compiled kernels, caches)
    speed, ttft, rows = [], [], []
    for _ in range(PAIRS):
        theirs = _mlx_lm(engine, prompt)
        ours = _mlxk(engine)
        assert ours[2] == theirs[2] == TOKENS
        speed.append(ours[1] / theirs[1])
        ttft.append(ours[0] - theirs[0])
        rows.append((theirs[1], ours[1], theirs[0] * 1000, ours[0] * 1000))
    print(
        f"\n{TOKENS} tokens x {PAIRS} pairs: mlx-lm {statistics.median(r[0] for r in rows):.0f} tok/s, "
        f"mlxk {statistics.median(r[1] for r in rows):.0f} tok/s, ratio {statistics.median(speed):.3f}; "
        f"first token mlx-lm {statistics.median(r[2] for r in rows):.1f} ms, "
        f"mlxk {statistics.median(r[3] for r in rows):.1f} ms (+{statistics.median(ttft) * 1000:.1f} ms)"
    )
    assert statistics.median(speed) >= MIN_SPEED_RATIO
    assert statistics.median(ttft) <= MAX_TTFT_OVERHEAD_S


def test_engine_generation(benchmark: Any, engine: Any) -> None:
    """For the table: one whole greedy generation through the engine."""
    benchmark.pedantic(lambda: list(engine.generate(_request())), rounds=3 if QUICK else 7, iterations=1)


def test_mlx_lm_generation(benchmark: Any, engine: Any) -> None:
    prompt = engine.prompt(_request()).tokens
    benchmark.pedantic(lambda: _mlx_lm(engine, prompt), rounds=3 if QUICK else 7, iterations=1)
