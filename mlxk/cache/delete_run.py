"""Carrying out a ``DeletePlan`` in an order that leaves a readable cache at every step.

Every deletion is made relative to folders opened one component at a time without following
links (``mlxk.cache.nofollow``), so it stays inside the hub root even if the tree changes after
the plan: a folder turned into a link is refused, never followed.

A whole repo is first renamed, in one atomic step, into the trash (``mlxk.cache.trash``), so other
tools see the model either complete or gone; after that rename nothing can fail the command (what
cannot be removed now is swept later). One snapshot's removal writes its journal first, then goes
refs, snapshot folder (renamed into the trash), blobs only it used: a kill between any two steps
leaves a cache that ``list``, ``health`` and ``scan_cache_dir()`` read without complaint, and a
journal from which the next rm, pull or health finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Collection, Iterable

from mlxk.cache.delete_plan import DeletePlan, check_repo_folder, link_refused, plan_pending, stale_locks
from mlxk.cache.locks import REPO_LOCK_NAME, RepoLock, remove_locks_root_if_empty
from mlxk.cache.nofollow import Folder, LinkOnPath, opened
from mlxk.cache.trash import (
    SNAPSHOT_ENTRY,
    TRASH,
    Journal,
    TrashEntry,
    is_blob_name,
    list_entries,
    make_entry,
    new_entry_name,
    open_trash,
    read_journal,
    write_journal,
)
from mlxk.errors import DeletionFailed, MlxkError, PermissionDenied

# Fault injection for the interrupted-rm tests: the process kills itself (SIGKILL, like kill -9)
# right after the named step. Never set outside tests.
_STOP_AFTER_ENV = "MLXK_TEST_RM_KILL_AFTER"


def _step_done(step: str) -> None:
    if os.environ.get(_STOP_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _open_hub(hub_root: str) -> Folder:
    hub = Folder.open_root(hub_root)
    if hub is None:
        raise DeletionFailed(f"the cache folder {hub_root} does not exist")
    return hub


# --- a whole repo --------------------------------------------------------------------------------


def _rename_into_trash(hub: Folder, name: str) -> str:
    """Moves ``hub/name`` into the trash in one rename; returns its entry name there. A concurrent
    sweep may remove the empty trash folder meanwhile: then make it again."""
    entry = new_entry_name(name)
    for _attempt in range(100):
        trash = open_trash(hub, create=True)
        assert trash is not None
        with trash:
            try:
                os.rename(name, entry, src_dir_fd=hub.fd, dst_dir_fd=trash.fd)
                return entry
            except FileNotFoundError:
                if hub.lstat(name) is None:
                    raise
    raise FileNotFoundError(f"the trash folder under {hub.path} keeps vanishing")


def _remove_trash_entry(hub: Folder, entry: str) -> None:
    with contextlib.suppress(OSError):  # what cannot go now, the next sweep takes
        trash = open_trash(hub, create=False)
        if trash is not None:
            with trash:
                trash.remove(entry)


def _prune_empty(folder: Folder) -> None:
    for name in folder.names():
        st = folder.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            sub = folder.child(name)
            if sub is not None:
                with sub:
                    _prune_empty(sub)
            folder.rmdir_if_empty(name)


def _remove_locks(hub: Folder, dirname: str, stale: Iterable[str], holding_repo_lock: bool) -> int:
    """Unlink the repo's stale lock files (and mlxk's own, held by us), then its empty lock folders."""
    try:
        locks = hub.child(".locks")
        lock_folder = locks.child(dirname) if locks is not None else None
    except LinkOnPath:
        return 0  # a lock folder that is a link may lead anywhere: nothing in it is removed
    removed = 0
    try:
        if lock_folder is not None:
            removed = sum(lock_folder.unlink_at(rel.split("/")) for rel in stale)
            if holding_repo_lock:  # ours, held right now: a waiting pull notices it went
                lock_folder.unlink(REPO_LOCK_NAME)
            _prune_empty(lock_folder)  # only empty folders go: a lock created meanwhile stays
            if locks is not None:
                locks.rmdir_if_empty(dirname)
    finally:
        for folder in (lock_folder, locks):
            if folder is not None:
                folder.close()
    return removed


def _delete_repo(hub: Folder, plan: DeletePlan, holding_repo_lock: bool) -> int:
    st = hub.lstat(plan.dirname)
    entry = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        entry = _rename_into_trash(hub, plan.dirname)  # the commit point: gone for everyone
        _step_done("rename")
        with contextlib.suppress(OSError), opened(hub, ".locks", TRASH, entry) as moved:
            if moved is not None:
                for name in moved.names():
                    moved.remove(name)
    elif st is not None:
        hub.unlink(plan.dirname)  # a stray file named like a repo
    _step_done("contents")
    removed = _remove_locks(hub, plan.dirname, plan.stale_locks, holding_repo_lock)
    if entry is not None:
        _remove_trash_entry(hub, entry)  # the entry's name, kept until now, told a sweep whose locks to clean
    return removed


# --- one snapshot (and what killed removals of the same repo left) ---------------------------------


def _delete_snapshots(hub: Folder, plan: DeletePlan, entry_name: str | None = None) -> None:
    """Refs, snapshot folders, blobs, side files, in that order. ``entry_name``: a killed run's trash
    entry whose journal this plan finishes; else a new entry and journal are made first."""
    repo = hub.child(plan.dirname)
    if repo is None:
        return  # the repo went meanwhile: nothing of it is left to delete
    with repo:
        if entry_name is None:
            new_entry, entry_name = make_entry(hub, SNAPSHOT_ENTRY)
            with new_entry:
                write_journal(new_entry, Journal(plan.dirname, plan.commits, plan.blobs))
        with opened(hub, ".locks", TRASH, entry_name) as entry:
            if entry is None:
                raise DeletionFailed(f"the trash entry {entry_name} vanished")
            entry.remove(SNAPSHOT_ENTRY)  # what a killed run had started to empty
            _remove_refs(repo, plan.refs)
            _step_done("refs")
            _remove_snapshot_folders(repo, entry, plan.commits)
            _step_done("snapshots")
            _free_blobs(repo, plan.blobs)
            _step_done("blobs")
            _remove_side_files(repo, plan.commits)
    _remove_trash_entry(hub, entry_name)  # the journal goes last


def _remove_refs(repo: Folder, refs: Iterable[str]) -> None:
    folder = repo.child("refs")
    if folder is not None:
        with folder:
            for ref in refs:
                folder.unlink_at(ref.split("/"))


def _remove_snapshot_folders(repo: Folder, entry: Folder, commits: Iterable[str]) -> None:
    folder = repo.child("snapshots")
    if folder is None:
        return
    with folder:
        for commit in commits:
            st = folder.lstat(commit)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):  # renamed away first: never seen half-deleted
                os.rename(commit, SNAPSHOT_ENTRY, src_dir_fd=folder.fd, dst_dir_fd=entry.fd)
                entry.remove(SNAPSHOT_ENTRY)
            else:
                folder.unlink(commit)  # a link or a file where the folder belongs: only it goes


def _free_blobs(repo: Folder, blobs: Iterable[str]) -> None:
    folder = repo.child("blobs")
    if folder is None:
        return
    with folder:
        for blob in blobs:
            if is_blob_name(blob):  # never anything else, whatever a plan or journal says
                folder.unlink_at([blob])  # a file or link; a folder stays


def _remove_side_files(repo: Folder, commits: Iterable[str]) -> None:
    """huggingface_hub's per-commit files: the tree listing and the record of missing files."""
    commits = list(commits)
    trees = repo.child("trees")
    if trees is not None:
        with trees:
            for commit in commits:
                trees.unlink(f"{commit}.json")
    missing = repo.child(".no_exist")
    if missing is not None:
        with missing:
            for commit in commits:
                missing.remove(commit)


