"""Builds the optional Cython core (``mlxk.core._native``) and, on Linux, the CBLAS forwarder
(``mlxk.core._cblas_forward``); all other metadata lives in pyproject.toml.

Where there is no compiler, no Cython, or ``MLXK_NO_EXTENSIONS=1`` is set at build time, the
package installs without the extensions and runs on its pure-Python twins, and the build says so
on stderr (``pip install -v`` shows it; ``mlxk --version`` says which core is in use afterwards);
then only a system BLAS can serve MLX (see mlxk/core/blas.py). ``MLXK_REQUIRE_NATIVE=1`` turns that
fallback into a failed build: release wheels must carry the core.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

BLAS_FORWARDER = "mlxk.core._cblas_forward"


def native_required() -> bool:
    return os.environ.get("MLXK_REQUIRE_NATIVE") == "1"


def fall_back_to_python(reason: str) -> None:
    """Say loudly that the install goes on without the compiled core, or stop when it is required."""
    if native_required():
        raise SystemExit(f"error: mlxk's native core could not be built ({reason}) and MLXK_REQUIRE_NATIVE=1")
    notice = (
        "",
        "=" * 78,
        "NOTICE: mlxk's native core (mlxk.core._native) was NOT built:",
        f"  {reason}",
        "mlxk installs with its pure-Python core instead: the same results, slower on large caches.",
        "To get the native core, install a C compiler and the Python headers, then reinstall;",
        "`mlxk --version` says which core is in use.",
        "=" * 78,
        "",
    )
    print("\n".join(notice), file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed extension build is a notice, not a failed install (unless the core is required)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            fall_back_to_python(str(exc))

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if ext.name == BLAS_FORWARDER:  # optional: without it only a system BLAS can serve MLX
                print(f"WARNING: mlxk's CBLAS forwarder was not built ({exc}).", file=sys.stderr)
                return
            fall_back_to_python(str(exc))


def write_native_codes() -> None:
    """_native/codes.pxi from mlxk/core/codes.py: the C code takes its numbers from the twins' source."""
    path = Path(__file__).resolve().parent / "_native" / "generate_codes.py"
    spec = importlib.util.spec_from_file_location("mlxk_generate_codes", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.write()


def native_extensions() -> list:
    if os.environ.get("MLXK_NO_EXTENSIONS") == "1":
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        fall_back_to_python("Cython is not available")
        return []
    try:
        write_native_codes()
    except Exception as exc:
        fall_back_to_python(f"its numbers could not be generated from mlxk/core/codes.py: {exc}")
        return []
    compile_args = ["-O3"] if sys.platform != "win32" else []
    extension = Extension(
        "mlxk.core._native",
        sources=["_native/_native.pyx"],
        extra_compile_args=compile_args,
        define_macros=[("_FILE_OFFSET_BITS", "64"), ("_GNU_SOURCE", "1")],
        # content hashing dlopen()s libcrypto; glibc before 2.34 keeps dlopen in libdl
        libraries=["dl"] if sys.platform.startswith("linux") else [],
    )
    try:
        return cythonize(
            [extension],
            include_path=["_native"],
            compiler_directives={
                "language_level": "3",
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "initializedcheck": False,
            },
        )
    except Exception as exc:
        fall_back_to_python(f"Cython could not translate _native/_native.pyx: {exc}")
        return []


def blas_forward_extensions() -> list:
    """The CBLAS forwarder: plain C, no Cython, so it builds wherever a C compiler is. Its
    ``scipy_cblas_*`` references stay undefined until it is loaded after OpenBLAS (see the source)."""
    if os.environ.get("MLXK_NO_EXTENSIONS") == "1" or not sys.platform.startswith("linux"):
        return []
    from setuptools import Extension

    return [Extension(BLAS_FORWARDER, sources=["_native/cblas_forward.c"], extra_compile_args=["-O2"])]


setup(ext_modules=native_extensions() + blas_forward_extensions(), cmdclass={"build_ext": OptionalBuildExt})
