"""What a download writes into the cache, and taking back exactly that when the pull cannot finish.

huggingface_hub writes the commit's tree listing, then per file a lock, an ``.incomplete`` blob, the
blob and the snapshot link. ``Footprint.take`` (under mlxk's repo lock, just before the download)
notes which of those paths are already there and which repo folder the download writes into.
``undo`` removes what was not there before, and only that: a pull the Hub refused halfway leaves
the cache as it was, and a pull whose model was deleted under it (``rm -f``) leaves nothing.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from mlxk.cache.locks import lock_dir, lock_is_held
from mlxk.cache.nofollow import Folder, opened
from mlxk.hub.remote import RemoteFile

_INCOMPLETE = ".incomplete"


def _candidates(commit: str, files: tuple[RemoteFile, ...]) -> tuple[list[str], list[str]]:
    """(files, folders) this download may create, relative to the repo folder."""
    made = [f"trees/{commit}.json"]
    folders = {"blobs", "snapshots", "trees", f"snapshots/{commit}"}
    for f in files:
        made += [f"snapshots/{commit}/{f.path}", f"blobs/{f.blob}"]
        parts = f.path.split("/")[:-1]
        folders.update(f"snapshots/{commit}/{'/'.join(parts[: i + 1])}" for i in range(len(parts)))
    return made, sorted(folders, key=lambda p: -p.count("/"))  # deepest first


def _listdir(path: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class Footprint:
    hub_root: str
    dirname: str
    commit: str
    files: tuple[RemoteFile, ...]
    existed: frozenset[str]  # of the candidate paths (relative to the repo folder)
    repo_existed: bool
    repo: tuple[int, int]  # (device, inode) of the repo folder the download writes into
    blob_names: frozenset[str]  # names in blobs/ before (``.incomplete`` files included)
    lock_names: frozenset[str]  # names in the repo's lock folder before

    @classmethod
    def take(cls, hub_root: str, dirname: str, commit: str, files: tuple[RemoteFile, ...]) -> Footprint:
        """Notes what is there; makes the repo folder when missing, so that its identity is known."""
        repo = os.path.join(hub_root, dirname)
        repo_existed = os.path.lexists(repo)
        os.makedirs(repo, exist_ok=True)
        identity = _identity(repo)
        assert identity is not None
        made, folders = _candidates(commit, files)
        existed = frozenset(
            p for p in [*made, *folders] if os.path.lexists(os.path.join(repo, *p.split("/")))
        )
        return cls(
            hub_root, dirname, commit, files, existed, repo_existed, identity,
            _listdir(os.path.join(repo, "blobs")), _listdir(lock_dir(hub_root, dirname)),
        )  # fmt: skip

    def repo_replaced(self) -> bool:
        """True when the repo folder was deleted (or replaced) since ``take``: an rm ran meanwhile."""
        return _identity(os.path.join(self.hub_root, self.dirname)) != self.repo

    def arrived(self) -> bool:
        """True when the download wrote a blob, whole or partial (``.incomplete``): something a
        next pull can keep or resume."""
        return bool(_listdir(os.path.join(self.hub_root, self.dirname, "blobs")) - self.blob_names)

    def undo(self) -> None:
        """Remove what the download created and nothing else; never through a link."""
        made, folders = _candidates(self.commit, self.files)
        replaced = self.repo_replaced()
        existed = frozenset() if replaced else self.existed  # a new folder: all in it is this pull's
        with opened(self.hub_root, self.dirname) as repo:
            if repo is not None:
                for rel in made:
                    if rel not in existed:
                        repo.unlink_at(rel.split("/"))
                self._remove_incomplete(repo, frozenset() if replaced else self.blob_names)
                for rel in folders:
                    if rel not in existed:
                        repo.rmdir_at(rel.split("/"))
        if replaced or not self.repo_existed:
            with opened(self.hub_root) as hub:
                if hub is not None:
                    hub.rmdir_if_empty(self.dirname)
        self._remove_locks()

    def _remove_incomplete(self, repo: Folder, before: frozenset[str]) -> None:
        ours = {f.blob for f in self.files}
        blobs = repo.child("blobs")
        if blobs is None:
            return
        with blobs:
            for name in blobs.names():
                if name in before or not name.endswith(_INCOMPLETE) or name.split(".", 1)[0] not in ours:
                    continue
                lock = os.path.join(lock_dir(self.hub_root, self.dirname), name.split(".", 1)[0] + ".lock")
                if not lock_is_held(lock):  # a live download of another process is not ours to stop
                    blobs.unlink(name)

    def _remove_locks(self) -> None:
        """huggingface_hub's per-blob lock files this download made (the folder goes with mlxk's lock)."""
        folder = lock_dir(self.hub_root, self.dirname)
        with opened(self.hub_root, ".locks", self.dirname) as locks:
            if locks is None:
                return
            for f in self.files:
                name = f"{f.blob}.lock"
                st = locks.lstat(name)
                if name in self.lock_names or st is None or not stat.S_ISREG(st.st_mode):
                    continue
                if not lock_is_held(os.path.join(folder, name)):
                    locks.unlink(name)
