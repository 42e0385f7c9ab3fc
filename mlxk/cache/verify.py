"""Checking what a download produced against what the Hub promised: sizes, and the checksums that
blob names carry (sha256 for LFS files, the git blob sha1 for the rest).

huggingface_hub checks only the size, so a file with the right length and the wrong bytes would
otherwise sit in the cache under a name that lies about it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ExpectedFile:
    path: str  # in the snapshot, "/"-separated
    size: int
    blob: str  # the blob name, which is also its checksum
    lfs: bool  # sha256 (LFS) or git blob sha1


@dataclass(frozen=True, slots=True)
class FileProblem:
    path: str
    problem: str
    blob_path: str | None  # the blob holding wrong bytes (to discard), if any


def new_digest(lfs: bool, size: int) -> Any:
    """sha256 for LFS files; git's blob sha1 (``sha1(b"blob <size>\\0" + content)``) for the rest."""
    return hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)


def content_digest(path: str, lfs: bool, size: int) -> str:
    digest = new_digest(lfs, size)
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags), "rb", buffering=0) as fh:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while n := fh.readinto(buffer):
            digest.update(view[:n])  # hashlib releases the GIL on large updates: files hash in parallel
    return str(digest.hexdigest())


def _check(
    snapshot: str, blobs_dir: str, want: ExpectedFile, known: Mapping[tuple[int, int], str]
) -> FileProblem | None:
    entry = os.path.join(snapshot, *want.path.split("/"))
    try:
        st = os.lstat(entry)
    except FileNotFoundError:
        return FileProblem(want.path, "missing", None)
    content = entry
    if stat.S_ISLNK(st.st_mode):
        target = os.path.normpath(os.path.join(os.path.dirname(entry), os.readlink(entry)))
        if os.path.dirname(target) != blobs_dir:
            return FileProblem(want.path, "links outside the repo's blobs", None)
        content = target
        if os.path.basename(target) != want.blob:
            # the blob may be right for another file: only the link goes
            return FileProblem(
                want.path, f"stored as blob {os.path.basename(target)}, expected {want.blob}", None
            )
    try:
        st = os.stat(content, follow_symlinks=False)
        if st.st_size != want.size:
            return FileProblem(want.path, f"size {st.st_size}, expected {want.size}", content)
        if known.get((st.st_dev, st.st_ino)) == want.blob:
            return None  # hashed while it downloaded (mlxk.hub.tail_hash)
        actual = content_digest(content, want.lfs, want.size)
    except FileNotFoundError:
        return FileProblem(want.path, "missing blob", None)
    if actual != want.blob:
        kind = "sha256" if want.lfs else "git sha1"
        return FileProblem(want.path, f"{kind} {actual[:12]}…, expected {want.blob[:12]}…", content)
    return None


def verify_snapshot(
    repo_path: str,
    commit: str,
    expected: Sequence[ExpectedFile],
    known: Mapping[tuple[int, int], str] | None = None,
) -> list[FileProblem]:
    """Every problem with the files of ``snapshots/<commit>`` that ``expected`` lists.

    ``known`` maps (device, inode) to digests computed earlier; a file whose digest is known and
    right is not read again. Anything else is hashed from disk, in parallel."""
    known = known or {}
    repo_path = os.path.abspath(repo_path)  # link targets are compared with it, normalized
    snapshot = os.path.join(repo_path, "snapshots", commit)
    blobs_dir = os.path.join(repo_path, "blobs")
    workers = max(1, min(len(expected), os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(workers, thread_name_prefix="mlxk-verify") as pool:
        results = list(pool.map(lambda want: _check(snapshot, blobs_dir, want, known), expected))
    return [r for r in results if r is not None]


def discard(repo_path: str, commit: str, problems: Sequence[FileProblem]) -> None:
    """Remove the snapshot links and blobs of bad files, so that the next pull fetches them again."""
    snapshot = os.path.join(repo_path, "snapshots", commit)
    for problem in problems:
        for path in (os.path.join(snapshot, *problem.path.split("/")), problem.blob_path):
            if path is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
