"""What ``rm`` would delete, worked out before anything is touched.

The plan is read with ``lstat``/``readlink`` only: nothing is followed, so a snapshot link that
points outside the cache is reported, never read through, and a repo folder (``snapshots``,
``blobs``, ...) that is a link is never listed: a whole repo unlinks it, one snapshot's removal is
refused. Bytes freed are known up front; blobs that a remaining snapshot still uses stay, and only
a file named like a blob (its checksum) is ever freed as one. Snapshot removals that a killed rm
left unfinished (its journal in the trash) join the plan of the next rm of that repo.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from mlxk.cache.locks import lock_dir, lock_is_held
from mlxk.cache.names import dirname_to_name
from mlxk.cache.nofollow import read_without_links
from mlxk.cache.trash import Journal, is_blob_name, pending_journals
from mlxk.errors import AmbiguousMatch, DeletionFailed, HashNotFound

INCOMPLETE_SUFFIX = ".incomplete"
# the folders of a repo that rm deletes in; each must be a real folder for one snapshot's removal
REPO_FOLDERS = ("refs", "snapshots", "blobs", "trees", ".no_exist")


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
    # snapshot entries linking outside the repo, and repo folders that are links: the link goes,
    # its target never
    outside_links: tuple[str, ...]


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
            name = os.path.relpath(os.path.join(folder, file), base)
            try:  # a ref that is a link (or sits below one) may lead anywhere: it is not read
                text = read_without_links(repo, ["refs", *name.split(os.sep)], 256)
            except OSError:
                continue
            refs[name] = text.decode("ascii", "replace").strip()
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


def stale_locks(hub_root: str, dirname: str) -> tuple[str, ...]:
    """The repo's lock files nobody holds (relative to its lock folder)."""
    return _locks(hub_root, dirname)[0]


def link_refused(path: str) -> DeletionFailed:
    return DeletionFailed(f"{path} is a symbolic link; mlxk deletes nothing through links")


def check_repo_folder(hub_root: str, dirname: str) -> str:
    """The repo folder's path, after making sure deleting it cannot reach outside the cache."""
    repo = os.path.join(hub_root, dirname)
    st = _lstat(repo)
    if st is None:
        raise DeletionFailed(f"{repo} does not exist")
    if stat.S_ISLNK(st.st_mode):
        raise link_refused(repo)
    if os.path.realpath(repo) != os.path.join(os.path.realpath(hub_root), dirname):
        raise DeletionFailed(f"{repo} resolves outside the cache folder; refusing to delete it")
    return repo


def linked_folders(repo: str) -> tuple[str, ...]:
    """The repo's own folders that are symlinks (they may lead anywhere)."""
    found = []
    for part in REPO_FOLDERS:
        st = _lstat(os.path.join(repo, part))
        if st is not None and stat.S_ISLNK(st.st_mode):
            found.append(part)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _Repo:
    commits: list[str]
    snapshots: dict[str, _Snapshot]
    blob_sizes: dict[str, int]  # every entry of blobs/; 0 for what is not a regular file
    blob_files: frozenset[str]  # the entries of blobs/ that are files or links (not folders)
    refs: dict[str, str]
    linked: tuple[str, ...]

    def orphans(self, kept: list[str]) -> list[str]:
        """Blob-named files no kept snapshot links to."""
        used = set().union(*(self.snapshots[c].blobs for c in kept))
        return sorted(b for b in self.blob_files if is_blob_name(b) and b not in used)


def _read_repo(repo: str, *, one_snapshot: bool) -> _Repo:
    linked = linked_folders(repo)
    if linked and one_snapshot:
        raise link_refused(os.path.join(repo, linked[0]))
    commits = [] if "snapshots" in linked else _listdir(os.path.join(repo, "snapshots"))
    blob_sizes: dict[str, int] = {}
    files: set[str] = set()
    for blob in [] if "blobs" in linked else _listdir(os.path.join(repo, "blobs")):
        st = _lstat(os.path.join(repo, "blobs", blob))
        if st is None:
            continue
        blob_sizes[blob] = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if not stat.S_ISDIR(st.st_mode):
            files.add(blob)
    refs = {} if "refs" in linked else _read_refs(repo)
    snapshots = {c: _read_snapshot(repo, c) for c in commits}
    return _Repo(commits, snapshots, blob_sizes, frozenset(files), refs, linked)


