"""What ``rm`` would delete, worked out before anything is touched.

The plan is read with ``lstat``/``readlink`` only: nothing is followed, so a snapshot link that
points outside the cache is reported, never read through. Bytes freed are known up front, and
blobs that a remaining snapshot still uses stay.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from mlxk.cache.locks import lock_dir, lock_is_held
from mlxk.cache.names import dirname_to_name
from mlxk.errors import DeletionFailed, HashNotFound

INCOMPLETE_SUFFIX = ".incomplete"


@dataclass(frozen=True, slots=True)
class DeletePlan:
    name: str
    hub_root: str
    dirname: str
    whole_repo: bool  # the repo folder goes (no revision given, or the only snapshot named)
    commits: tuple[str, ...]  # snapshots that go
    kept_commits: tuple[str, ...]  # snapshots that stay
    refs: tuple[str, ...]  # ref names that go (those naming a removed commit)
    blobs: tuple[str, ...]  # blob names that go
    freed_bytes: int
    incomplete_blobs: tuple[str, ...]  # leftovers of interrupted downloads that go
    stale_locks: tuple[str, ...]  # lock files nobody holds (relative to the repo's lock folder)
    held_locks: tuple[str, ...]  # lock files a live process holds
    outside_links: tuple[
        str, ...
    ]  # snapshot entries linking outside the repo: the link goes, its target never

    @property
    def repo_path(self) -> str:
        return os.path.join(self.hub_root, self.dirname)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    commit: str
    blobs: frozenset[str]  # blob names its links point to
    own_bytes: int  # regular files stored in the snapshot itself (copy mode)
    outside: tuple[str, ...]


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _blob_of_link(link_path: str, blobs_dir: str) -> str | None:
    """The blob a snapshot link names, judged on the link text alone; None when it leads elsewhere."""
    target = os.readlink(link_path)
    resolved = os.path.normpath(os.path.join(os.path.dirname(link_path), target))
    if os.path.dirname(resolved) == blobs_dir:
        return os.path.basename(resolved)
    return None


def _read_snapshot(repo: str, commit: str) -> _Snapshot:
    repo = os.path.abspath(repo)  # link targets are normalized: so must the folder they are compared with be
    blobs_dir = os.path.join(repo, "blobs")
    top = os.path.join(repo, "snapshots", commit)
    blobs: set[str] = set()
    own = 0
    outside: list[str] = []
    top_stat = _lstat(top)
    if top_stat is None or not stat.S_ISDIR(top_stat.st_mode):
        return _Snapshot(commit, frozenset(), 0, ())  # a link or a file where a folder belongs: only it goes
    for folder, dirs, files in os.walk(top, followlinks=False):
        for entry in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = os.path.join(folder, entry)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                blob = _blob_of_link(path, blobs_dir)
                if blob is None:
                    outside.append(os.path.relpath(path, top))
                else:
                    blobs.add(blob)
            elif stat.S_ISREG(st.st_mode):
                own += st.st_size
    return _Snapshot(commit, frozenset(blobs), own, tuple(outside))


def _read_refs(repo: str) -> dict[str, str]:
    refs: dict[str, str] = {}
    base = os.path.join(repo, "refs")
    for folder, _dirs, files in os.walk(base, followlinks=False):
        for file in files:
            path = os.path.join(folder, file)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                with open(path, "rb") as fh:
                    refs[os.path.relpath(path, base)] = fh.read(256).decode("ascii", "replace").strip()
            except OSError:
                continue
    return refs


def lock_folder_is_real(hub_root: str, dirname: str) -> bool:
    """False when ``.locks`` or the repo's lock folder is a symlink: it may lead anywhere, so
    nothing in it is ever deleted."""
    for path in (os.path.join(hub_root, ".locks"), lock_dir(hub_root, dirname)):
        st = _lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _locks(hub_root: str, dirname: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    base = lock_dir(hub_root, dirname)
    stale: list[str] = []
    held: list[str] = []
    if not lock_folder_is_real(hub_root, dirname):
        return (), ()
    for folder, _dirs, files in os.walk(base, followlinks=False):
        for file in files:
            path = os.path.join(folder, file)
            st = _lstat(path)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue  # only regular files are locks; a link here is never followed or removed
            rel = os.path.relpath(path, base)
            (held if lock_is_held(path) else stale).append(rel)
    return tuple(sorted(stale)), tuple(sorted(held))


def check_repo_folder(hub_root: str, dirname: str) -> str:
    """The repo folder's path, after making sure deleting it cannot reach outside the cache."""
    repo = os.path.join(hub_root, dirname)
    st = _lstat(repo)
    if st is None:
        raise DeletionFailed(f"{repo} does not exist")
    if stat.S_ISLNK(st.st_mode):
        raise DeletionFailed(f"{repo} is a symbolic link; mlxk deletes nothing through links")
    if os.path.realpath(repo) != os.path.join(os.path.realpath(hub_root), dirname):
        raise DeletionFailed(f"{repo} resolves outside the cache folder; refusing to delete it")
    return repo