# --- finishing what killed runs left --------------------------------------------------------------


def _finish_journal(hub: Folder, entry: TrashEntry, journal: Journal, holding: str | None) -> bool:
    """Finish a killed snapshot removal under its repo's lock; False when the lock is busy (a pull
    may be linking those blobs again right now): left for a later command."""
    lock = None if journal.repo == holding else RepoLock(hub.path, journal.repo)
    if lock is not None and not lock.acquire(wait=False):
        return False
    try:
        plan = plan_pending(hub.path, journal)
        if plan is not None:
            _delete_snapshots(hub, plan, entry.name)
    finally:
        if lock is not None:
            lock.release()
    return True


def _sweep_entry(hub: Folder, entry: TrashEntry, holding: str | None, repos: Collection[str] | None) -> None:
    trash = open_trash(hub, create=False)
    if trash is None:
        return
    with trash:
        if entry.is_snapshot:
            folder = trash.child(entry.name)
            journal = None
            if folder is not None:
                with folder:
                    journal = read_journal(folder)
            if journal is not None:
                if repos is not None and journal.repo not in repos:
                    return
                if not _finish_journal(hub, entry, journal, holding):
                    return
            elif repos is not None:
                return
            trash.remove(entry.name)
            return
        if repos is not None:
            return
        trash.remove(entry.name)
    if entry.repo is not None and hub.lstat(entry.repo) is None:
        # a whole repo's rm was killed after its rename: its lock files (its own included) are stale
        _remove_locks(hub, entry.repo, stale_locks(hub.path, entry.repo), holding_repo_lock=False)