def _pick(commits: list[str], pending: list[str], name: str, revision: str) -> str:
    """The one snapshot (or pending removal) whose commit starts with ``revision``."""
    prefix = revision.lower()
    going = [c for c in commits if c.lower().startswith(prefix)]
    if not going:  # the snapshot a killed rm already moved away: the rerun finishes that removal
        going = sorted({c for c in pending if c.lower().startswith(prefix)})
    if not going:
        raise HashNotFound(
            f"{name} has no snapshot starting with {revision}", available_hashes=[c[:8] for c in commits]
        )
    if len(going) > 1:
        raise AmbiguousMatch(  # as every other command says it (mlxk.cache.build)
            f"{revision} matches several snapshots of {name}", matches=[f"{name}@{c[:8]}" for c in going]
        )
    return going[0]


def plan_delete(hub_root: str, dirname: str, revision: str | None) -> DeletePlan:
    """The whole repo, or (``revision``: a commit prefix) one snapshot and what only it uses.

    One snapshot's plan also finishes what killed removals of this repo left (their snapshots
    go too); when nothing would remain, the whole repo goes."""
    repo = check_repo_folder(hub_root, dirname)
    name = dirname_to_name(dirname)
    stale, held = _locks(hub_root, dirname)
    if not stat.S_ISDIR(os.lstat(repo).st_mode):  # a stray file named like a repo
        return DeletePlan(
            name, hub_root, dirname, True, (), (), (), (), os.lstat(repo).st_size, (), stale, held, ()
        )
    found = _read_repo(repo, one_snapshot=revision is not None)
    going = list(found.commits)
    if revision is not None:
        pending = [c for journal in pending_journals(hub_root, dirname) for c in journal.commits]
        going = [_pick(found.commits, pending, name, revision)]
        going += sorted(c for c in set(pending) if c not in going)
    kept = [c for c in found.commits if c not in going]
    present = [c for c in going if c in found.snapshots]
    outside = tuple(f"{c}/{p}" for c in present for p in found.snapshots[c].outside) + found.linked
    if not kept:
        incomplete = tuple(b for b in found.blob_sizes if b.endswith(INCOMPLETE_SUFFIX))
        blobs = tuple(b for b in found.blob_sizes if not b.endswith(INCOMPLETE_SUFFIX))
        own = sum(s.own_bytes for s in found.snapshots.values())
        return DeletePlan(
            name, hub_root, dirname, True, tuple(present), (), tuple(sorted(found.refs)), blobs,
            sum(found.blob_sizes.values()) + own, incomplete, stale, held, outside,
        )  # fmt: skip
    # every blob no remaining snapshot uses: the removed snapshot's own, and orphans a killed rm left
    blobs = tuple(found.orphans(kept))
    freed = sum(found.blob_sizes[b] for b in blobs) + sum(found.snapshots[c].own_bytes for c in present)
    gone_refs = tuple(sorted(r for r, commit in found.refs.items() if commit in going))
    return DeletePlan(
        name, hub_root, dirname, False, tuple(going), tuple(kept), gone_refs, blobs, freed, (), (), held,
        outside,
    )  # fmt: skip


def plan_pending(hub_root: str, journal: Journal) -> DeletePlan | None:
    """What is left of a killed snapshot removal: its snapshots and refs, and those of the blobs it
    named that no remaining snapshot links to by now. None when the repo is gone."""
    try:
        repo = check_repo_folder(hub_root, journal.repo)
    except DeletionFailed:
        if not os.path.lexists(os.path.join(hub_root, journal.repo)):
            return None
        raise
    if not stat.S_ISDIR(os.lstat(repo).st_mode):
        return None
    found = _read_repo(repo, one_snapshot=True)
    kept = [c for c in found.commits if c not in journal.commits]
    orphans = set(found.orphans(kept))
    blobs = tuple(b for b in journal.blobs if b in orphans)
    present = [c for c in journal.commits if c in found.snapshots]
    freed = sum(found.blob_sizes[b] for b in blobs) + sum(found.snapshots[c].own_bytes for c in present)
    refs = tuple(sorted(r for r, commit in found.refs.items() if commit in journal.commits))
    outside = tuple(f"{c}/{p}" for c in present for p in found.snapshots[c].outside)
    return DeletePlan(
        dirname_to_name(journal.repo), hub_root, journal.repo, False, journal.commits, tuple(kept), refs,
        blobs, freed, (), (), (), outside,
    )  # fmt: skip
