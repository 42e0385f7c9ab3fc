"""Reading and changing the cache without ever following a symlink: folders opened one component
at a time.

Each folder below the hub root is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the folder
before it, and every unlink, rename and rmdir is made relative to such a descriptor. A link met on
the way is refused (``LinkOnPath``), never followed; a folder swapped for a link after it was
opened cannot redirect anything, since the descriptor still names the real folder.

huggingface_hub writes refs and tree listings as plain files in plain folders; a link there was
put by someone else and may lead anywhere (``/etc/passwd``, ``/dev/zero``), so it is not read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence

_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class LinkOnPath(OSError):
    """A symlink where a folder of the cache belongs."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, "is a symbolic link", path)
        self.path = path


class Folder:
    """An open, real folder; ``path`` is only for messages."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open_root(cls, path: str) -> Folder | None:
        """The hub root as it was given (it may itself be reached through a link); None if missing."""
        try:
            return cls(os.open(path, _DIR_FLAGS), path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def child(self, name: str) -> Folder | None:
        """The real folder ``name`` in here; None when missing or not a folder; ``LinkOnPath`` for a link."""
        path = os.path.join(self.path, name)
        try:
            return Folder(os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=self.fd), path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise
        st = self.lstat(name)  # refused: say why
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise LinkOnPath(path)
        return None

    def make_child(self, name: str) -> Folder:
        """``child``, created when missing (racing creators are fine)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=self.fd)
        found = self.child(name)
        if found is None:
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", os.path.join(self.path, name))
        return found

    def names(self) -> list[str]:
        with os.scandir(self.fd) as entries:
            return [entry.name for entry in entries]

    def unlink(self, name: str) -> bool:
        """Unlink a file or link (never a folder); False when it was not there."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def remove(self, name: str) -> None:
        """Remove ``name`` whatever it is: a folder with all it holds, a file, a link (never its target)."""
        st = self.lstat(name)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            self.unlink(name)
            return
        try:
            sub = self.child(name)
        except LinkOnPath:  # swapped for a link since the lstat: the link goes
            self.unlink(name)
            return
        if sub is None:
            return
        with sub:
            for entry in sub.names():
                sub.remove(entry)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=self.fd)

    def rmdir_if_empty(self, name: str) -> bool:
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError:  # not empty, missing, or not a folder: left alone
            return False
        return True

    def _at(self, parts: Sequence[str], act: Callable[[Folder, str], bool]) -> bool:
        if len(parts) == 1:
            return act(self, parts[0])
        sub = self.child(parts[0])
        if sub is None:
            return False
        with sub:
            return sub._at(parts[1:], act)

    def unlink_at(self, parts: Sequence[str]) -> bool:
        """Unlink the file or link at ``parts`` (a relative path, split) through real folders only;
        False when it is not there (or is a folder)."""

        def unlink_file(folder: Folder, name: str) -> bool:
            st = folder.lstat(name)
            return st is not None and not stat.S_ISDIR(st.st_mode) and folder.unlink(name)

        return self._at(parts, unlink_file)

    def rmdir_at(self, parts: Sequence[str]) -> bool:
        """Remove the folder at ``parts`` when it is empty."""
        return self._at(parts, Folder.rmdir_if_empty)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_path(root: str | Folder, *parts: str) -> Folder | None:
    """``root/parts...`` as a new real folder, each part checked on the way; None when a part is
    missing (or a file); ``LinkOnPath`` naming the first part that is a link. A ``Folder`` root
    stays open (the caller's); a path root is opened as given."""
    if isinstance(root, Folder):
        if not parts:
            return Folder(os.dup(root.fd), root.path)
        folder = root.child(parts[0])
        parts = parts[1:]
    else:
        folder = Folder.open_root(root)
    for part in parts:
        if folder is None:
            return None
        with folder:
            folder = folder.child(part)
    return folder


@contextlib.contextmanager
def opened(root: str | Folder, *parts: str) -> Iterator[Folder | None]:
    folder = open_path(root, *parts)
    try:
        yield folder
    finally:
        if folder is not None:
            folder.close()


_FOLDER = _DIR_FLAGS | _NOFOLLOW
_FILE = os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW | os.O_NONBLOCK  # a FIFO must not hang us


def read_without_links(base: str, parts: Sequence[str], limit: int) -> bytes:
    """Up to ``limit`` bytes of the regular file ``base/parts[0]/.../parts[-1]``. None of
    ``parts`` may be a link (OSError otherwise: ELOOP, or ENOTDIR for a folder); ``base`` (a repo
    folder the scan accepted) is opened as it is."""
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
        raise OSError(errno.EINVAL, "not a path inside the repo", "/".join(parts))
    folder = os.open(base, _DIR_FLAGS)
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
