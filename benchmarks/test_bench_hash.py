"""Content hashing throughput: native HashJob vs its twin vs hashlib on one core and on all cores.

The files (full mode: 3 x 512 MiB + 200 x 2.5 MiB, about 2 GB; quick mode: about 256 MB) hold
real random bytes and sit in page cache, so every measurement is hashing plus copying out of the
cache. The reference is hashlib sha256 with one thread per core pulling files biggest first (the
all-core limit of the machine for this work); ``sha256sum`` shows where a plain tool stands.

The machine is shared: the gates at the end time the native and twin HashJob in pairs with the
all-core limit (back to back, alternating order), so a burst of load from elsewhere hits both
sides of a ratio alike.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import threading
from pathlib import Path

import pytest

from benchmarks.conftest import QUICK, ROUNDS, Medians
from benchmarks.gates import Gate, enforce, median_ratio, timed
from mlxk.core import Core, implementation
from mlxk.core.codes import ALGO_SHA256, HASH_CHUNK
from mlxk.core.twin.hashing import default_jobs

NATIVE: Core | None
try:
    NATIVE = implementation(native=True)
except ImportError:
    NATIVE = None

BIG = (3, 64 << 20) if QUICK else (3, 512 << 20)  # (count, size)
SMALL = (25, 5 << 19) if QUICK else (200, 5 << 19)  # 2.5 MiB each
BLOCK = 16 << 20
# hashing on one core instead of all gives about 0.5; a busy machine measured 0.8-1.4
NATIVE_VS_LIMIT = Gate("HashJob native: throughput / all-core hashlib's", goal=0.85, alarm=0.65)
TWIN_VS_LIMIT = Gate("HashJob twin: throughput / all-core hashlib's", goal=0.6, alarm=0.6)
HASH_ROUNDS = max(ROUNDS, 5)  # a quick-mode round is ~0.1 s: five of them cost little
PAIRS = 7


@pytest.fixture(scope="module")
def files(bench_root: Path) -> list[str]:
    """The paths, biggest first, written once and read once (page cache)."""
    folder = bench_root / "hash"
    folder.mkdir(exist_ok=True)
    block = os.urandom(BLOCK)
    paths = []
    for kind, (count, size) in (("big", BIG), ("small", SMALL)):
        for k in range(count):
            path = folder / f"{kind}{k:03d}"
            with open(path, "wb") as fh:
                written = 0
                while written < size:
                    piece = block[: min(BLOCK, size - written)]
                    fh.write(b"%-8s%08d" % (kind.encode(), k) + piece[16:])  # distinct contents
                    written += len(piece)
            paths.append(str(path))
    hashlib_one_core(paths)  # warm
    return paths


def total_bytes(paths: list[str]) -> int:
    return sum(os.path.getsize(p) for p in paths)


def _hash_file(path: str, buffer: bytearray) -> str:
    digest = hashlib.sha256()
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def hashlib_one_core(paths: list[str]) -> list[str]:
    buffer = bytearray(HASH_CHUNK)
    return [_hash_file(p, buffer) for p in paths]


def hashlib_all_cores(paths: list[str]) -> list[str]:
    """One thread per core, each taking the next file (biggest first, as HashJob does)."""
    digests: list[str] = [""] * len(paths)
    order = sorted(range(len(paths)), key=lambda i: -os.path.getsize(paths[i]))
    taken = itertools.count()

    def work() -> None:
        buffer = bytearray(HASH_CHUNK)
        while (k := next(taken)) < len(order):
            digests[order[k]] = _hash_file(paths[order[k]], buffer)

    threads = [threading.Thread(target=work) for _ in range(min(default_jobs(), len(paths)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return digests


def hash_job(module: Core, paths: list[str]) -> list[str | None]:
    results = module.HashJob(paths, [ALGO_SHA256] * len(paths)).run()
    assert all(r[0] == 0 for r in results)
    return [r[1] for r in results]


def sha256sum(paths: list[str]) -> None:
    subprocess.run(["sha256sum", "--", *paths], stdout=subprocess.DEVNULL, check=True)


def test_hashlib_one_core(benchmark, files: list[str], medians: Medians) -> None:
    benchmark.pedantic(hashlib_one_core, args=(files,), rounds=HASH_ROUNDS, iterations=1)
    medians.record("hashlib-1", benchmark)


def test_hashlib_all_cores(benchmark, files: list[str], medians: Medians) -> None:
    digests = benchmark.pedantic(hashlib_all_cores, args=(files,), rounds=HASH_ROUNDS, iterations=1)
    assert digests[-3:] == hashlib_one_core(files[-3:])
    medians.record("hashlib-all", benchmark)


def test_native_hash_job(benchmark, files: list[str], medians: Medians) -> None:
    if NATIVE is None:
        pytest.skip("native core not built")
    from mlxk.core import _native

    if not _native.native_hashing_available():
        pytest.skip("the native core has no libcrypto here (it runs the twin)")
    digests = benchmark.pedantic(hash_job, args=(NATIVE, files), rounds=HASH_ROUNDS, iterations=1)
    assert digests[-3:] == hashlib_one_core(files[-3:])
    medians.record("native", benchmark)


def test_twin_hash_job(benchmark, files: list[str], medians: Medians) -> None:
    digests = benchmark.pedantic(
        hash_job, args=(implementation(native=False), files), rounds=HASH_ROUNDS, iterations=1
    )
    assert digests[-3:] == hashlib_one_core(files[-3:])
    medians.record("twin", benchmark)


def test_sha256sum(benchmark, files: list[str], medians: Medians) -> None:
    benchmark.pedantic(sha256sum, args=(files,), rounds=ROUNDS if QUICK else 3, iterations=1)
    medians.record("sha256sum", benchmark)


def test_ratios(files: list[str], medians: Medians) -> None:
    """The table: medians of the benchmarks above."""
    size = total_bytes(files)
    print(f"\n{len(files)} files, {size / 1e6:.0f} MB, {default_jobs()} cores (medians)")
    for key, median in medians.values.items():
        print(f"  {key:20s} {median * 1e3:8.1f} ms  {size / median / 1e6:8.0f} MB/s")
    if {"native", "hashlib-1", "sha256sum"} <= set(medians.values):
        print(f"  native / one core:       {medians.ratio('hashlib-1', 'native'):.2f}")
        print(f"  native / sha256sum:      {medians.ratio('sha256sum', 'native'):.2f}")


@pytest.mark.parametrize("core", ["native", "twin"])
def test_gate_near_the_limit(files: list[str], core: str) -> None:
    """Regression check: the native HashJob near the all-core limit, the twin not far behind."""
    module, gate = implementation(native=False), TWIN_VS_LIMIT
    if core == "native":
        if NATIVE is None:
            pytest.skip("native core not built")
        from mlxk.core import _native

        if not _native.native_hashing_available():
            pytest.skip("the native core has no libcrypto here (it runs the twin)")
        module, gate = NATIVE, NATIVE_VS_LIMIT
    limit = timed(lambda: hashlib_all_cores(files))
    enforce(gate, lambda: median_ratio(limit, timed(lambda: hash_job(module, files)), PAIRS))