def plan_delete(hub_root: str, dirname: str, revision: str | None) -> DeletePlan:
    """The whole repo, or (``revision``: a commit prefix) one snapshot and what only it uses."""
    repo = check_repo_folder(hub_root, dirname)
    name = dirname_to_name(dirname)
    stale, held = _locks(hub_root, dirname)
    if not stat.S_ISDIR(os.lstat(repo).st_mode):  # a stray file named like a repo
        return DeletePlan(
            name, hub_root, dirname, True, (), (), (), (), os.lstat(repo).st_size, (), stale, held, ()
        )

    commits = _listdir(os.path.join(repo, "snapshots"))
    snapshots = {c: _read_snapshot(repo, c) for c in commits}
    blob_sizes: dict[str, int] = {}
    for blob in _listdir(os.path.join(repo, "blobs")):
        st = os.lstat(os.path.join(repo, "blobs", blob))
        blob_sizes[blob] = st.st_size if stat.S_ISREG(st.st_mode) else 0

    going = commits
    if revision is not None:
        going = [c for c in commits if c.lower().startswith(revision.lower())]
        if not going:
            raise HashNotFound(
                f"{name} has no snapshot starting with {revision}", available_hashes=[c[:8] for c in commits]
            )
        if len(going) > 1:
            raise DeletionFailed(f"{revision} matches several snapshots of {name}: name more of the hash")
    kept = [c for c in commits if c not in going]
    whole = not kept
    outside = tuple(f"{c}/{p}" for c in going for p in snapshots[c].outside)
    refs = _read_refs(repo)
    if whole:
        incomplete = tuple(b for b in blob_sizes if b.endswith(INCOMPLETE_SUFFIX))
        blobs = tuple(b for b in blob_sizes if not b.endswith(INCOMPLETE_SUFFIX))
        freed = sum(blob_sizes.values()) + sum(s.own_bytes for s in snapshots.values())
        return DeletePlan(
            name, hub_root, dirname, True, tuple(going), (), tuple(sorted(refs)), blobs, freed, incomplete,
            stale, held, outside,
        )  # fmt: skip
    still_used = set().union(*(snapshots[c].blobs for c in kept))
    # every blob no remaining snapshot uses: the removed snapshot's own, and orphans a killed rm left
    blobs = tuple(sorted(b for b in blob_sizes if b not in still_used and not b.endswith(INCOMPLETE_SUFFIX)))
    freed = sum(blob_sizes[b] for b in blobs) + sum(snapshots[c].own_bytes for c in going)
    gone_refs = tuple(sorted(r for r, commit in refs.items() if commit in going))
    return DeletePlan(
        name,
        hub_root,
        dirname,
        False,
        tuple(going),
        tuple(kept),
        gone_refs,
        blobs,
        freed,
        (),
        (),
        held,
        outside,
    )
