"""Reading a small file of a repo without following any link on the way to it.

huggingface_hub writes refs and tree listings as plain files in plain folders; a link there was
put by someone else and may lead anywhere (``/etc/passwd``, ``/dev/zero``). It is not read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not hang us


def read_without_links(base: str, parts: Sequence[str], limit: int) -> bytes:
    """Up to ``limit`` bytes of the regular file ``base/parts[0]/.../parts[-1]``. None of
    ``parts`` may be a link (OSError otherwise: ELOOP, or ENOTDIR for a folder); ``base`` (a repo
    folder the scan accepted) is opened as it is."""
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
        raise OSError(errno.EINVAL, "not a path inside the repo", "/".join(parts))
    folder = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _FOLDER, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], _FILE, dir_fd=folder)
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", parts[-1])
        return fh.read(limit)
