"""Benchmark caches, and the summary of the gates that guard the performance goals.

Full mode builds caches of 1,000 and 10,000 models; ``MLXK_BENCH_QUICK=1`` (CI) only 1,000 and
fewer rounds. Every gate is a ratio (or a difference) measured in the same run, on paired rounds
(native vs pure Python, mlxk vs ``find`` and huggingface_hub), never an absolute time: the machine
is shared and noisy. ``benchmarks/gates.py`` says how a gate decides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.cachegen import build_cache
from benchmarks.gates import QUICK, VERDICTS, gate_rows
from mlxk.core.blas import ensure_blas

# benchmarks build and run models in this process: MLX multiplies with the BLAS mlxk chooses, as
# an mlxk process does (the fixtures' own import of mlx.core would otherwise fix the reference one)
ensure_blas()

__all__ = ["QUICK"]
SIZES = [1000] if QUICK else [1000, 10000]
ROUNDS = 3 if QUICK else 7


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if VERDICTS:
        terminalreporter.section("performance gates (medians of paired rounds)")
        for row in gate_rows():
            terminalreporter.write_line(row)


@pytest.fixture(scope="session")
def bench_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="mlxk-bench-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


_CACHES: dict[int, Path] = {}


def cache_of(bench_root: Path, models: int) -> Path:
    if models not in _CACHES:
        hub = bench_root / f"hub-{models}"
        build_cache(hub, models)
        subprocess.run(
            ["find", "-L", str(hub), "-printf", "%s\n"], stdout=subprocess.DEVNULL, check=True
        )  # warm
        _CACHES[models] = hub
    return _CACHES[models]


def process_env(hub: Path, memo_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(hub), MLXK_CACHE_DIR=str(memo_dir), **extra)
    return env


def mlxk_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlxk", *args]


class Medians:
    """Medians recorded by the benchmarks of one module, for the ratio checks at its end."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def record(self, key: str, benchmark: object) -> None:
        stats = benchmark.stats  # type: ignore[attr-defined]
        self.values[key] = stats.stats.median

    def ratio(self, numerator: str, denominator: str) -> float:
        return self.values[numerator] / self.values[denominator]


@pytest.fixture(scope="module")
def medians() -> Medians:
    return Medians()
