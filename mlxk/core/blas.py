"""Which BLAS MLX multiplies matrices with on Linux CPU, chosen and loaded before ``mlx.core``.

MLX's Linux CPU wheel (``mlx-cpu``) links the reference BLAS it bundles (``mlx_cpu.libs/libblas``);
``libmlx.so`` leaves ``cblas_sgemm``, ``cblas_dgemm`` and ``cblas_cgemm`` (and LAPACK routines)
undefined and resolves them by name when it is loaded. The dynamic linker looks in the global
symbol scope first, so a library loaded there (``RTLD_GLOBAL``) before ``mlx.core`` is imported
takes the reference BLAS's place: about 20 times faster float32 products on this kind of machine.

The choice, in order: ``MLXK_BLAS=reference`` keeps the reference BLAS; ``MLXK_BLAS=/path/lib.so``
loads that library; otherwise OpenBLAS from the ``scipy-openblas32`` package (a dependency of mlxk
on Linux) through mlxk's CBLAS forwarder (``_native/cblas_forward.c``: that OpenBLAS exports its
symbols with a ``scipy_`` prefix), else a system OpenBLAS, BLIS or MKL. Nothing changes on macOS
(MLX uses Accelerate) nor with MLX's CUDA build (its products run on the GPU), nor for an MLX that
was not installed from the ``mlx-cpu`` wheel.

``blas_plan`` says what would be loaded without loading anything (``mlxk --version`` asks it, and
must not import mlx); ``ensure_blas`` carries the plan out once per process and is called on every
path before its first ``import mlx.core``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

ENV = "MLXK_BLAS"
# library kind -> (environment variables the library reads its thread count from, its setter)
_THREADS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "openblas": (("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"), "openblas_set_num_threads"),
    "blis": (("BLIS_NUM_THREADS", "OMP_NUM_THREADS"), "bli_thread_set_num_threads"),
    "mkl": (("MKL_NUM_THREADS", "OMP_NUM_THREADS"), "MKL_Set_Num_Threads"),
}
# system libraries that define the CBLAS symbols under their plain names (LP64: 32-bit integers,
# as libmlx was built for; the ILP64 builds, libopenblas64 and the like, would not fit)
_SYSTEM_LIBRARIES = (
    ("openblas", "libopenblas.so.0"),
    ("openblas", "libopenblas.so"),
    ("blis", "libblis.so.4"),
    ("blis", "libblis.so"),
    ("mkl", "libmkl_rt.so.2"),
    ("mkl", "libmkl_rt.so"),
)
_FORWARDER = "mlxk.core._cblas_forward"
_SCIPY_PREFIX = "scipy_"


@dataclass(frozen=True, slots=True)
class BlasPlan:
    """The BLAS MLX's CPU products use (or will use, before ``ensure_blas`` ran)."""

    library: str  # openblas, blis, mkl, custom (a MLXK_BLAS path), reference, accelerate, none
    source: str  # scipy-openblas32, system, MLXK_BLAS, mlx (what MLX itself brings), or none
    path: str | None  # the library file loaded into the global scope; None when nothing is loaded
    threads: int | None  # the BLAS's thread count when mlxk sets or knows it
    reason: str  # why this one, in a few words
    forwarder: str | None = None  # mlxk's CBLAS forwarder, when the library needs one
    loaded: bool = False  # True once ensure_blas has put it in place in this process
    warning: str | None = None  # what the user asked for and did not get (a bad MLXK_BLAS, a load failure)


def available_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity, counting the hardware
    threads of one core (SMT siblings, which share its arithmetic units) once."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no CPU affinity call (macOS), or one refused
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id") as package, open(topology + "core_id") as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:
            cores.add((f"cpu{cpu}", ""))  # no topology: count the CPU as a core
    return max(1, len(cores))


