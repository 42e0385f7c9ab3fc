"""The cache scan itself: native core vs pure-Python twin vs huggingface_hub.scan_cache_dir()."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.conftest import QUICK, ROUNDS, SIZES, Medians, cache_of
from mlxk.core import implementation

try:
    implementation(native=True)
    HAVE_NATIVE = True
except ImportError:
    HAVE_NATIVE = False


@pytest.mark.parametrize("models", SIZES)
@pytest.mark.parametrize("core", ["native", "python"])
def test_scan_cold_memo(benchmark, bench_root: Path, medians: Medians, models: int, core: str) -> None:
    """Every safetensors header read and validated (no memo)."""
    if core == "native" and not HAVE_NATIVE:
        pytest.skip("native core not built")
    # the twin is a fallback: one round at 10k is enough to show the gap
    rounds = 1 if core == "python" and models > 1000 and not QUICK else ROUNDS
    hub = cache_of(bench_root, models)
    scan = implementation(core == "native").scan_cache
    records, fresh = benchmark.pedantic(scan, args=(str(hub), None, b"", 0), rounds=rounds, iterations=1)
    assert len(records) == models and len(fresh) == models + models // 4
    medians.record(f"scan-{core}-{models}", benchmark)


@pytest.mark.parametrize("models", SIZES)
def test_hf_scan_cache_dir(benchmark, bench_root: Path, medians: Medians, models: int) -> None:
    from huggingface_hub import scan_cache_dir

    hub = cache_of(bench_root, models)
    report = benchmark.pedantic(
        scan_cache_dir, args=(hub,), rounds=ROUNDS if models <= 1000 else 3, iterations=1
    )
    assert len(report.repos) == models
    medians.record(f"hf-{models}", benchmark)


def test_ratios(medians: Medians) -> None:
    """Regression check: the native scan must stay well ahead of the twin and the hub's scan."""
    for models in SIZES:
        if f"scan-native-{models}" not in medians.values:
            pytest.skip("native core not built")
        vs_python = medians.ratio(f"scan-python-{models}", f"scan-native-{models}")
        vs_hub = medians.ratio(f"hf-{models}", f"scan-native-{models}")
        print(f"\n{models} models: native is {vs_python:.1f}x the twin, {vs_hub:.1f}x scan_cache_dir")
        assert vs_python >= 3.0
        assert vs_hub >= 3.0
