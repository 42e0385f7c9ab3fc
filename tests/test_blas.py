"""The BLAS MLX multiplies with on Linux CPU (mlxk.core.blas): which one is planned, that loading it
makes libmlx bind to it, and that its products equal numpy's float64 ones within float tolerance.

Each scenario that loads a library runs in a fresh interpreter: a process binds its BLAS once,
when mlx.core is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxk.core.blas import available_cores, blas_plan, default_threads, library_dirs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS choice is Linux's")


def run_python(code: str, **env: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLXK_BLAS", "OPENBLAS_"))}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def scipy_openblas_ready() -> bool:
    plan = blas_plan({})
    return plan.source == "scipy-openblas32"


needs_openblas = pytest.mark.skipif(
    not scipy_openblas_ready(), reason="scipy-openblas32 or mlxk's CBLAS forwarder is missing"
)

LOAD_AND_REPORT = """
    import json
    from mlxk.core.blas import ensure_blas, cblas_provider
    plan = ensure_blas()
    import mlx.core as mx
    a = mx.ones((64, 64))
    total = (a @ a).sum().item()
    print(json.dumps({"library": plan.library, "source": plan.source, "path": plan.path,
                      "threads": plan.threads, "reason": plan.reason, "loaded": plan.loaded,
                      "provider": cblas_provider(), "total": total}))
