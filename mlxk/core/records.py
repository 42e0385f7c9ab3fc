"""The compact records that a cache scan and a hash job return (native core and twin alike).

They hold raw filesystem facts only; meaning (health, names, types) is given by ``mlxk.cache``.
NamedTuples keep construction cheap for tens of thousands of files.
"""

from __future__ import annotations

from typing import NamedTuple

# FileEntry.flags
FLAG_CHAT_TEMPLATE = 1  # tokenizer_config.json mentions "chat_template"

# What the scan does with a file at a snapshot's top level, by name (the same table in C).
READ_WHOLE_LIMIT = 4 * 1024 * 1024  # config.json and index files larger than this are not read
README_HEAD = 8 * 1024  # enough for any sensible README front matter
LFS_PREFIX = b"version https://git-lfs"
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".npz",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
)
MAX_DEPTH = 8  # nested folders inside a snapshot that the scan follows


class FileEntry(NamedTuple):
    path: str  # relative to the snapshot folder, "/"-separated
    is_link: bool
    target: str | None  # readlink() text of a symlink
    exists: bool  # the entry (or what its link points to) is there and was looked at
    size: int  # bytes of the content; -1 when missing
    mtime_ns: int  # of the content (link followed)
    lmtime_ns: int  # of the entry itself (the link, not followed)
    dev: int
    ino: int
    # result code (mlxk.core.codes) for read/checked files, -1 for files only stat'ed; for a link
    # not followed (exists False): LINK_OUTSIDE or BLOB_IS_LINK
    check: int
    detail: int
    content: bytes | None  # config.json, *.index.json (whole) and README.md (head)
    flags: int


class SnapshotRecord(NamedTuple):
    commit: str  # folder name under snapshots/
    mtime_ns: int
    errno: int  # 0, or why the folder could not be listed
    files: list[FileEntry]


class RepoRecord(NamedTuple):
    dirname: str  # models--org--name
    # 0, or why the repo folder could not be read: ENOTDIR for a plain file, EXDEV when it (or its
    # refs/, snapshots/ or blobs/ folder) is a link leading outside the hub root, not followed
    errno: int
    refs: list[tuple[str, str]]  # (ref name, commit text stripped) for refs/** files
    snapshots: list[SnapshotRecord]
    incomplete: list[tuple[str, int]]  # blobs/*.incomplete: (name, size)
    locks: list[str]  # lock files under .locks/<dirname>/, relative paths


# What HashJob.run() gives per path: (errno or 0, hex digest or None, dev, ino, size, mtime_ns)
HashResult = tuple[int, str | None, int, int, int, int]


class CheckResult(NamedTuple):
    """A fresh check of one file, for the verification memo."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    kind: int  # which check (mlxk.core.memo_format.KIND_*)
    code: int
    detail: int
