"""The native core's numbers come from mlxk/core/codes.py: the generated _native/codes.pxi is in sync."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from mlxk.core import codes

ROOT = Path(__file__).resolve().parents[1]


def generator() -> ModuleType:
    """_native/generate_codes.py, loaded by path as setup.py loads it."""
    spec = importlib.util.spec_from_file_location("generate_codes", ROOT / "_native" / "generate_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_pxi_matches_codes_py() -> None:
    committed = (ROOT / "_native" / "codes.pxi").read_text(encoding="utf-8")
    assert committed == generator().render(), "run: python _native/generate_codes.py"


def test_every_shared_number_is_generated() -> None:
    generated = generator().constants()
    assert generated["OK"] == codes.OK and generated["CONTENT_MISMATCH"] == codes.CONTENT_MISMATCH
    assert generated["ALGO_SHA256"] == codes.ALGO_SHA256 and generated["HASH_CHUNK"] == codes.HASH_CHUNK
    public = {k: v for k, v in vars(codes).items() if k.isupper() and not k.startswith("_")}
    assert generated == public


def test_a_number_too_large_for_c_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "codes.py"
    source.write_text("OK = 0\nHUGE = 1 << 40\n")
    with pytest.raises(ValueError, match="HUGE"):
        generator().render(source)


def test_writes_only_when_the_text_changes(tmp_path: Path) -> None:
    source, target = tmp_path / "codes.py", tmp_path / "codes.pxi"
    source.write_text("OK = 0\nLATER = 7  # appended\n_PRIVATE = 3\nNAME = 'text'\n")
    gen = generator()
    assert gen.write(source, target) is True
    text = target.read_text()
    assert text.endswith("cdef enum:\n    MLXK_OK = 0\n    MLXK_LATER = 7\n")  # private and non-int left out
    assert gen.write(source, target) is False