"""


# ---- the plan: files only --------------------------------------------------------------------


def test_macos_keeps_accelerate() -> None:
    plan = blas_plan({}, platform="darwin")
    assert (plan.library, plan.path) == ("accelerate", None)


def test_reference_setting_loads_nothing() -> None:
    plan = blas_plan({"MLXK_BLAS": "reference"})
    assert (plan.library, plan.path, plan.reason) == ("reference", None, "MLXK_BLAS=reference")


@pytest.mark.parametrize("value", ["openblas", "relative/lib.so", "/no/such/libopenblas.so"])
def test_a_setting_that_names_no_library_is_reported(value: str) -> None:
    plan = blas_plan({"MLXK_BLAS": value})
    assert plan.library == "reference" and plan.path is None
    assert repr(value) in plan.reason


@needs_openblas
def test_auto_picks_scipy_openblas_through_the_forwarder() -> None:
    plan = blas_plan({})
    assert plan.library == "openblas" and plan.path is not None and plan.forwarder is not None
    assert Path(plan.path).name.startswith("libscipy_openblas")
    assert Path(plan.forwarder).name.startswith("_cblas_forward")


def test_without_compiled_code_a_system_library_is_found(tmp_path: Path) -> None:
    """MLXK_NO_EXTENSIONS=1 (as a build without a compiler) cannot use the forwarder: a system
    OpenBLAS is looked for, first on LD_LIBRARY_PATH."""
    (tmp_path / "libopenblas.so.0").write_bytes(b"")
    plan = blas_plan({"MLXK_NO_EXTENSIONS": "1", "LD_LIBRARY_PATH": str(tmp_path)})
    assert (plan.library, plan.source, plan.path) == (
        "openblas",
        "system",
        str(tmp_path / "libopenblas.so.0"),
    )
    assert library_dirs({"LD_LIBRARY_PATH": str(tmp_path)})[0] == str(tmp_path)


def test_threads_follow_the_cores_unless_the_user_set_them() -> None:
    if blas_plan({}).threads is None:
        pytest.skip("no BLAS whose threads mlxk sets")
    assert default_threads() == max(1, available_cores() - 1)
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    assert blas_plan({}).threads == default_threads()
    assert blas_plan({"OPENBLAS_NUM_THREADS": "1"}).threads == 1


def test_version_reports_the_plan_without_importing_mlx() -> None:
    code = """
        import json, sys
        from mlxk.ops.version import version_info
        from mlxk.output.contract import version_data
        data = version_data(version_info(True))
        print(json.dumps({**data["blas"], "mlx": "mlx" in sys.modules}))
    """
    reported = run_python(code, MLXK_BLAS="reference")
    assert reported["library"] == "reference" and reported["mlx"] is False
    plan = blas_plan({})
    reported = run_python(code)
    assert (reported["library"], reported["path"], reported["threads"]) == (
        plan.library,
        plan.path,
        plan.threads,
    )


# ---- loading: what libmlx binds to ----------------------------------------------------------


@needs_openblas
def test_loading_makes_libmlx_bind_the_forwarder() -> None:
    plan = blas_plan({})
    result = run_python(LOAD_AND_REPORT)
    assert result["loaded"] is True and result["library"] == "openblas"
    assert plan.forwarder is not None and os.path.samefile(str(result["provider"]), plan.forwarder)
    assert result["total"] == 64.0**3
    assert result["threads"] == default_threads()


@needs_openblas
def test_the_user_thread_count_is_kept() -> None:
    code = """
        import ctypes, json
        from mlxk.core.blas import ensure_blas
        plan = ensure_blas()
        lib = ctypes.CDLL(plan.path)
        print(json.dumps({"threads": plan.threads, "actual": lib.scipy_openblas_get_num_threads()}))
    """
    assert run_python(code, OPENBLAS_NUM_THREADS="1") == {"threads": 1, "actual": 1}
    assert run_python(code) == {"threads": default_threads(), "actual": default_threads()}
    assert run_python(code, OPENBLAS_NUM_THREADS="2") == {"threads": 2, "actual": 2}


def test_reference_setting_keeps_the_bundled_blas() -> None:
    result = run_python(LOAD_AND_REPORT, MLXK_BLAS="reference")
    assert result["loaded"] is False and result["total"] == 64.0**3
    assert result["provider"] is None  # nothing in the global scope: libmlx keeps its own libblas


def test_a_library_that_cannot_load_leaves_the_reference(tmp_path: Path) -> None:
    broken = tmp_path / "libopenblas.so.0"
    broken.write_bytes(b"not an ELF file")
    result = run_python(LOAD_AND_REPORT, MLXK_BLAS=str(broken))
    assert result["library"] == "reference" and result["loaded"] is False
    assert "cannot load" in str(result["reason"]) and result["total"] == 64.0**3


def test_too_late_when_mlx_was_imported_first() -> None:
    code = """
        import json
        import mlx.core
        from mlxk.core.blas import ensure_blas
        plan = ensure_blas()
        print(json.dumps({"library": plan.library, "reason": plan.reason}))
    """
    result = run_python(code)
    if blas_plan({}).path is not None:
        assert result["library"] == "reference" and "imported before" in str(result["reason"])


def test_a_system_openblas_is_loaded_when_present() -> None:
    plan = blas_plan({"MLXK_NO_EXTENSIONS": "1"})
    if plan.source != "system":
        pytest.skip("no system OpenBLAS, BLIS or MKL here")
    result = run_python(LOAD_AND_REPORT, MLXK_NO_EXTENSIONS="1")
    assert result["loaded"] is True and result["path"] == plan.path
    assert os.path.samefile(str(result["provider"]), str(plan.path))


# ---- the products: equal to float64 numpy within float tolerance ---------------------------

PRODUCTS = """
    import json, sys
    import numpy as np
    from mlxk.core.blas import ensure_blas
    plan = ensure_blas()
    import mlx.core as mx
    rng = np.random.default_rng(7)
    worst = {}

    def check(name, a, b, dtype):
        # a and b are numpy float64/complex128 arrays; MLX gets them in dtype, maybe transposed or strided
        want = np.matmul(a, b)
        got = np.array(mx.matmul(*OPERANDS(a, b, dtype)), dtype=want.dtype)
        scale = np.matmul(np.abs(a), np.abs(b)) + 1e-30  # the error bound of a sum of products
        err = float(np.max(np.abs(got - want) / scale))
        worst[name] = max(worst.get(name, 0.0), err)

    MX = {np.float32: mx.float32, np.float64: mx.float64, np.complex64: mx.complex64}

    def OPERANDS(a, b, dtype):  # MLX reads float64 numpy arrays as float32 unless told
        return mx.array(a.astype(dtype), dtype=MX[dtype]), mx.array(b.astype(dtype), dtype=MX[dtype])

    shapes = [(1, 1, 1), (1, 384, 1536), (7, 3, 5), (16, 384, 1152), (33, 65, 17), (128, 1, 128),
              (256, 384, 1536), (3, 1024, 2), (257, 129, 63)]
    for m, k, n in shapes:
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        check("f32", a, b, np.float32)
        check("f64", a, b, np.float64)
        check("c64", a + 1j * rng.standard_normal((m, k)), b - 1j * rng.standard_normal((k, n)), np.complex64)
        # transposed operands: MLX passes them to the BLAS as transposes, not copies
        at, bt = rng.standard_normal((k, m)), rng.standard_normal((n, k))
        got = np.array(mx.matmul(mx.array(at.astype(np.float32)).T, mx.array(bt.astype(np.float32)).T))
        err = np.max(np.abs(got - at.T @ bt.T) / (np.abs(at.T) @ np.abs(bt.T) + 1e-30))
        worst["transposed"] = max(worst.get("transposed", 0.0), float(err))
        # strided operands: every other row and column of larger arrays
        big_a, big_b = rng.standard_normal((2 * m, 2 * k)), rng.standard_normal((2 * k, 3 * n))
        xa, xb = mx.array(big_a.astype(np.float32)), mx.array(big_b.astype(np.float32))
        got = np.array(mx.matmul(xa[::2, ::2], xb[::2, ::3]))
        want = big_a[::2, ::2] @ big_b[::2, ::3]
        err = np.max(np.abs(got - want) / (np.abs(big_a[::2, ::2]) @ np.abs(big_b[::2, ::3]) + 1e-30))
        worst["strided"] = max(worst.get("strided", 0.0), float(err))
    # batched products, with broadcasting and addmm (a bias added by the BLAS call)
    for batch, m, k, n in [(4, 16, 32, 16), (2, 1, 64, 7), (12, 33, 32, 33)]:
        a, b = rng.standard_normal((batch, m, k)), rng.standard_normal((batch, k, n))
        check("batched", a, b, np.float32)
        w = rng.standard_normal((k, n))
        check("broadcast", a, w, np.float32)
        bias = rng.standard_normal(n)
        got = np.array(mx.addmm(mx.array(bias.astype(np.float32)), mx.array(a.astype(np.float32)),
                                mx.array(w.astype(np.float32))))
        err = np.max(np.abs(got - (a @ w + bias)) / (np.abs(a) @ np.abs(w) + np.abs(bias) + 1e-30))
        worst["addmm"] = max(worst.get("addmm", 0.0), float(err))
    print(json.dumps({"loaded": plan.loaded, "worst": worst}))
