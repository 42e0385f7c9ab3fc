"""What mlxk.core.blas falls back to where the machine gives less: no CPU affinity call, CPUs without
a topology in sysfs, and no optimized BLAS at all, each with the reason the plan gives.

What cannot be produced on this machine is faked, and only that: ``os.sched_getaffinity`` missing
(macOS) or naming CPUs sysfs does not describe (a container with a partial /sys), and a package or
compiled module that is not installed, hidden the way Python's import system knows (a ``None`` entry in
``sys.modules`` makes ``importlib.util.find_spec`` answer None, as for a module that does not exist).
"""

from __future__ import annotations

import os
import sys

import pytest

from mlxk.core.blas import available_cores, blas_plan, default_threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS choice is Linux's")

NO_SUCH_CPU = 1 << 20  # far beyond any CPU sysfs describes


def test_without_an_affinity_call_every_cpu_of_the_machine_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity")
    assert available_cores() == (os.cpu_count() or 1)


def test_an_affinity_call_that_fails_counts_every_cpu_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int) -> set[int]:
        raise PermissionError("sched_getaffinity refused")

    monkeypatch.setattr(os, "sched_getaffinity", refuse)
    assert available_cores() == (os.cpu_count() or 1)


@pytest.mark.parametrize("unknown", [1, 2, 3])
def test_a_cpu_without_a_topology_counts_as_a_core_of_its_own(
    monkeypatch: pytest.MonkeyPatch, unknown: int
) -> None:
    cpus = {NO_SUCH_CPU + i for i in range(unknown)}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    assert available_cores() == unknown
    assert default_threads() == max(1, unknown - 1)  # one core is left for MLX's other stream


def test_a_cpu_without_a_topology_adds_to_those_that_have_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sorted(os.sched_getaffinity(0))[0]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {real, NO_SUCH_CPU})
    assert available_cores() == 2


def mlx_cpu_wheel_without_a_system_blas() -> None:
    """The 'no optimized BLAS' reasons exist on the mlx-cpu wheel only, and where no system
    OpenBLAS, BLIS or MKL would be found first."""
    plan = blas_plan({"MLXK_NO_EXTENSIONS": "1"})
    if plan.source == "system":
        pytest.skip(f"a system BLAS is installed here ({plan.path})")
    if plan.source != "mlx" or plan.library != "reference":
        pytest.skip(f"not MLX's CPU wheel: {plan.reason}")


@pytest.fixture
def environ() -> dict[str, str]:
    mlx_cpu_wheel_without_a_system_blas()
    return {"LD_LIBRARY_PATH": ""}


def test_without_compiled_code_and_no_system_blas_mlx_keeps_its_reference(environ: dict[str, str]) -> None:
    plan = blas_plan({**environ, "MLXK_NO_EXTENSIONS": "1"})
    assert (plan.library, plan.source, plan.path, plan.forwarder) == ("reference", "mlx", None, None)
    assert plan.reason == (
        "no optimized BLAS: MLXK_NO_EXTENSIONS=1 leaves out mlxk's CBLAS forwarder, none on the system"
    )
    assert plan.warning is None  # nothing the user asked for was refused


def test_an_unbuilt_forwarder_and_no_system_blas_keep_the_reference(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlxk.core._cblas_forward", None)  # a build without a compiler
    plan = blas_plan(environ)
    assert (plan.library, plan.path) == ("reference", None)
    assert plan.reason == "no optimized BLAS: mlxk's CBLAS forwarder is not built, none on the system"


def test_without_scipy_openblas32_and_no_system_blas_keep_the_reference(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)  # the package is not installed
    plan = blas_plan(environ)
    assert (plan.library, plan.path) == ("reference", None)
    assert plan.reason == "no optimized BLAS: scipy-openblas32 is not installed, none on the system"


def test_without_mlx_nothing_is_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx", None)  # mlx is not installed (mlxk's cache commands need none)
    plan = blas_plan({})
    assert (plan.library, plan.source, plan.path, plan.reason) == (
        "none",
        "none",
        None,
        "mlx is not installed",
    )