def default_threads() -> int:
    """The BLAS threads mlxk sets: one per physical core it may use, less one. The thread that
    calls the BLAS is MLX's CPU stream thread, and it is one of the BLAS's threads; the one core
    left is for MLX's other stream (``mlxk serve`` embeds on one while it generates on another) and
    the Python threads. OpenBLAS's idle threads spin for a while after each product: with every
    core taken, they take turns with MLX's own threads, and each product waits for a thread that
    is not running (measured on 2 cores shared with other work: MiniLM at batch 1 went from 52-60
    sentences/s on one thread to 2-17 on two)."""
    return max(1, available_cores() - 1)


def _thread_count(library: str, environ: Mapping[str, str]) -> tuple[int, bool]:
    """(threads, whether mlxk sets them): the user's own setting for the library wins (the library
    reads it when it loads), else ``default_threads()``."""
    for name in _THREADS.get(library, ((), ""))[0]:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), False
    return default_threads(), True


def _mlx_layout() -> tuple[str, Path | None]:
    """("cpu", its bundled libs folder) for the mlx-cpu wheel, ("cuda", None) for a CUDA build,
    ("none", None) when mlx is not installed, ("other", None) for anything else. Reads folder
    names only: nothing is imported."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return "none", None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    if any(site.glob("mlx_cuda*.libs")):  # mlx-cuda-12, mlx-cuda-13: their own bundled libraries
        return "cuda", None
    libs = site / "mlx_cpu.libs"
    if libs.is_dir() and any(libs.glob("libblas*.so*")):
        return "cpu", libs
    return "other", None


def _scipy_openblas() -> Path | None:
    """libscipy_openblas.so of the installed scipy-openblas32, found without importing the package
    (its __init__ loads the library as a side effect)."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    found = sorted(lib_dir.glob("libscipy_openblas*.so*"))
    return found[0] if found else None


def _forwarder(environ: Mapping[str, str]) -> Path | None:
    """The compiled CBLAS forwarder (absent in a build without a compiler, and not used when
    MLXK_NO_EXTENSIONS=1 asks for no compiled code of mlxk's)."""
    if environ.get("MLXK_NO_EXTENSIONS") == "1":
        return None
    spec = importlib.util.find_spec(_FORWARDER)
    return Path(spec.origin) if spec is not None and spec.origin else None


