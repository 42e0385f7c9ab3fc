"""Performance gates: a regression alarm in quick mode (CI), the project's goal in full mode.

Each gate compares two sides measured in the same run, never an absolute time. The sides run in
pairs, back to back, in alternating order (A B, B A, A B, ...), and the gate's value is the median
of the per-pair ratios (or differences): a burst of load from elsewhere on the machine spoils a
pair or two, not one side of the comparison, and the median leaves those pairs out.

Quick mode (``MLXK_BENCH_QUICK=1``, what CI runs) checks the *alarm*: a limit far enough from what
a busy 2-core machine measures that only a real regression trips it (a path twice as slow, a lost
native speed-up, a lost memo). Full mode checks the *goal*. When a measurement misses its limit,
the gate measures afresh (a bounded number of times) and passes only if a fresh measurement meets
it; every measurement is reported in the session summary (``gate_rows``), so a retry is visible.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

QUICK = os.environ.get("MLXK_BENCH_QUICK") == "1"
RETRIES = 1  # fresh measurements after a miss; more rounds per measurement come first

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


@dataclass(frozen=True)
class Gate:
    """A limit per mode; None: measured and reported in that mode, not enforced (a goal whose
    measure a busy machine spoils has an alarm of another measure beside it)."""

    name: str
    goal: float | None  # full mode's limit
    alarm: float | None  # quick mode's limit
    higher_is_better: bool = True
    unit: str = "x"  # "x": a ratio; "ms": a difference in milliseconds

    @property
    def limit(self) -> float | None:
        return self.alarm if QUICK else self.goal

    def meets(self, value: float, limit: float) -> bool:
        return value >= limit if self.higher_is_better else value <= limit

    def show(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:+.1f} ms" if self.unit == "ms" else f"{value:.2f}x"


@dataclass
class Verdict:
    gate: Gate
    values: list[float] = field(default_factory=list)  # every measurement, the last one decides

    @property
    def passed(self) -> bool:
        limit = self.gate.limit
        return bool(self.values) and (limit is None or self.gate.meets(self.values[-1], limit))


VERDICTS: list[Verdict] = []


def enforce(gate: Gate, measure: Callable[[], float], retries: int = RETRIES) -> float:
    """Measure ``gate`` and assert its limit; after a miss, measure again (at most ``retries``
    times), and pass only when a fresh measurement meets the limit. Returns the deciding value.
    A gate without a limit in this mode is measured once and reported."""
    verdict = Verdict(gate)
    VERDICTS.append(verdict)
    for _attempt in range(1 + retries):
        verdict.values.append(measure())
        print(f"\n  gate {gate.name}: {gate.show(verdict.values[-1])} (limit {gate.show(gate.limit)})")
        if verdict.passed:
            break
    _save(verdict)
    value = verdict.values[-1]
    sign = ">=" if gate.higher_is_better else "<="
    assert verdict.passed, (
        f"{gate.name}: {gate.show(value)}, not {sign} {gate.show(gate.limit)} ({verdict.values})"
    )
    return value


def paired(first: Callable[[], A], second: Callable[[], B], pairs: int) -> list[tuple[A, B]]:
    """``pairs`` rounds of both sides back to back, the order alternating from pair to pair."""
    rounds: list[tuple[A, B]] = []
    for k in range(pairs):
        if k % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        rounds.append((a, b))
    return rounds


def timed(run: Callable[[], object]) -> Callable[[], float]:
    """``run`` as a measurement of its wall-clock seconds."""

    def measure() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    return measure


def median_ratio(first: Callable[[], float], second: Callable[[], float], pairs: int) -> float:
    """The median over paired rounds of first's value / second's (e.g. their times)."""
    return statistics.median(a / b for a, b in paired(first, second, pairs))


def first_then_fresh(
    first: T, measure: Callable[[], T], statistic: Callable[[T], float]
) -> Callable[[], float]:
    """A gate's measurement from rounds already measured (``first``, shared by several gates),
    and from fresh rounds on every retry."""
    pending = [first]

    def value() -> float:
        return statistic(pending.pop() if pending else measure())

    return value


def gate_rows() -> list[str]:
    """The session's gates as lines of a table: value(s), the limit in force, the goal."""
    mode = "quick: alarm" if QUICK else "full: goal"
    rows = [f"{'gate':52s} {'measured':>22s} {mode:>13s} {'goal':>10s}"]
    for v in VERDICTS:
        values = ", ".join(v.gate.show(x) for x in v.values)
        status = "" if v.passed else "  FAILED"
        goal = v.gate.goal
        met = QUICK and goal is not None and v.gate.meets(v.values[-1], goal)
        goal_note = "  goal met" if met else ""
        rows.append(
            f"{v.gate.name:52s} {values:>22s} {v.gate.show(v.gate.limit):>13s} "
            f"{v.gate.show(goal):>10s}{status}{goal_note}"
        )
    return rows


def _save(verdict: Verdict) -> None:
    """One JSON line per gate to ``$MLXK_BENCH_GATES`` when set (to compare runs over time)."""
    path = os.environ.get("MLXK_BENCH_GATES")
    if not path:
        return
    gate = verdict.gate
    line = {
        "gate": gate.name,
        "values": verdict.values,
        "limit": gate.limit,
        "goal": gate.goal,
        "quick": QUICK,
        "passed": verdict.passed,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
