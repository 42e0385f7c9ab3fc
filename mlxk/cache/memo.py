"""The verification memo: check results keyed by file identity, kept in mlxk's own cache dir.

A weight file whose (device, inode, size, mtime) is unchanged since it was checked is not read
again. The memo file lives outside the hub folder (huggingface_hub reports any foreign entry
there as a corrupt repo), one per hub path, and is replaced atomically so concurrent runs
never see a half-written file; the last writer wins, and a lost update only costs a re-check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable

from mlxk.core import codes
from mlxk.core.memo_format import RECORD, MemoRecord, pack_records, unpack_records
from mlxk.core.records import CheckResult

MAGIC = b"MLXKMEMO\x01\x00\x00\x00"
# A file changed twice within its mtime's resolution could keep size and mtime: results for
# files modified this recently are not remembered (the "racy" window git also guards against).
RACY_WINDOW_NS = 2_000_000_000


def memo_allowed(cache_dir: str, hub_root: str) -> bool:
    """False when mlxk's cache folder would fall inside the hub folder (e.g. HF_HUB_CACHE set to
    XDG_CACHE_HOME): huggingface_hub would then report the memo as a corrupt repo."""
    hub = os.path.realpath(hub_root)
    own = os.path.realpath(cache_dir)
    return own != hub and not own.startswith(hub.rstrip(os.sep) + os.sep)


def memo_path(cache_dir: str, hub_root: str) -> str:
    key = hashlib.sha256(os.path.realpath(hub_root).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return os.path.join(cache_dir, f"memo-{key}.bin")


def load_memo(path: str) -> bytes:
    """The memo body (sorted records), or empty when absent or not ours."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return b""
    if not data.startswith(MAGIC) or (len(data) - len(MAGIC)) % RECORD.size:
        return b""
    return data[len(MAGIC) :]


def _rememberable(result: CheckResult, now_ns: int) -> bool:
    return result.code != codes.IO_ERROR and now_ns - result.mtime_ns > RACY_WINDOW_NS


def merge(body: bytes, fresh: Iterable[CheckResult], now_ns: int | None = None) -> bytes | None:
    """The new memo body, or None when nothing worth remembering changed."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    keep = [tuple(r) for r in fresh if _rememberable(r, now_ns)]
    if not keep:
        return None
    records: list[MemoRecord] = [*unpack_records(body), *keep]  # type: ignore[list-item]
    return pack_records(records)


def save_memo(path: str, body: bytes) -> bool:
    """Write atomically (temp file + rename); False when the folder is not writable."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".memo-", dir=os.path.dirname(path))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC)
            fh.write(body)
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
