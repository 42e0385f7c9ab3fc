"""The verification memo: remembered checks, kept outside the hub folder, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mlxk.core
from mlxk.cache import memo
from mlxk.cache.root import mlxk_cache_dir
from mlxk.cache.scan import CacheLocation, scan_records
from mlxk.core.memo_format import RECORD
from mlxk.core.records import CheckResult
from tests.cachefix import healthy_model, truncate_blob

pytestmark = pytest.mark.usefixtures("core")


def fresh_checks(hub: Path, use_memo: bool = True) -> int:
    location = CacheLocation(str(hub), mlxk_cache_dir() if use_memo else None)
    path = memo.memo_path(mlxk_cache_dir(), str(hub))
    body = memo.load_memo(path) if use_memo else b""
    _, fresh = mlxk.core.impl.scan_cache(str(hub), None, body, 0)
    scan_records(location)  # the real path: scan + merge + save
    return len(fresh)


def test_second_scan_reads_no_weights(hub: Path) -> None:
    healthy_model(hub, "org/a")
    healthy_model(hub, "org/b", shards=2)
    assert fresh_checks(hub) == 3
    assert fresh_checks(hub) == 0


def test_changed_file_is_checked_again(hub: Path) -> None:
    repo = healthy_model(hub, "org/a")
    fresh_checks(hub)
    truncate_blob(repo, "model.safetensors", -1)  # same mtime, new size
    assert fresh_checks(hub) == 1
    records = scan_records(CacheLocation(str(hub), mlxk_cache_dir()))
    weights = next(f for f in records[0].snapshots[0].files if f.path == "model.safetensors")
    assert weights.check != 0  # the stale OK was not reused


def test_memo_lives_outside_the_hub_and_hub_scan_stays_clean(hub: Path) -> None:
    from huggingface_hub import scan_cache_dir

    healthy_model(hub, "org/a")
    scan_records(CacheLocation(str(hub), mlxk_cache_dir()))
    path = memo.memo_path(mlxk_cache_dir(), str(hub))
    assert os.path.exists(path) and not path.startswith(str(hub))
    report = scan_cache_dir(hub)
    assert report.warnings == [] and [r.repo_id for r in report.repos] == ["org/a"]


def test_no_memo_neither_reads_nor_writes(hub: Path) -> None:
    healthy_model(hub, "org/a")
    scan_records(CacheLocation(str(hub), None))
    assert not os.path.exists(memo.memo_path(mlxk_cache_dir(), str(hub)))


def test_recent_files_and_io_errors_are_not_remembered() -> None:
    now = 10_000_000_000_000
    racy = CheckResult(1, 2, 3, now - 1_000_000_000, 1, 0, 0)
    failed = CheckResult(1, 3, 3, 0, 1, 1, 13)
    settled = CheckResult(1, 4, 3, 0, 1, 0, 0)
    assert memo.merge(b"", [racy, failed], now) is None
    body = memo.merge(b"", [racy, failed, settled], now)
    assert body is not None and len(body) == RECORD.size


def test_corrupt_memo_file_is_ignored(hub: Path) -> None:
    healthy_model(hub, "org/a")
    path = memo.memo_path(mlxk_cache_dir(), str(hub))
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(b"garbage that is not a memo")
    assert memo.load_memo(path) == b""
    assert fresh_checks(hub) == 1
    assert memo.load_memo(path) != b""


def test_save_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old memo stays whole until the new one is complete: a write that fails before the
    rename leaves the previous file untouched and no temporary file behind."""
    target = tmp_path / "m" / "memo.bin"
    assert memo.save_memo(str(target), b"A" * RECORD.size)
    assert target.read_bytes() == memo.MAGIC + b"A" * RECORD.size

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    assert not memo.save_memo(str(target), b"B" * RECORD.size)
    assert target.read_bytes() == memo.MAGIC + b"A" * RECORD.size
    assert [p.name for p in target.parent.iterdir()] == ["memo.bin"]


def test_unwritable_memo_folder_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not memo.save_memo(str(blocker / "memo.bin"), b"")
