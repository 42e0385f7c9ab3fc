"""The cache's answers when another process changes a file between two consecutive system calls
of ours: a snapshot file removed between the scan's listing and its ``lstat``, a snapshot link
removed or replaced by a file between its ``lstat`` and ``readlink``, a file written to while
``health --deep`` hashes it, and a download the client restarts between the tail hasher's
``fstat`` and its read.

No test can step in between two system calls, so each uses a named stand-in at exactly that call:
it does the other process's action for real first (the file really removed, replaced, appended
to or truncated), then the real call runs. The scan's and the hashing's arms are the pure-Python
core's (the compiled core has the same arms in C, where nothing can step in), so these tests run
the twin.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mlxk.core
from mlxk.cache.build import build_model
from mlxk.cache.model import CachedModel
from mlxk.cache.scan import CacheLocation, scan_records
from mlxk.core import twin
from mlxk.core.records import FileEntry, RepoRecord
from mlxk.core.twin import scan as twin_scan
from mlxk.hub import tail_hash
from mlxk.hub.tail_hash import TailHasher
from tests.cachefix import healthy_model
from tests.test_deep import NAME, deep, model, reasons

HANG_S = 10  # only turns a hang (an arm that broke) into a failure


@pytest.fixture(autouse=True)
def python_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python core, whose arms these are (in-process calls and CLI runs alike)."""
    monkeypatch.setattr(mlxk.core, "impl", twin)
    monkeypatch.setenv("MLXK_NO_EXTENSIONS", "1")


def only_model(hub: Path) -> tuple[CachedModel, RepoRecord]:
    """One scan of the hub: its only model, and the record the model was built from."""
    [record] = scan_records(CacheLocation(str(hub), None))
    return build_model(record), record


def files_of(record: RepoRecord) -> dict[str, FileEntry]:
    [snapshot] = record.snapshots
    assert snapshot.errno == 0  # the snapshot was read, not given up as unreadable
    return {f.path: f for f in snapshot.files}


# --- twin/scan.py: _scan_dir, an entry gone by its lstat --------------------------------------------


