"""Builds the optional Cython core (``mlxk.core._native``) and, on Linux, the CBLAS forwarder
(``mlxk.core._cblas_forward``); all other metadata lives in pyproject.toml.

Where there is no compiler, no Cython, or ``MLXK_NO_EXTENSIONS=1`` is set at build time, the
package installs without the extensions and runs on its pure-Python twins (and then only a system
BLAS can serve MLX: see mlxk/core/blas.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed extension build is a warning, not a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(f"WARNING: an mlxk extension was not built ({exc}); using pure Python.", file=sys.stderr)


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
        print("WARNING: Cython is not available; mlxk installs without its native core.", file=sys.stderr)
        return []
    try:
        write_native_codes()
    except Exception as exc:
        print(f"WARNING: mlxk's native codes could not be generated ({exc}).", file=sys.stderr)
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
        print(f"WARNING: Cython could not translate mlxk's native core ({exc}).", file=sys.stderr)
        return []


def blas_forward_extensions() -> list:
    """The CBLAS forwarder: plain C, no Cython, so it builds wherever a C compiler is. Its
    ``scipy_cblas_*`` references stay undefined until it is loaded after OpenBLAS (see the source)."""
    if os.environ.get("MLXK_NO_EXTENSIONS") == "1" or not sys.platform.startswith("linux"):
        return []
    from setuptools import Extension

    return [
        Extension("mlxk.core._cblas_forward", sources=["_native/cblas_forward.c"], extra_compile_args=["-O2"])
    ]


setup(ext_modules=native_extensions() + blas_forward_extensions(), cmdclass={"build_ext": OptionalBuildExt})
