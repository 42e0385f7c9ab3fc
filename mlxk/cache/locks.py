"""Lock files under ``.locks``: a file existing means nothing; a lock held means a live writer."""

from __future__ import annotations

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
    if fcntl is None:
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
