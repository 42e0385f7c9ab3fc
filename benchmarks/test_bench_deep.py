"""``health --deep`` against the machine's hashing limit, and the memo'd second run.

A cache of real (random, incompressible) bytes in page cache: 2 GB in full mode (4 models of
512 MiB weights), 256 MB in quick mode. Measured in the same run:
- the all-core limit: hashlib sha256 over the same blobs with one thread per core;
- ``check_health(deep=...)`` in process, memo off (every byte hashed) and memo warm;
- ``mlxk health --deep --json`` as a whole process, and ``sha256sum`` over the same files.
Goals (gated on paired rounds at the end): deep >= 85 % of the all-core limit; the memo'd run
>= 50x faster than the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks import cachegen as gen
from benchmarks.conftest import QUICK, ROUNDS, Medians
from benchmarks.gates import Gate, enforce, median_ratio, timed
from mlxk.cache.scan import CacheLocation
from mlxk.core.twin.hashing import default_jobs
from mlxk.ops.deep import DeepOptions
from mlxk.ops.health import check_health

MODELS = 4
WEIGHT_MIB = 64 if QUICK else 512
# The memo'd run only stats the files: its speed-up grows with the bytes the first run hashes, so
# quick mode's 256 MB give less than full mode's 2 GB; a lost memo brings it to about 1x.
DEEP = Gate("health --deep: throughput / all-core hashlib's", goal=0.85, alarm=0.75)
MEMO = Gate("health --deep: memo'd run speed-up", goal=50.0, alarm=10.0)
PAIRS = 7


def _safetensors(data: bytes) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


@pytest.fixture(scope="module")
def deep_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("deep") / "hub"
    for i in range(MODELS):
        files = gen.mlx_chat_model_files(tensors=4)
        files["model.safetensors"] = _safetensors(os.urandom(WEIGHT_MIB << 20))
        gen.add_model(hub, f"bench/Model-{i}", files, real_hash=True)
    return hub


def _blobs(hub: Path) -> list[Path]:
    return sorted(p for p in hub.glob("models--*/blobs/*") if p.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def test_hashlib_all_cores(benchmark, deep_cache: Path, medians: Medians) -> None:
    blobs = _blobs(deep_cache)

    def run() -> None:
        with ThreadPoolExecutor(default_jobs()) as pool:
            list(pool.map(_sha256, blobs))

    run()  # page cache warm
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    medians.record("all-cores", benchmark)


def test_sha256sum(benchmark, deep_cache: Path, medians: Medians) -> None:
    cmd = ["sha256sum", *map(str, _blobs(deep_cache))]
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"stdout": subprocess.DEVNULL, "check": True}, rounds=ROUNDS, iterations=1)  # fmt: skip
    medians.record("sha256sum", benchmark)


@pytest.mark.parametrize("memo", ["no-memo", "memo"])
def test_deep_in_process(benchmark, deep_cache: Path, tmp_path: Path, medians: Medians, memo: str) -> None:
    location = CacheLocation(str(deep_cache), str(tmp_path / "memo") if memo == "memo" else None)
    first = check_health(location, deep=DeepOptions())  # fills the memo when there is one
    assert first.unhealthy_count == 0 and first.deep is not None
    result = benchmark.pedantic(check_health, args=(location,), kwargs={"deep": DeepOptions()}, rounds=ROUNDS, iterations=1)  # fmt: skip
    assert result.deep is not None and (result.deep.files_hashed == 0) == (memo == "memo")
    medians.record(f"deep-{memo}", benchmark)


def test_deep_process(benchmark, deep_cache: Path, tmp_path: Path, medians: Medians) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(deep_cache), MLXK_CACHE_DIR=str(tmp_path / "memo"))
    cmd = [sys.executable, "-m", "mlxk", "health", "--deep", "--no-memo", "--json"]
    benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"env": env, "stdout": subprocess.DEVNULL, "check": True}, rounds=ROUNDS, iterations=1)  # fmt: skip
    medians.record("deep-process", benchmark)


def test_goals(medians: Medians, deep_cache: Path, tmp_path: Path) -> None:
    total = sum(p.stat().st_size for p in _blobs(deep_cache))
    if {"all-cores", "deep-no-memo", "deep-memo", "deep-process", "sha256sum"} <= set(medians.values):
        print(
            f"\n{total / 1e9:.2f} GB (medians): all cores {total / medians.values['all-cores'] / 1e6:.0f} MB/s, "
            f"deep {total / medians.values['deep-no-memo'] / 1e6:.0f} MB/s, "
            f"process {total / medians.values['deep-process'] / 1e6:.0f} MB/s, "
            f"sha256sum {total / medians.values['sha256sum'] / 1e6:.0f} MB/s"
        )
    blobs = _blobs(deep_cache)
    no_memo = CacheLocation(str(deep_cache), None)
    memo = CacheLocation(str(deep_cache), str(tmp_path / "memo"))
    check_health(memo, deep=DeepOptions())  # fills the memo
    again = check_health(memo, deep=DeepOptions()).deep
    assert again is not None and again.files_hashed == 0

    def all_cores() -> None:
        with ThreadPoolExecutor(default_jobs()) as pool:
            list(pool.map(_sha256, blobs))

    deep = timed(lambda: check_health(no_memo, deep=DeepOptions()))
    memo_run = timed(lambda: check_health(memo, deep=DeepOptions()))
    enforce(DEEP, lambda: median_ratio(timed(all_cores), deep, PAIRS))
    enforce(MEMO, lambda: median_ratio(deep, memo_run, PAIRS))
