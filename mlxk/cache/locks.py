"""Lock files under ``.locks``: a file existing means nothing; a lock held means a live writer."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; every lock then counts as stale
    fcntl = None  # type: ignore[assignment]


def lock_is_held(path: str) -> bool:
    """True when another process holds ``path`` (``flock(LOCK_EX|LOCK_NB)`` would block).

    The probe takes the lock for an instant when it is free; a downloader that asks at that
    moment simply waits, as it would for any other process.
    """
    if fcntl is None:  # pragma: no cover - no flock (Windows)
        return False
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO planted in .locks must not hang health
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # only a regular file is a lock huggingface_hub would take
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


REPO_LOCK_NAME = "mlxk.lock"


def lock_dir(hub_root: str, dirname: str) -> str:
    """Where huggingface_hub (and mlxk) keep a repo's lock files."""
    return os.path.join(hub_root, ".locks", dirname)


def remove_locks_root_if_empty(hub_root: str) -> None:
    """mlxk leaves no empty ``.locks`` behind (huggingface_hub makes it again when it needs it)."""
    with contextlib.suppress(OSError):  # not empty, missing, or a link (rmdir never follows one)
        os.rmdir(os.path.join(hub_root, ".locks"))


class RepoLock:
    """mlxk's whole-repo lock: held by ``pull`` for the whole download (huggingface_hub's
    per-blob locks leave gaps between files) and by ``rm`` while it deletes, so the two never
    work on one model at the same time.

    It lives beside huggingface_hub's own lock files, where ``health`` and ``rm`` already look
    for live writers. ``rm`` unlinks it while holding it; a process that was waiting on the old
    file then notices (the path no longer names its inode) and locks the new one.
    """

    def __init__(self, hub_root: str, dirname: str) -> None:
        self.hub_root = hub_root
        self.path = os.path.join(lock_dir(hub_root, dirname), REPO_LOCK_NAME)
        self._fd: int | None = None

    def acquire(self, wait: bool) -> bool:
        """Take the lock; without ``wait``, False when another process holds it."""
        if fcntl is None:  # pragma: no cover - no flock: no cross-process exclusion
            return True
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                self._fd = fd
                return True
            os.close(fd)  # the file was removed (an rm finished) while we waited: lock the new one

    def _open(self) -> int:
        """Open (creating) the lock file. Another process may remove the empty folder between our
        makedirs and open: try again. A lock folder that is a symlink is refused: nothing is
        created or removed through a link."""
        folder = os.path.dirname(self.path)
        for path in (os.path.dirname(folder), folder):
            if os.path.islink(path):
                raise PermissionError(errno.ELOOP, "lock folder is a symbolic link", path)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        for _attempt in range(100):
            try:
                os.makedirs(folder, exist_ok=True)
                return os.open(self.path, flags, 0o644)
            except (FileNotFoundError, FileExistsError):
                continue
        return os.open(self.path, flags, 0o644)  # still racing after 100 tries: let the error speak

    def release(self, *, remove: bool = True) -> None:
        """Drop the lock; with ``remove`` (while still holding it) delete the file and, when
        empty, its folder, so a finished pull or rm leaves no lock file behind."""
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path))  # fails while other lock files are there
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        if remove:
            remove_locks_root_if_empty(self.hub_root)

    def __enter__(self) -> RepoLock:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