"""
# relative to the sum of |products|: float32 accumulation over up to 1536 terms stays far below this
TOLERANCE = {"f64": 1e-13}
F32_TOLERANCE = 1e-5


@pytest.mark.parametrize("setting", ["auto", "reference", "system"])
def test_products_equal_float64_numpy(setting: str) -> None:
    env = {"MLXK_BLAS": "auto" if setting == "system" else setting}
    if setting == "system":  # without mlxk's compiled code: a system library, if there is one
        env["MLXK_NO_EXTENSIONS"] = "1"
        if blas_plan(env).source != "system":
            pytest.skip("no system OpenBLAS, BLIS or MKL here")
    elif setting == "auto" and blas_plan({}).path is None:
        pytest.skip("no optimized BLAS to compare")
    result = run_python(PRODUCTS, **env)
    assert result["loaded"] is (setting != "reference")
    worst = result["worst"]
    assert isinstance(worst, dict)
    assert set(worst) == {"f32", "f64", "c64", "transposed", "strided", "batched", "broadcast", "addmm"}
    for name, err in worst.items():
        assert err < TOLERANCE.get(name, F32_TOLERANCE), (name, err)


@pytest.mark.parametrize("value", ["openblas", "NAME_OF_BROKEN"])
def test_a_setting_that_does_not_take_is_said_once(tmp_path: Path, value: str) -> None:
    broken = tmp_path / "libopenblas.so.0"
    broken.write_bytes(b"not an ELF file")
    setting = str(broken) if value == "NAME_OF_BROKEN" else value
    code = "from mlxk.core.blas import ensure_blas\nensure_blas()\nensure_blas()\n"
    env = {k: v for k, v in os.environ.items() if k != "MLXK_BLAS"} | {"MLXK_BLAS": setting}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    assert proc.stderr.count("MLX keeps its reference BLAS") == 1 and setting in proc.stderr
