"""Whole processes, as a user runs them: ``mlxk list/health --json`` vs ``find -L``,
``scan_cache_dir()``, and ``mlxk --version`` vs ``python -c pass``.

Goals (10,000 models, warm page cache): list <= 1.5x find, >= 10x faster than scan_cache_dir;
health <= 3x find; --version <= 60 ms over bare Python. The gates at the end enforce them on paired
rounds (see the gates' comments for what is enforced where). The memo rows show a second run
(unchanged cache); the no-memo rows show every safetensors header read and validated.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.conftest import QUICK, ROUNDS, SIZES, Medians, cache_of, mlxk_command, process_env
from benchmarks.gates import Gate, enforce, first_then_fresh, median_ratio, paired, timed


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


def test_ratio_table(medians: Medians) -> None:
    """For the docs' table, not a gate: ratios of the medians recorded above."""
    models = SIZES[-1]
    if f"list-no-memo-{models}" not in medians.values:
        pytest.skip("run the whole module: the table needs the medians its other benchmarks record")
    rows = {
        "list/find": medians.ratio(f"list-memo-{models}", f"find-{models}"),
        "list(no memo)/find": medians.ratio(f"list-no-memo-{models}", f"find-{models}"),
        "health/find": medians.ratio(f"health-memo-{models}", f"find-{models}"),
        "health(no memo)/find": medians.ratio(f"health-no-memo-{models}", f"find-{models}"),
        "hf/list": medians.ratio(f"hf-{models}", f"list-memo-{models}"),
        "twin/native": medians.ratio(f"list-memo-python-{models}", f"list-memo-{models}"),
        "version - python (ms)": (medians.values["version"] - medians.values["python"]) * 1000,
    }
    print(f"\n{models} models, ratios of medians (the gates below decide on paired rounds):")
    print("\n".join(f"  {k}: {v:.2f}" for k, v in rows.items()))


# Gates, on paired rounds of whole processes (scan_cache_dir in process). Full mode holds the
# issue's goals at 10,000 models where they are reached; the scan_cache_dir goal (>= 10x) is not
# reachable on this layout (scan_cache_dir takes about 5x `find`, and mlxk list cannot do less than
# stat what find stats), so its limit is where mlxk lands, to catch regressions. Quick mode (1,000
# models, CI) carries the fixed start-up cost of the interpreter and cleo (~70 ms), and on a busy
# 2 cores mlxk's two scan threads share one core while `find` needs only one: its alarms sit
# above what such a machine measures, below what a path twice as slow would.
LIST = Gate("mlxk list / find -L (memo warm)", goal=1.5, alarm=5.0, higher_is_better=False)
HEALTH = Gate("mlxk health / find -L (memo warm)", goal=3.0, alarm=6.0, higher_is_better=False)
HF = Gate("scan_cache_dir() / mlxk list", goal=3.0, alarm=1.2)
# With the memo warm the native core's lead at 1,000 models is small next to process start-up, and
# a busy machine takes its two threads away (1.1x measured): quick mode's alarm for a CLI that
# lost its native core is the no-memo list, where the core parses every header (2.4x-3.6x busy;
# with the core switched off it measured 1.03x, then 1.31x).
TWIN = Gate("mlxk list: pure-Python twin / native (memo warm)", goal=1.5, alarm=None)
TWIN_COLD = Gate("mlxk list --no-memo: pure-Python twin / native", goal=None, alarm=1.7)
# Start-up in milliseconds grows with the machine's load (+350 ms measured at a load of 11 on 2
# cores): quick mode's alarm is the ratio (importing mlx-lm or huggingface_hub at start-up would
# multiply it), full mode's goal the milliseconds.
VERSION = Gate("mlxk --version - python -c pass", goal=60.0, alarm=None, higher_is_better=False, unit="ms")
VERSION_RATIO = Gate("mlxk --version / python -c pass", goal=None, alarm=6.0, higher_is_better=False)
PAIRS = 9
SLOW_PAIRS = 7 if QUICK else 5  # pairs with the twin or scan_cache_dir on one side (seconds each at 10k)


def _timed_run(cmd: list[str], env: dict[str, str] | None = None) -> Callable[[], float]:
    return timed(lambda: run_quietly(cmd, env))


def _list(bench_root: Path, command: str = "list", *options: str, **extra: str) -> Callable[[], float]:
    """One timed ``mlxk <command> --json`` on the biggest cache (the memo filled here, checked once)."""
    hub = cache_of(bench_root, SIZES[-1])
    env = process_env(hub, bench_root / "memo", **extra)
    args = mlxk_command(command, "--json", *options)
    proc = subprocess.run(args, capture_output=True, env=env, check=False)  # also fills the memo
    assert proc.returncode == 0 and b'"status":"success"' in proc.stdout, proc.stderr
    return _timed_run(args, env)


def _find(bench_root: Path) -> Callable[[], float]:
    return _timed_run(["find", "-L", str(cache_of(bench_root, SIZES[-1])), "-printf", "%s\n"])


def test_gate_list_vs_find(bench_root: Path) -> None:
    enforce(LIST, lambda: median_ratio(_list(bench_root), _find(bench_root), PAIRS))


def test_gate_health_vs_find(bench_root: Path) -> None:
    enforce(HEALTH, lambda: median_ratio(_list(bench_root, "health"), _find(bench_root), PAIRS))


def test_gate_scan_cache_dir_vs_list(bench_root: Path) -> None:
    from huggingface_hub import scan_cache_dir

    hub = cache_of(bench_root, SIZES[-1])
    scan = timed(lambda: scan_cache_dir(hub))
    enforce(HF, lambda: median_ratio(scan, _list(bench_root), SLOW_PAIRS))


@pytest.mark.parametrize("gate", [TWIN, TWIN_COLD], ids=["memo", "no-memo"])
def test_gate_twin_vs_native(bench_root: Path, gate: Gate) -> None:
    if gate.limit is None:
        pytest.skip("not gated in this mode")
    options = () if gate is TWIN else ("--no-memo",)
    twin = _list(bench_root, "list", *options, MLXK_NO_EXTENSIONS="1")
    enforce(gate, lambda: median_ratio(twin, _list(bench_root, "list", *options), SLOW_PAIRS))


def test_gate_version_vs_python() -> None:
    version = _timed_run(mlxk_command("--version"))
    python = _timed_run([sys.executable, "-c", "pass"])
    rounds = paired(version, python, PAIRS * 2)

    def fresh() -> list[tuple[float, float]]:
        return paired(version, python, PAIRS * 2)

    def overhead_ms(rounds: list[tuple[float, float]]) -> float:
        return statistics.median((v - p) * 1000 for v, p in rounds)

    def ratio(rounds: list[tuple[float, float]]) -> float:
        return statistics.median(v / p for v, p in rounds)

    enforce(VERSION, first_then_fresh(rounds, fresh, overhead_ms))
    enforce(VERSION_RATIO, first_then_fresh(rounds, fresh, ratio))
