"""Pure-Python twin of the native cache scan (``mlxk.core._native.scan_cache``).

One pass over the hub folder: for each ``models--*`` repo, its refs, every snapshot's files
(lstat, readlink, stat through the link), the small files the health rules need, the weight
files' checks (answered from the memo when the file is unchanged), leftover ``*.incomplete``
blobs and lock files. Raw facts only; ``mlxk.cache`` gives them meaning. The native core
returns exactly the same records, in the same order.

Nothing outside the hub root is read: a link is followed only when it resolves inside the root
(a repo folder, its refs/, snapshots/ and blobs/ folders, a lock folder, a snapshot file). A
snapshot link of the form huggingface_hub writes (``../../blobs/<name>``) is resolved by its
name and the blob is looked at without following it, so a blob that is itself a link is seen as
one. Refs that are links are not read at all (huggingface_hub writes refs as files).
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple

from mlxk.core import codes
from mlxk.core.memo_format import KIND_SAFETENSORS, KIND_WEIGHT_HEAD, unpack_records
from mlxk.core.records import (
    FLAG_CHAT_TEMPLATE,
    LFS_PREFIX,
    MAX_DEPTH,
    READ_WHOLE_LIMIT,
    README_HEAD,
    WEIGHT_SUFFIXES,
    CheckResult,
    FileEntry,
    RepoRecord,
    SnapshotRecord,
)
from mlxk.core.twin.safetensors import check_safetensors_file

_MemoKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, kind


class _Repo(NamedTuple):
    path: str  # os.path.join(root, dirname)
    root_real: str  # the hub root with every link resolved
    direct_blobs: bool  # snapshots/ is a real folder: ../../blobs/<name> is <path>/blobs/<name>


def scan_cache(
    root: str, repos: Iterable[str] | None = None, memo: bytes = b"", threads: int = 0
) -> tuple[list[RepoRecord], list[CheckResult]]:
    """Scan ``repos`` (folder names) under ``root``, or every ``models--*`` folder there.

    ``memo`` holds earlier check results (see ``mlxk.core.memo_format``); the second value returned
    lists the checks that had to be done afresh. ``threads`` is accepted for parity with the
    native core and ignored: Python threads make syscall-bound walks slower, not faster.
    """
    del threads
    names = sorted(repos) if repos is not None else _model_dirs(root)
    known = {(r[0], r[1], r[2], r[3], r[4]): (r[5], r[6]) for r in unpack_records(memo)}
    fresh: list[CheckResult] = []
    root_real = os.path.realpath(root)
    records = [_scan_repo(root, root_real, name, known, fresh) for name in names]
    return records, fresh


def _leads_outside(root_real: str, path: str) -> bool:
    """``path`` is a link that resolves to a place outside the hub root (one that does not
    resolve at all is not: following it fails like any missing file)."""
    if not os.path.islink(path):
        return False
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        return False
    return not (root_real == "/" or real == root_real or real.startswith(root_real + "/"))


def _blob_name(target: str, depth: int) -> str | None:
    """The blob a snapshot link at ``depth`` names the way huggingface_hub writes it
    (``../../blobs/<name>``, one more ``../`` per nested folder), else None."""
    prefix = "../" * (depth + 2) + "blobs/"
    if target.startswith(prefix):
        name = target[len(prefix) :]
        if name and "/" not in name and name not in (".", ".."):
            return name
    return None


def _open_file(path: str, follow: bool = True) -> BinaryIO:
    """Open for reading without blocking: a FIFO planted where a file belongs must not hang
    the scan (O_NONBLOCK changes nothing for regular files)."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags if follow else flags | os.O_NOFOLLOW)
    return os.fdopen(fd, "rb")


def _model_dirs(root: str) -> list[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.name.startswith("models--"))


def _sorted_names(path: str) -> list[str]:
    return sorted(os.listdir(path))


def _scan_repo(
    root: str, root_real: str, name: str, memo: dict[_MemoKey, tuple[int, int]], fresh: list[CheckResult]
) -> RepoRecord:
    path = os.path.join(root, name)
    if _leads_outside(root_real, path):
        return RepoRecord(name, errno_codes.EXDEV, [], [], [], [])
    try:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return RepoRecord(name, errno_codes.ENOTDIR, [], [], [], [])
        os.listdir(path)  # an unreadable repo folder is the repo's error, not its snapshots'
    except OSError as exc:
        return RepoRecord(name, exc.errno or errno_codes.EIO, [], [], [], [])
    folders = [os.path.join(path, sub) for sub in ("refs", "snapshots", "blobs")]
    if any(_leads_outside(root_real, folder) for folder in folders):
        return RepoRecord(name, errno_codes.EXDEV, [], [], [], [])
    repo = _Repo(path, root_real, not os.path.islink(folders[1]))
    refs = _read_refs(folders[0])
    snapshots = _scan_snapshots(repo, folders[1], memo, fresh)
    incomplete = _incomplete_blobs(folders[2])
    lock_folder = os.path.join(root, ".locks", name)
    locks = [] if _leads_outside(root_real, lock_folder) else _walk_files(lock_folder)
    return RepoRecord(name, 0, refs, snapshots, incomplete, locks)


def _walk_files(top: str, prefix: str = "", depth: int = 0) -> list[str]:
    """Relative paths of the regular files (and links) under ``top``; empty when absent."""
    try:
        names = _sorted_names(top)
    except OSError:
        return []
    found: list[str] = []
    for entry in names:
        full = os.path.join(top, entry)
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if depth < MAX_DEPTH:
                found.extend(_walk_files(full, prefix + entry + "/", depth + 1))
        else:
            found.append(prefix + entry)
    return found


