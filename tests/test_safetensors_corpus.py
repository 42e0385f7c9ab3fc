"""The committed safetensors corpus (tests/data/safetensors/): up to date, and right on both cores.

Written by scripts/make_safetensors_corpus.py from tests/safetensors_cases.py; see that script.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import mlxk.core
from mlxk.core import codes as cc

try:  # tests/ as a package, or (pytest's default rootdir-less mode) as a sys.path entry
    from tests.test_safetensors_check import STRICTER
except ImportError:
    from test_safetensors_check import STRICTER  # type: ignore[no-redef,import-not-found]

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "safetensors"
SCRIPT = ROOT / "scripts" / "make_safetensors_corpus.py"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text("ascii"))
NAMES = sorted(EXPECTED)


@functools.cache
def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_safetensors_corpus", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- (a) the corpus is what the generator writes now -------------------------------------------


def test_corpus_matches_generator(tmp_path: Path) -> None:
    assert _script().main(["--out", str(tmp_path)]) == 0
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in CORPUS.iterdir())
    hint = "run scripts/make_safetensors_corpus.py and commit tests/data/safetensors/"
    assert committed == fresh, hint
    for name in fresh:
        assert (CORPUS / name).read_bytes() == (tmp_path / name).read_bytes(), f"{name}: {hint}"


def test_corpus_stays_small() -> None:
    files = list(CORPUS.iterdir())
    assert len(files) == len(EXPECTED) + 1  # the cases and expected.json
    assert sum(p.stat().st_size for p in files) < 2_000_000
    for name, exp in EXPECTED.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.safetensors", name)
        assert exp["accepted"] == (exp["code"] == cc.OK)


def test_check_mode_finds_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script()
    out = tmp_path / "corpus"
    assert script.main(["--out", str(out)]) == 0
    assert script.main(["--check", "--out", str(out)]) == 0
    (out / NAMES[0]).write_bytes(b"changed")
    (out / "stray.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert script.main(["--check", "--out", str(out)]) == 1
    assert capsys.readouterr().out.split("\n")[:2] == [
        "not a case: stray.safetensors",
        f"differs: {NAMES[0]}",
    ]
    assert script.main(["--out", str(out)]) == 0  # rewriting repairs it and removes the stray file
    assert script.main(["--check", "--out", str(out)]) == 0


# --- (b) every file gives its expected result through both cores ------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file(core: str, name: str) -> None:
    exp = EXPECTED[name]
    path = CORPUS / name
    result = mlxk.core.impl.check_safetensors_file(str(path))
    assert result[0] == exp["code"], cc.describe(result[0], result[1], path.stat().st_size)
    if exp["detail"] is not None:
        assert result[1] == exp["detail"]
    assert mlxk.core.impl.check_safetensors_bytes(path.read_bytes()) == result


# --- (c) the safetensors package agrees, except where we are stricter on purpose ----------------


def _safetensors_verdicts(path: Path) -> tuple[bool, bool]:
    """(accepted by safetensors.deserialize, accepted by safetensors.safe_open) for one file."""
    safetensors = pytest.importorskip("safetensors")
    pytest.importorskip("numpy")
    try:
        safetensors.deserialize(path.read_bytes())
        from_bytes = True
    except Exception:
        from_bytes = False
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            f.keys()
            f.metadata()
        from_file = True
    except Exception:
        from_file = False
    return from_bytes, from_file


def _case_name(file_name: str) -> str:
    return file_name.removesuffix(".safetensors")


def test_stricter_cases_are_in_the_corpus() -> None:
    assert {f"{name}.safetensors" for name in STRICTER} <= set(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_against_safetensors(name: str) -> None:
    from_bytes, from_file = _safetensors_verdicts(CORPUS / name)
    assert from_bytes == from_file, "safetensors' deserialize and safe_open disagree"
    if EXPECTED[name]["accepted"]:
        assert from_bytes, "we accept it, safetensors does not"
    elif _case_name(name) in STRICTER:
        assert from_bytes, "no longer accepted by safetensors: drop it from STRICTER"
    else:
        assert not from_bytes, "safetensors accepts it, we do not (add it to STRICTER if on purpose)"


# --- every kind of file that ../shared/testing.md says a checker must handle --------------------

_REJECT = "rejected"
_ACCEPT = cc.OK
_DTYPES = [
    *["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ"],
    *["F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"],
]

# (kind, pattern for the file names of that kind, the code each of them must have)
KINDS: list[tuple[str, str, int | str]] = [
    ("empty file", r"empty", cc.EMPTY),
    ("fewer than 8 bytes", r"\d_bytes", cc.TOO_SMALL),
    ("header length 0", r"hlen_0", cc.HEADER_LENGTH),
    ("header length past the file", r"hlen_(one_)?past_file", cc.HEADER_LENGTH),
    ("header length over 100,000,000", r"hlen_over_100MB", cc.HEADER_LENGTH),
    ("header not UTF-8", r"utf8_.*", cc.HEADER_UTF8),
    ("header not a JSON object", r"not_object_.*", cc.NOT_AN_OBJECT),
    ("header truncated", r"truncated_json|truncated_in_string|truncated_after_brace", cc.HEADER_JSON),
    ("header with a BOM", r"bom", cc.HEADER_JSON),
    ("header with NUL padding", r"nul_padding.*", cc.HEADER_JSON),
    ("NaN", r"nan_.*", _REJECT),
    ("Infinity", r"(neg_)?infinity_.*", _REJECT),
    ("lone surrogates", r"surrogate_(high|low)_.*", cc.HEADER_JSON),
    ("5000-digit numbers", r".*_5000_digit(s|_float)", _REJECT),
    ("10,000-deep nesting", r"deep_.*", _REJECT),
    ("missing data_offsets", r"missing_data_offsets", cc.BAD_ENTRY),
    ("3-element data_offsets", r"offsets_three", cc.BAD_OFFSETS),
    ("negative offsets", r"offsets_negative", cc.BAD_OFFSETS),
    ("float offsets", r"offsets_(float|exponent)", cc.BAD_OFFSETS),
    ("true offsets", r"offsets_true", cc.BAD_OFFSETS),
    ("negative dims", r"shape_neg(ative|_zero)", cc.BAD_SHAPE),
    ("float dims", r"shape_(float|exponent|exp_negative)", cc.BAD_SHAPE),
    ("true dims", r"shape_true", cc.BAD_SHAPE),
    ("end < begin", r"offsets_end_lt_begin", cc.BAD_OFFSETS),
    ("gap between tensors", r"layout_gap", cc.LAYOUT),
    ("overlapping tensors", r"layout_(overlap|same_range|empty_inside_other)", cc.LAYOUT),
    ("first tensor not at 0", r"layout_not_at_zero", cc.LAYOUT),
    ("data one byte short", r"data_one_byte_short", cc.TRUNCATED),
    ("data one byte long", r"data_one_byte_long", cc.TRAILING_BYTES),
    ("prod(shape) * dtype size != byte range", r"size_.*", cc.SIZE_MISMATCH),
    ("product overflowing 64 bits", r"size_overflow_.*", cc.SIZE_MISMATCH),
    ("unknown dtype", r"dtype_unknown", cc.BAD_DTYPE),
    ("lower-case dtype", r"dtype_lower", cc.BAD_DTYPE),
    ("__metadata__ values not strings", r"metadata_value_.*", cc.BAD_METADATA),
    ("duplicate keys", r"duplicate_(tensor|metadata)_.*|duplicate_both_objects", cc.DUPLICATE_KEY),
    ("LFS pointer", r"lfs_pointer", cc.LFS_POINTER),
    ("accepted: whitespace around the JSON", r"(leading|trailing)_spaces|empty_header_spaced", _ACCEPT),
    ("accepted: zero-size tensors", r"zero_size_tensors?(_around)?|zero_dim_.*", _ACCEPT),
    ("accepted: rank-0 scalars", r"rank0_scalar|scalar_shape_with_spaces", _ACCEPT),
    ("accepted: all 22 dtypes in one file", r"all_22_dtypes", _ACCEPT),
    *[(f"accepted: dtype {d}", rf"dtype_{d}", _ACCEPT) for d in _DTYPES],
]


@pytest.mark.parametrize(("kind", "pattern", "code"), KINDS, ids=[k[0] for k in KINDS])
def test_testing_md_kind_is_covered(kind: str, pattern: str, code: int | str) -> None:
    matching = [n for n in NAMES if re.fullmatch(pattern, _case_name(n))]
    assert matching, f"no corpus file for {kind!r}"
    for name in matching:
        got = EXPECTED[name]["code"]
        if code == _REJECT:
            assert got not in (cc.OK, cc.IO_ERROR), name
        else:
            assert got == code, name


def test_all_22_dtypes_listed() -> None:
    assert len(_DTYPES) == len(set(_DTYPES)) == 22