def _sweep(hub_root: str, holding: str | None, repos: Collection[str] | None) -> None:
    entries = list_entries(hub_root)
    if not entries and not os.path.lexists(os.path.join(hub_root, ".locks", TRASH)):
        return  # the common case: one failed lstat
    # housekeeping after the command's own work: a hub gone meanwhile (DeletionFailed) fails nothing
    with contextlib.suppress(OSError, MlxkError), _open_hub(hub_root) as hub:
        for entry in entries:
            if entry.owner_alive():
                continue
            with contextlib.suppress(OSError, MlxkError):  # one bad entry does not stop the others
                _sweep_entry(hub, entry, holding, repos)
        with contextlib.suppress(OSError), opened(hub, ".locks") as locks:
            if locks is not None:
                locks.rmdir_if_empty(TRASH)
    remove_locks_root_if_empty(hub_root)


def sweep_trash(hub_root: str, holding: str | None = None) -> None:
    """Finish what earlier, killed rm runs left in the trash. ``holding``: the repo whose lock the
    caller holds (its pending removals are finished without taking it again)."""
    _sweep(hub_root, holding, None)


def finish_pending_deletions(hub_root: str, dirnames: Collection[str]) -> None:
    """Finish the snapshot removals that killed rm runs left for these repos, where nobody holds the
    repo's lock. Never raises: a command that reads the cache (health) calls it first."""
    with contextlib.suppress(OSError, MlxkError):
        _sweep(hub_root, None, set(dirnames))


# --- the entry point ------------------------------------------------------------------------------


def execute_delete(plan: DeletePlan, holding_repo_lock: bool = True) -> int:
    """Delete what the plan names; returns the number of stale lock files removed."""
    check_repo_folder(plan.hub_root, plan.dirname)  # again: the folder may have changed since planning
    try:
        with _open_hub(plan.hub_root) as hub:
            if plan.whole_repo:
                removed = _delete_repo(hub, plan, holding_repo_lock)
            else:
                _delete_snapshots(hub, plan)
                removed = 0
        sweep_trash(plan.hub_root, holding=plan.dirname if holding_repo_lock else None)
        return removed
    except LinkOnPath as exc:
        raise link_refused(exc.path) from exc
    except PermissionError as exc:
        raise PermissionDenied(f"cannot delete {exc.filename or plan.name}: {exc.strerror or exc}") from exc
    except OSError as exc:
        where = f" at {exc.filename}" if exc.filename else ""
        raise DeletionFailed(f"deleting {plan.name} failed{where}: {exc.strerror or exc}") from exc
