"""The BLAS plan on MLX installs other than the mlx-cpu wheel, and a MLXK_BLAS library that loads but
does not take (mlxk.core.blas). Each runs in a fresh interpreter: the plan looks at the folders the
interpreter finds ``mlx`` in, and a process binds its BLAS once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxk.core.blas import blas_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS choice is Linux's")

PLAN = """
    import json, sys
    sys.path.insert(0, sys.argv[1])  # the site folder under test is searched first
    from mlxk.core.blas import blas_plan
    plan = blas_plan({})
    print(json.dumps({"library": plan.library, "source": plan.source, "path": plan.path, "reason": plan.reason}))
"""


def plan_in(site: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "MLXK_BLAS"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PLAN), str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def fake_mlx(site: Path, *libs: str) -> None:
    (site / "mlx").mkdir(parents=True)
    (site / "mlx" / "__init__.py").write_text("")
    for lib in libs:
        (site / lib).parent.mkdir(parents=True, exist_ok=True)
        (site / lib).write_bytes(b"")


def test_mlx_cuda_builds_multiply_on_the_gpu(tmp_path: Path) -> None:
    fake_mlx(tmp_path, "mlx_cuda13.libs/libcudart.so")
    plan = plan_in(tmp_path)
    assert (plan["library"], plan["path"]) == ("reference", None)
    assert "CUDA" in str(plan["reason"])


def test_an_mlx_not_from_the_cpu_wheel_is_left_as_built(tmp_path: Path) -> None:
    fake_mlx(tmp_path, "mlx_cpu.libs/README")  # a libs folder without MLX's bundled libblas
    plan = plan_in(tmp_path)
    assert (plan["library"], plan["source"], plan["path"]) == ("none", "mlx", None)
    assert "left as built" in str(plan["reason"])


def test_no_backend_outside_linux_and_macos() -> None:
    plan = blas_plan({}, platform="win32")
    assert (plan.library, plan.path, plan.reason) == ("none", None, "no MLX backend on win32")


def loaded_libc() -> str:
    """The C library this process runs on: a real shared library without any CBLAS names."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libc.so") or os.path.basename(path).startswith("libc-"):
                return path
    pytest.skip("no libc found in /proc/self/maps")


def test_a_library_without_cblas_does_not_take_and_says_so() -> None:
    code = """
        import json
        from mlxk.core.blas import ensure_blas
        plan = ensure_blas()
        ensure_blas()
        import mlx.core as mx
        a = mx.ones((64, 64))
        print(json.dumps({"library": plan.library, "loaded": plan.loaded, "reason": plan.reason,
                          "total": (a @ a).sum().item()}))
    """
    libc = loaded_libc()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXK_BLAS")} | {"MLXK_BLAS": libc}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["library"] == "reference" and result["loaded"] is False
    assert f"not {libc}" in result["reason"]
    assert result["total"] == 64.0**3  # MLX multiplies with its reference BLAS
    assert proc.stderr.count("MLX keeps its reference BLAS") == 1 and libc in proc.stderr
