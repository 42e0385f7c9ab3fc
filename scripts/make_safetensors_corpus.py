#!/usr/bin/env python3
"""Writes the committed safetensors corpus, tests/data/safetensors/, from the test cases.

One file per case of ``tests/safetensors_cases.all_cases()`` (``<case name>.safetensors``, the name
reduced to ``[A-Za-z0-9_.-]``) and ``expected.json``: file name -> ``{"code", "detail", "accepted"}``.
The corpus is a plain-file mirror of the cases: fuzzers can take it as seeds, other readers (and
other safetensors implementations) as a conformance set. ``tests/test_safetensors_corpus.py``
fails when the committed files differ from what this script writes now, so after changing the
cases run::

    .venv/bin/python scripts/make_safetensors_corpus.py           # rewrite the corpus
    .venv/bin/python scripts/make_safetensors_corpus.py --check   # exit 1 if it is stale

Left out (and listed on stdout): cases that would need a file larger than ``MAX_FILE_BYTES``, and
cases whose expectation holds for a file size other than the length of their bytes (those
cannot be plain files).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mlxk.core import codes as cc  # noqa: E402
from tests import safetensors_cases as sc  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "data" / "safetensors"
EXPECTED = "expected.json"
SUFFIX = ".safetensors"
MAX_FILE_BYTES = 256 * 1024  # no case comes near; the whole corpus stays well under 2 MB
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Corpus:
    files: dict[str, bytes]  # file name -> content
    expected: dict[str, dict[str, int | bool | None]]  # file name -> code, detail, accepted
    skipped: dict[str, str]  # case name -> why it has no file


def file_name(case_name: str) -> str:
    return _UNSAFE.sub("_", case_name) + SUFFIX


def build() -> Corpus:
    files: dict[str, bytes] = {}
    expected: dict[str, dict[str, int | bool | None]] = {}
    skipped: dict[str, str] = {}
    folded: dict[str, str] = {}  # lower-cased file name -> case name (case-insensitive file systems)
    for case in sc.all_cases():
        size = getattr(case, "file_size", None)  # Case has none today: its file is its bytes
        if size is not None and size != len(case.data):
            skipped[case.name] = f"expectation is for a file size of {size}, not {len(case.data)} bytes"
            continue
        if len(case.data) > MAX_FILE_BYTES:
            skipped[case.name] = f"{len(case.data)} bytes (more than {MAX_FILE_BYTES})"
            continue
        name = file_name(case.name)
        clash = folded.get(name.lower())
        if clash is not None:
            raise SystemExit(f"cases {clash!r} and {case.name!r} map to the same file name {name!r}")
        folded[name.lower()] = case.name
        files[name] = case.data
        expected[name] = {"code": case.code, "detail": case.detail, "accepted": case.code == cc.OK}
    return Corpus(files, expected, skipped)


def expected_json(corpus: Corpus) -> bytes:
    return (json.dumps(corpus.expected, indent=1, sort_keys=True) + "\n").encode("ascii")


def write(corpus: Corpus, out: Path) -> None:
    """Makes ``out`` hold exactly the corpus (stale .safetensors files are removed)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*" + SUFFIX):
        if stale.name not in corpus.files:
            stale.unlink()
    for name, data in corpus.files.items():
        path = out / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    (out / EXPECTED).write_bytes(expected_json(corpus))


def differences(corpus: Corpus, out: Path) -> list[str]:
    """What in ``out`` differs from the corpus (empty when it is up to date)."""
    problems = []
    present = {p.name for p in out.glob("*" + SUFFIX)} if out.is_dir() else set()
    problems += [f"missing: {n}" for n in sorted(set(corpus.files) - present)]
    problems += [f"not a case: {n}" for n in sorted(present - set(corpus.files))]
    problems += [
        f"differs: {n}"
        for n in sorted(present & set(corpus.files))
        if (out / n).read_bytes() != corpus.files[n]
    ]
    exp = out / EXPECTED
    if not exp.is_file() or exp.read_bytes() != expected_json(corpus):
        problems.append(f"differs: {EXPECTED}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the corpus is stale")
    args = parser.parse_args(argv)
    corpus = build()
    if args.check:
        problems = differences(corpus, args.out)
        for line in problems:
            print(line)
        return 1 if problems else 0
    write(corpus, args.out)
    total = sum(len(d) for d in corpus.files.values())
    print(f"{len(corpus.files)} files, {total} bytes of cases, in {args.out}")
    for name, why in corpus.skipped.items():
        print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