def _read_refs(refs_dir: str) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for rel in _walk_files(refs_dir):
        try:
            with _open_file(os.path.join(refs_dir, rel), follow=False) as fh:
                text = fh.read(256)
        except OSError:
            continue
        refs.append((rel, text.strip().decode("utf-8", "replace")))
    return refs


def _incomplete_blobs(blobs_dir: str) -> list[tuple[str, int]]:
    try:
        names = _sorted_names(blobs_dir)
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for entry in names:
        if entry.endswith(".incomplete"):
            try:
                size = os.lstat(os.path.join(blobs_dir, entry)).st_size
            except OSError:
                continue
            found.append((entry, size))
    return found


def _scan_snapshots(
    repo: _Repo, snap_root: str, memo: dict[_MemoKey, tuple[int, int]], fresh: list[CheckResult]
) -> list[SnapshotRecord]:
    try:
        names = _sorted_names(snap_root)
    except OSError:
        return []
    snapshots: list[SnapshotRecord] = []
    for commit in names:
        path = os.path.join(snap_root, commit)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        files: list[FileEntry] = []
        try:
            _scan_dir(repo, path, "", 0, memo, fresh, files)
            err = 0
        except OSError as exc:
            err = exc.errno or errno_codes.EIO
        snapshots.append(SnapshotRecord(commit, st.st_mtime_ns, err, files))
    return snapshots


def _scan_dir(
    repo: _Repo,
    path: str,
    prefix: str,
    depth: int,
    memo: dict[_MemoKey, tuple[int, int]],
    fresh: list[CheckResult],
    out: list[FileEntry],
) -> None:
    for entry in _sorted_names(path):
        full = os.path.join(path, entry)
        try:
            lst = os.lstat(full)
        except FileNotFoundError:
            continue  # vanished while we looked
        except OSError as exc:
            if exc.errno == errno_codes.ENAMETOOLONG:
                continue
            raise  # listable but not searchable (EACCES): the snapshot cannot be read
        if stat.S_ISDIR(lst.st_mode):
            if depth < MAX_DEPTH:
                _scan_dir(repo, full, prefix + entry + "/", depth + 1, memo, fresh, out)
            continue
        out.append(_file_entry(repo, full, prefix + entry, depth, lst, memo, fresh))


def _file_entry(
    repo: _Repo,
    full: str,
    rel: str,
    depth: int,
    lst: os.stat_result,
    memo: dict[_MemoKey, tuple[int, int]],
    fresh: list[CheckResult],
) -> FileEntry:
    is_link = stat.S_ISLNK(lst.st_mode)
    target: str | None = None
    st: os.stat_result | None = lst
    content = full  # where the bytes are read
    unfollowed = -1  # the check code of a link that is not followed
    if is_link:
        try:
            target = os.readlink(full)
        except OSError:
            target = ""
        blob = _blob_name(target, depth) if repo.direct_blobs else None
        try:
            if blob is not None:
                content = os.path.join(repo.path, "blobs", blob)
                st = os.lstat(content)
                if stat.S_ISLNK(st.st_mode):
                    st, unfollowed = None, codes.BLOB_IS_LINK
            elif _leads_outside(repo.root_real, full):
                st, unfollowed = None, codes.LINK_OUTSIDE
            else:
                st = os.stat(full)
        except OSError:
            st = None
    if st is None:
        return FileEntry(rel, is_link, target, False, -1, 0, lst.st_mtime_ns, 0, 0, unfollowed, 0, None, 0)

    size = st.st_size
    check, detail, data, flags = -1, 0, None, 0
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(WEIGHT_SUFFIXES):
        kind = KIND_SAFETENSORS if name.endswith(".safetensors") else KIND_WEIGHT_HEAD
        key = (st.st_dev, st.st_ino, size, st.st_mtime_ns, kind)
        known = memo.get(key)
        if known is not None:
            check, detail = known
        else:
            check, detail = _check_weights(content, size, kind)
            fresh.append(CheckResult(st.st_dev, st.st_ino, size, st.st_mtime_ns, kind, check, detail))
    elif depth == 0 or name.endswith(".index.json"):
        # top-level small files, and shard indexes at any depth (diffusers-style subfolders)
        check, detail, data, flags = _read_small_file(content, name, size)
    return FileEntry(
        rel,
        is_link,
        target,
        True,
        size,
        st.st_mtime_ns,
        lst.st_mtime_ns,
        st.st_dev,
        st.st_ino,
        check,
        detail,
        data,
        flags,
    )


def _check_weights(full: str, size: int, kind: int) -> tuple[int, int]:
    if kind == KIND_SAFETENSORS:
        return check_safetensors_file(full)
    if size == 0:
        return codes.EMPTY, 0
    try:
        with _open_file(full) as fh:
            head = fh.read(len(LFS_PREFIX))
    except OSError as exc:
        return codes.IO_ERROR, exc.errno or errno_codes.EIO
    return (codes.LFS_POINTER, 0) if head.startswith(LFS_PREFIX) else (codes.OK, 0)


def _read_small_file(full: str, name: str, size: int) -> tuple[int, int, bytes | None, int]:
    """(check, detail, content, flags) for the top-level files the rules read."""
    if name == "README.md":
        limit = README_HEAD
    elif name in ("config.json", "tokenizer_config.json") or name.endswith(".index.json"):
        if size > READ_WHOLE_LIMIT:
            return -1, 0, None, 0
        limit = size
    else:
        return -1, 0, None, 0
    try:
        with _open_file(full) as fh:
            data = fh.read(limit)
    except OSError as exc:
        return codes.IO_ERROR, exc.errno or errno_codes.EIO, None, 0
    if name == "tokenizer_config.json":
        return codes.OK, 0, None, FLAG_CHAT_TEMPLATE if b'"chat_template"' in data else 0
    return codes.OK, 0, data, 0


__all__ = ["scan_cache"]
