"""Writes ``_native/codes.pxi`` from ``mlxk/core/codes.py``, so the C code and the twins share one
list of numbers: every public int constant there becomes ``MLXK_<NAME>`` in a ``cdef enum``.

setup.py runs it before each build of the native core; ``tests/test_native_codes.py`` checks that
the committed file is in sync. By hand: ``python _native/generate_codes.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "mlxk" / "core" / "codes.py"
TARGET = ROOT / "_native" / "codes.pxi"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # what a C enum constant surely holds

HEADER = """\
# Generated from mlxk/core/codes.py by _native/generate_codes.py (setup.py runs it before each
# build): edit codes.py, not this file. tests/test_native_codes.py checks that it is in sync.
"""


def constants(source: Path = SOURCE) -> dict[str, int]:
    """The public int constants of ``source``, in definition order. The file is run on its own,
    not imported as ``mlxk.core.codes``: a build needs no importable mlxk package."""
    spec = importlib.util.spec_from_file_location("_mlxk_codes_for_build", source)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = {}
    for name, value in vars(module).items():
        if name.isupper() and not name.startswith("_") and type(value) is int:
            if not INT_MIN <= value <= INT_MAX:
                raise ValueError(f"{source.name}: {name} = {value} does not fit a C enum")
            found[name] = value
    return found


def render(source: Path = SOURCE) -> str:
    lines = [HEADER, "cdef enum:"]
    lines += [f"    MLXK_{name} = {value}" for name, value in constants(source).items()]
    return "\n".join(lines) + "\n"


def write(source: Path = SOURCE, target: Path = TARGET) -> bool:
    """Writes ``target`` when its text differs (an unchanged file keeps its mtime, so Cython does
    not rebuild for nothing); True when it wrote."""
    text = render(source)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return False
    target.write_text(text, encoding="utf-8")
    return True


if __name__ == "__main__":
    print(f"{TARGET}: {'written' if write() else 'up to date'}", file=sys.stderr)
