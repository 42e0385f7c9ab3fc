"""Cleaning what interrupted downloads leave (mlxk.cache.leftovers): stale files go, anything a
live downloader holds stays, and a repo without the folders is simply clean."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlxk.cache.leftovers import Cleaned, clean_stale_leftovers
from mlxk.cache.locks import REPO_LOCK_NAME, lock_dir

DIRNAME = "models--org--tiny"
ETAG = "a" * 64


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Holds ``path`` as huggingface_hub's downloader does (an exclusive flock on its own
    open file: another open of the same file cannot take it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def repo(hub: Path) -> tuple[Path, Path]:
    blobs = hub / DIRNAME / "blobs"
    blobs.mkdir(parents=True)
    locks = Path(lock_dir(str(hub), DIRNAME))
    locks.mkdir(parents=True)
    return blobs, locks


def test_a_repo_without_blobs_or_locks_folders_is_clean(tmp_path: Path) -> None:
    (tmp_path / DIRNAME).mkdir()
    assert clean_stale_leftovers(str(tmp_path), DIRNAME) == Cleaned(0, 0)
    assert os.listdir(tmp_path / DIRNAME) == []  # nothing was created either


def test_a_download_in_progress_keeps_its_partial_blob_and_its_lock(tmp_path: Path) -> None:
    blobs, locks = repo(tmp_path)
    partial = blobs / f"{ETAG}.1234.incomplete"
    partial.write_bytes(b"half")
    lock = locks / f"{ETAG}.lock"
    with held(lock):
        assert clean_stale_leftovers(str(tmp_path), DIRNAME) == Cleaned(0, 0)
    assert partial.read_bytes() == b"half"
    assert lock.exists()


def test_stale_partial_blobs_and_lock_files_go_and_others_stay(tmp_path: Path) -> None:
    blobs, locks = repo(tmp_path)
    (blobs / f"{ETAG}.1234.incomplete").write_bytes(b"half")  # huggingface_hub 2.x name
    (blobs / f"{'b' * 64}.incomplete").write_bytes(b"old")  # older clients' name
    (blobs / "c").write_bytes(b"")  # not a partial download
    (locks / f"{ETAG}.lock").touch()
    (locks / REPO_LOCK_NAME).touch()  # mlxk's own repo lock: not a download's
    (locks / "notes.txt").touch()  # not a lock file
    (locks / "sub.lock").mkdir()  # not a regular file
    assert clean_stale_leftovers(str(tmp_path), DIRNAME) == Cleaned(2, 1)
    assert sorted(os.listdir(blobs)) == ["c"]
    assert sorted(os.listdir(locks)) == sorted([REPO_LOCK_NAME, "notes.txt", "sub.lock"])