def test_a_file_removed_between_the_listing_and_its_lstat_is_left_out_not_an_error(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: ``rm`` of a snapshot file between the scan's ``listdir`` of the snapshot and its
    ``lstat`` of that entry. Stand-in: the scan's listing (``_sorted_names``) lists the snapshot,
    then the file is really removed before the real ``lstat`` runs. The scan reports exactly what a
    scan after the removal reports: the file absent, every other file there."""
    repo = healthy_model(hub)
    gone = repo.snapshot / "model.safetensors"
    real = twin_scan._sorted_names
    removed: list[str] = []

    def listing_then_removal(path: str) -> list[str]:
        names = real(path)
        if path == str(repo.snapshot) and not removed:
            gone.unlink()  # the other process, right after our listing
            removed.append("model.safetensors")
        return names

    monkeypatch.setattr(twin_scan, "_sorted_names", listing_then_removal)
    raced, raced_record = only_model(hub)
    assert removed == ["model.safetensors"]  # the entry was listed, and gone by its lstat
    monkeypatch.setattr(twin_scan, "_sorted_names", real)
    after, after_record = only_model(hub)
    files = files_of(raced_record)
    assert files == files_of(after_record)  # just what a scan after the removal finds
    assert (raced.healthy, raced.health_reason) == (after.healthy, after.health_reason)
    assert "model.safetensors" not in files
    assert {"config.json", "README.md", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert not raced.healthy and raced.health_reason == "no weight files"


# --- twin/scan.py: _file_entry, readlink failing on an entry lstat saw as a link ---------------------


def readlink_after(monkeypatch: pytest.MonkeyPatch, link: Path, action: Callable[[], None]) -> list[str]:
    """Stand-in for a process that acts on ``link`` between the scan's ``lstat`` of it and its
    ``readlink``: ``action`` runs for real at that ``readlink``, then the real ``readlink``."""
    real = os.readlink
    done: list[str] = []

    def acted_then_readlink(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == str(link) and not done:
            action()
            done.append(str(link))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", acted_then_readlink)
    return done


def test_a_link_removed_between_its_lstat_and_readlink_is_reported_gone(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a snapshot link removed between the scan's ``lstat`` (a link) and its ``readlink``
    (ENOENT). Stand-in: ``os.readlink`` removes the link for real, then runs. The scan goes on: the
    file is reported as not there (the model unhealthy for it), the snapshot's other files read."""
    repo = healthy_model(hub)
    link = repo.snapshot / "config.json"
    assert link.is_symlink()
    acted = readlink_after(monkeypatch, link, link.unlink)
    found, record = only_model(hub)
    assert acted == [str(link)]
    files = files_of(record)
    gone = files["config.json"]
    assert gone.is_link and not gone.exists and gone.size == -1 and gone.content is None
    assert files["model.safetensors"].exists and files["README.md"].exists  # the scan went on
    assert not found.healthy and found.health_reason is not None
    assert found.health_reason.startswith("config.json is a broken link")


def test_a_link_replaced_by_its_file_between_lstat_and_readlink_is_read_as_that_file(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a snapshot link replaced by a regular file (its content copied in place of the link)
    between the scan's ``lstat`` and its ``readlink`` (EINVAL). Stand-in: ``os.readlink`` does the
    replacement for real, then runs. The scan reads the file now there: the model stays healthy."""
    repo = healthy_model(hub)
    link = repo.snapshot / "config.json"
    content = repo.blob_of("config.json").read_bytes()

    def replace() -> None:
        staged = link.with_name("config.json.new")
        staged.write_bytes(content)
        os.replace(staged, link)

    acted = readlink_after(monkeypatch, link, replace)
    found, record = only_model(hub)
    assert acted == [str(link)]
    entry = files_of(record)["config.json"]
    assert entry.exists and entry.size == len(content) and entry.content == content
    assert entry.target == ""  # a link whose text could not be read, seen through to the file
    assert found.healthy, found.health_reason


# --- ops/deep.py: _describe, a file written to while it is hashed -----------------------------------


def test_a_file_written_to_while_deep_health_hashes_it_is_reported_changed_and_not_remembered(
    cli: Any, hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: another process appends to a blob after the hashing thread's ``fstat`` of it and
    before its reads, so the bytes read differ from the size (EAGAIN). Stand-in: the hashing
    thread's ``os.fdopen`` of that blob appends to it for real first. ``health --deep`` says the
    file changed while it was read (no checksum verdict on bytes that describe neither version),
    remembers nothing of it, and the next run hashes it again and finds it no longer matches."""
    repo = model(hub)
    blob = repo.blob_of("README.md")
    os.chmod(blob, 0o644)
    target = os.stat(blob)
    real = os.fdopen
    appended: list[str] = []

    def written_to_then_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        st = os.fstat(fd)
        hashing = threading.current_thread().name.startswith("mlxk-hash")
        if hashing and (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino) and not appended:
            with open(blob, "ab") as writer:  # the other process, after our fstat
                writer.write(b"\nappended while hashed\n")
            appended.append(blob.name)
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", written_to_then_fdopen)
    data = deep(cli)
    assert appended == [blob.name]
    assert data["summary"]["unhealthy_count"] == 1
    assert reasons(data)[NAME] == "README.md: changed while it was being read"
    monkeypatch.setattr(os, "fdopen", real)
    again = reasons(deep(cli))[NAME]  # hashed again (nothing remembered), now it is the new bytes
    assert again.startswith("README.md: content does not match its git sha1 checksum")


# --- hub/tail_hash.py: _advance, a file that shrank between fstat and read -------------------------


def tick(hasher: TailHasher) -> None:
    """One turn of the tail hasher's thread (``_run``: discover, then sweep), run here so that the
    test decides what the client does between two turns; a turn that hangs fails the test."""

    def turn() -> None:
        hasher._discover()
        hasher._sweep()

    thread = threading.Thread(target=turn, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), "the tail hasher's turn did not end"


def test_a_download_restarted_between_fstat_and_read_leaves_no_digest_to_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: huggingface_hub restarts a blob's download (truncates its ``.incomplete`` file) after
    the tail hasher's ``fstat`` saw it grown and before its read, which then gets nothing. Stand-in:
    the hasher's ``_read_at`` truncates the file for real first, then reads. The hasher neither
    hangs on the empty read nor hands over a digest: the first attempt's bytes it hashed must not be
    joined to the second's (here that mix would match the checksum, while the blob does not)."""
    good = b"abcdef"
    etag = hashlib.sha256(good).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    part = blobs / f"{etag}.Xy12.incomplete"
    part.write_bytes(good[:3])
    hasher = TailHasher(str(blobs), {etag: (len(good), True)})
    real = tail_hash._read_at
    restarted: list[int] = []

    def truncated_then_read(fd: int, into: memoryview, offset: int) -> int:
        if offset == 3 and not restarted:
            os.truncate(part, 0)  # the client, after our fstat
            restarted.append(offset)
        return real(fd, into, offset)

    monkeypatch.setattr(tail_hash, "_read_at", truncated_then_read)
    try:
        tick(hasher)  # the first three bytes hashed
        with open(part, "ab") as client:
            client.write(good[3:])  # the first attempt goes on
        tick(hasher)  # fstat: six bytes; the read after the restart: none
        assert restarted == [3]
        tick(hasher)  # the file is now shorter than what was hashed of it: given up
        part.write_bytes(b"XYZ" + good[3:])  # the second attempt, with other first bytes
        os.rename(part, blobs / etag)
        tick(hasher)
    finally:
        hasher.__exit__(None, None, None)
    assert (blobs / etag).read_bytes() != good
    assert hashlib.sha256(b"abc" + good[3:]).hexdigest() == etag  # what a mixed digest would say
    assert hasher.digests == {}  # verification reads the blob from disk instead


def test_the_tail_hasher_still_trusts_an_undisturbed_download(tmp_path: Path) -> None:
    """The same turns without the restart: the digest is handed over (the test above fails for
    the race, not for the way it drives the hasher)."""
    good = b"abcdef"
    etag = hashlib.sha256(good).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    part = blobs / f"{etag}.Xy12.incomplete"
    part.write_bytes(good[:3])
    hasher = TailHasher(str(blobs), {etag: (len(good), True)})
    try:
        tick(hasher)
        with open(part, "ab") as client:
            client.write(good[3:])
        tick(hasher)
        os.rename(part, blobs / etag)
        tick(hasher)
    finally:
        hasher.__exit__(None, None, None)
    st = os.stat(blobs / etag)
    assert hasher.digests == {(st.st_dev, st.st_ino): etag}
