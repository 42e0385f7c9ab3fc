"""Hashing blobs while huggingface_hub is still writing them, so verification costs no extra pass.

A thread follows each ``blobs/<etag>.<id>.incomplete`` file as it grows and feeds the bytes to
sha256 (or git's blob sha1). The open descriptor survives the rename into the final blob name, so
when the download ends the digest is ready, tied to that file's (device, inode). Verification
then uses it instead of reading the blob again. It is only a fast path: a digest that does not
match (say the client truncated and restarted a file between two looks) is never trusted to
condemn a file; the blob is hashed again from disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlxk.cache.verify import new_digest

_TICK_S = 0.01
_READ = 4 << 20


def _read_at(fd: int, into: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [into], offset)  # straight into our buffer: no bytes object per read
    data = os.pread(fd, len(into), offset)
    into[: len(data)] = data
    return len(data)


@dataclass
class _Follow:
    fd: int
    size: int  # expected
    digest: Any
    dev_ino: tuple[int, int]
    offset: int = 0
    buffer: bytearray = field(default_factory=lambda: bytearray(_READ))


class TailHasher:
    def __init__(self, blobs_dir: str, expected: Mapping[str, tuple[int, bool]]) -> None:
        self._dir = blobs_dir
        self._expected = dict(expected)  # blob name -> (size, lfs)
        self._follows: dict[str, _Follow] = {}  # .incomplete file name -> state
        self._seen: set[str] = set()
        self._digests: dict[tuple[int, int], str] = {}  # (dev, ino) -> digest of the whole content
        self._distrusted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlxk-tail-hash", daemon=True)

    @property
    def digests(self) -> dict[tuple[int, int], str]:
        """Digests to trust: none at all once any file was rewound (see ``distrust``)."""
        return {} if self._distrusted else dict(self._digests)

    def distrust(self) -> None:
        """The client rewound a file: a digest may mix two attempts, so verification re-reads all."""
        self._distrusted = True

    def __enter__(self) -> TailHasher:
        if self._expected:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        for follow in self._follows.values():
            os.close(follow.fd)
        self._follows.clear()

    def _discover(self) -> None:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".incomplete") or name in self._seen:
                continue
            self._seen.add(name)
            etag = name.split(".", 1)[0]
            if etag not in self._expected:
                continue
            try:
                fd = os.open(os.path.join(self._dir, name), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # already renamed or removed: the blob is hashed from disk later
            st = os.fstat(fd)
            size, lfs = self._expected[etag]
            self._follows[name] = _Follow(fd, size, new_digest(lfs, size), (st.st_dev, st.st_ino))

    def _advance(self, name: str, follow: _Follow) -> bool:
        """Read what has arrived; True when this file is finished with (hashed or given up)."""
        available = os.fstat(follow.fd).st_size
        if available < follow.offset:  # truncated: the client restarted this file
            follow.offset = available + 1  # poisoned: never matches; verification re-reads
            return True
        view = memoryview(follow.buffer)
        while follow.offset < min(available, follow.size):
            n = _read_at(follow.fd, view[: min(_READ, available - follow.offset)], follow.offset)
            if n <= 0:
                break
            follow.digest.update(view[:n])
            follow.offset += n
        if follow.offset == follow.size == available:
            with contextlib.suppress(OSError):
                # finished only once the client let go of the file: renamed, or removed on failure
                if not os.path.exists(os.path.join(self._dir, name)):
                    if os.fstat(follow.fd).st_nlink > 0:  # renamed into place, not deleted
                        self._digests[follow.dev_ino] = follow.digest.hexdigest()
                    return True
        return follow.offset > follow.size

    def _sweep(self) -> None:
        for name, follow in list(self._follows.items()):
            if self._advance(name, follow):
                os.close(follow.fd)
                del self._follows[name]

    def _run(self) -> None:
        while not self._stop.wait(_TICK_S):
            self._discover()
            self._sweep()
        self._discover()
        self._sweep()
