"""Content hashing of many files on all cores: the pure-Python twin of ``mlxk.core._native.HashJob``.

hashlib releases the GIL while it hashes a large buffer and so does ``readinto``, so plain
threads already spread the work over the cores; the native core does the same in C threads
without touching Python objects per chunk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlxk.core.codes import ALGO_GIT_SHA1, ALGO_SHA256, HASH_CHUNK
from mlxk.core.records import HashResult


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class HashJob:
    """Hashes ``paths`` (``algos[i]`` for ``paths[i]``) with ``jobs`` threads (0: one per core)."""

    def __init__(self, paths: list[str], algos: list[int], jobs: int = 0) -> None:
        if len(paths) != len(algos):
            raise ValueError("paths and algos differ in length")
        if any(a not in (ALGO_SHA256, ALGO_GIT_SHA1) for a in algos):
            raise ValueError("unknown hash algorithm")
        self._paths = list(paths)
        self._algos = list(algos)
        self._jobs = jobs if jobs > 0 else default_jobs()
        self._done = 0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def bytes_done(self) -> int:
        return self._done

    def cancel(self) -> None:
        self._cancelled.set()

    def _hash_one(self, index: int) -> HashResult:
        if self._cancelled.is_set():
            return (errno.ECANCELED, None, 0, 0, 0, 0)
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not hang us
        try:
            fd = os.open(self._paths[index], flags)
        except OSError as exc:
            return (exc.errno or errno.EIO, None, 0, 0, 0, 0)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            return (exc.errno or errno.EIO, None, 0, 0, 0, 0)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode):  # before fdopen(), which refuses a directory
            os.close(fd)
            return (errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, None, *ident)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            digest: Any = (
                hashlib.sha256()
                if self._algos[index] == ALGO_SHA256
                else hashlib.sha1(b"blob %d\0" % st.st_size, usedforsecurity=False)
            )
            buffer = bytearray(HASH_CHUNK)
            view = memoryview(buffer)
            total = 0
            try:
                while n := fh.readinto(buffer):
                    if self._cancelled.is_set():
                        return (errno.ECANCELED, None, *ident)
                    digest.update(view[:n])
                    total += n
                    with self._lock:
                        self._done += n
            except OSError as exc:
                return (exc.errno or errno.EIO, None, *ident)
            if total != st.st_size:  # changed while we read: the digest would describe neither
                return (errno.EAGAIN, None, *ident)
            return (0, digest.hexdigest(), *ident)

    def run(self) -> list[HashResult]:
        if not self._paths:
            return []
        # biggest first: the long files start early and the small ones fill the gaps at the end
        order = sorted(range(len(self._paths)), key=lambda i: -_size_hint(self._paths[i]))
        results: list[HashResult | None] = [None] * len(self._paths)
        with ThreadPoolExecutor(min(self._jobs, len(self._paths)), thread_name_prefix="mlxk-hash") as pool:
            for index, result in zip(order, pool.map(self._hash_one, order), strict=True):
                results[index] = result
        return [r for r in results if r is not None]


def _size_hint(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