def library_dirs(environ: Mapping[str, str]) -> list[str]:
    """Where a system BLAS is looked for: LD_LIBRARY_PATH, then the usual system folders."""
    import sysconfig

    dirs = [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if isinstance(multiarch, str) and multiarch:
        dirs += [f"/usr/lib/{multiarch}", f"/lib/{multiarch}"]
    dirs += ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64", "/lib"]
    return list(dict.fromkeys(dirs))


def _system_library(environ: Mapping[str, str]) -> tuple[str, Path] | None:
    for directory in library_dirs(environ):
        for kind, name in _SYSTEM_LIBRARIES:
            path = Path(directory, name)
            if path.is_file():
                return kind, path
    return None


def blas_plan(environ: Mapping[str, str] | None = None, platform: str | None = None) -> BlasPlan:
    """What ``ensure_blas`` would load, found by looking at files only (cheap: no library is
    loaded, mlx is not imported)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return BlasPlan("accelerate", "mlx", None, None, "MLX on macOS multiplies with Accelerate")
    if not platform.startswith("linux"):
        return BlasPlan("none", "none", None, None, f"no MLX backend on {platform}")
    layout, _ = _mlx_layout()
    if layout == "none":
        return BlasPlan("none", "none", None, None, "mlx is not installed")
    if layout == "cuda":
        return BlasPlan("reference", "mlx", None, None, "MLX's CUDA build: products run on the GPU")
    if layout == "other":
        return BlasPlan(
            "none", "mlx", None, None, "MLX was not installed from the mlx-cpu wheel: left as built"
        )
    setting = env.get(ENV, "").strip()
    if setting == "reference":
        return BlasPlan("reference", "mlx", None, None, f"{ENV}=reference")
    if setting not in ("", "auto"):
        path = Path(setting)
        if not path.is_absolute() or not path.is_file():
            problem = f"{ENV}={setting!r} is not auto, reference or the absolute path of a library file"
            return BlasPlan("reference", "mlx", None, None, problem, warning=problem)
        threads, _ = _thread_count("openblas", env)
        return BlasPlan("custom", ENV, str(path), threads, f"{ENV} names it")
    scipy = _scipy_openblas()
    forwarder = _forwarder(env)
    if scipy is not None and forwarder is not None:
        threads, _ = _thread_count("openblas", env)
        return BlasPlan(
            "openblas", "scipy-openblas32", str(scipy), threads, "the OpenBLAS mlxk installs", str(forwarder)
        )
    system = _system_library(env)
    if system is not None:
        kind, path = system
        threads, _ = _thread_count(kind, env)
        why = "found on the system" + ("" if scipy is None else " (without mlxk's CBLAS forwarder)")
        return BlasPlan(kind, "system", str(path), threads, why)
    if scipy is None:
        missing = "scipy-openblas32 is not installed"
    elif env.get("MLXK_NO_EXTENSIONS") == "1":
        missing = "MLXK_NO_EXTENSIONS=1 leaves out mlxk's CBLAS forwarder"
    else:
        missing = "mlxk's CBLAS forwarder is not built"
    return BlasPlan("reference", "mlx", None, None, f"no optimized BLAS: {missing}, none on the system")


_lock = threading.Lock()
_applied: BlasPlan | None = None


def ensure_blas() -> BlasPlan:
    """Put the planned BLAS in place, once per process, and say what MLX uses. Call it before the
    first ``import mlx.core`` (a BLAS loaded after that changes nothing: libmlx is bound by then).
    Never raises: whatever fails leaves MLX with its reference BLAS, and the plan says why."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply(blas_plan())
            if _applied.warning:  # a setting that did not take: said once, not silently ignored
                sys.stderr.write(f"mlxk: {_applied.warning}; MLX keeps its reference BLAS\n")
        return _applied


def _apply(plan: BlasPlan) -> BlasPlan:
    import ctypes

    if plan.path is None:
        return plan
    if "mlx.core" in sys.modules:
        return BlasPlan("reference", "mlx", None, None, "mlx.core was imported before mlxk chose a BLAS")
    try:
        library = ctypes.CDLL(plan.path, mode=ctypes.RTLD_GLOBAL)
        prefix = ""
        if plan.forwarder is not None:
            prefix = _SCIPY_PREFIX
            ctypes.CDLL(plan.forwarder, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        problem = f"cannot load {plan.path}: {exc}"
        return BlasPlan(
            "reference", "mlx", None, None, problem, warning=problem if plan.source == ENV else None
        )
    provider = cblas_provider()
    expected = plan.forwarder or plan.path
    if provider is None or not os.path.samefile(provider, expected):
        # the library lacks the CBLAS names, or another library in the global scope had them first
        problem = f"cblas_sgemm resolves to {provider}, not {expected}"
        return BlasPlan(
            "reference", "mlx", None, None, problem, warning=problem if plan.source == ENV else None
        )
    # a library named by MLXK_BLAS is most often an OpenBLAS; if it has no such setter, it decides
    kind = "openblas" if plan.library == "custom" else plan.library
    threads: int | None
    threads, ours = _thread_count(kind, os.environ)
    setter = getattr(library, prefix + _THREADS[kind][1], None) if kind in _THREADS else None
    if setter is None:
        threads = None if ours else threads
    elif ours:
        setter.argtypes = [ctypes.c_int64 if kind == "blis" else ctypes.c_int]
        setter.restype = None
        setter(threads)
    return replace(plan, threads=threads, loaded=True)


def cblas_provider() -> str | None:
    """The file of the library whose ``cblas_sgemm`` the global scope resolves to, which is the one
    libmlx binds when it is loaded; None when no library in the global scope defines it."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        return None
    info = DlInfo()
    dladdr = process.dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)
