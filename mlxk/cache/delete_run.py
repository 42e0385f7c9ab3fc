"""Carrying out a ``DeletePlan`` in an order that leaves a readable cache at every step.

A whole repo is first renamed, in one atomic step, into a trash folder under ``.locks`` (on the
same filesystem, and a place huggingface_hub's cache scan never reads), so other tools see the
model either complete or gone. One snapshot goes refs first, then its folder (also renamed away
first), then the blobs only it used: a kill between any two steps leaves a cache that ``list``,
``health`` and ``scan_cache_dir()`` read without complaint. A trash folder left by a killed rm is
swept by the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid

from mlxk.cache.delete_plan import DeletePlan, check_repo_folder, lock_folder_is_real
from mlxk.cache.locks import REPO_LOCK_NAME, lock_dir
from mlxk.errors import DeletionFailed, PermissionDenied

TRASH = ".mlxk-trash"
# Fault injection for the interrupted-rm tests: the process kills itself (SIGKILL, like kill -9)
# right after the named step. Never set outside tests.
_STOP_AFTER_ENV = "MLXK_TEST_RM_KILL_AFTER"


def _step_done(step: str) -> None:
    if os.environ.get(_STOP_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def trash_dir(hub_root: str) -> str:
    return os.path.join(hub_root, ".locks", TRASH)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _rmtree(path: str) -> None:
    # shutil.rmtree never follows symlinks (it unlinks them) and uses fd-relative calls on Linux
    if os.path.lexists(path):
        shutil.rmtree(path)


def _move_to_trash(hub_root: str, path: str) -> str:
    trash = trash_dir(hub_root)
    if os.path.islink(os.path.dirname(trash)) or os.path.islink(trash):
        raise DeletionFailed(f"{trash} is reached through a symbolic link; refusing to move anything there")
    # the pid in the name tells a concurrent rm's sweep to leave this entry to its owner
    target = os.path.join(trash, f"{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    for _attempt in range(100):  # a concurrent sweep may remove the empty trash folder meanwhile
        try:
            os.makedirs(trash, exist_ok=True)
            os.rename(path, target)
            return target
        except (FileNotFoundError, FileExistsError):
            if not os.path.lexists(path):
                raise
    os.rename(path, target)
    return target


def _owner_alive(entry: str) -> bool:
    parts = entry.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


def sweep_trash(hub_root: str) -> None:
    """Finish what earlier, interrupted rm runs left in the trash."""
    trash = trash_dir(hub_root)
    if not os.path.isdir(trash) or os.path.islink(trash):
        return
    for entry in os.listdir(trash):
        if _owner_alive(entry):
            continue
        with contextlib.suppress(FileNotFoundError):  # another rm is emptying the same entry
            _rmtree(os.path.join(trash, entry))
    with contextlib.suppress(OSError):  # not empty: another rm just moved something in
        os.rmdir(trash)


def _empty_trash_entry(path: str) -> None:
    # inside the trash nobody reads any more; the order only keeps the folder scannable meanwhile
    for part in ("refs", "snapshots", "blobs"):
        part_path = os.path.join(path, part)
        if os.path.islink(part_path):
            _unlink(part_path)  # the link goes, never what it points to
        else:
            _rmtree(part_path)
    _rmtree(path)


def _remove_locks(plan: DeletePlan, holding_repo_lock: bool) -> int:
    base = lock_dir(plan.hub_root, plan.dirname)
    removed = 0
    if not lock_folder_is_real(plan.hub_root, plan.dirname):
        return 0
    for rel in plan.stale_locks:
        path = os.path.join(base, rel)
        if os.path.lexists(path):
            _unlink(path)
            removed += 1
    if holding_repo_lock:  # ours, held right now: a waiting pull notices it went
        _unlink(os.path.join(base, REPO_LOCK_NAME))
    if os.path.isdir(base) and not os.path.islink(base):
        for folder, _dirs, _files in sorted(os.walk(base), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # only empty folders: a lock created meanwhile stays
                os.rmdir(folder)
    return removed


def _delete_revision(plan: DeletePlan) -> None:
    repo = plan.repo_path
    for ref in plan.refs:
        _unlink(os.path.join(repo, "refs", ref))
    _step_done("refs")
    for commit in plan.commits:
        snapshot = os.path.join(repo, "snapshots", commit)
        if os.path.lexists(snapshot):
            if os.path.isdir(snapshot) and not os.path.islink(snapshot):
                _rmtree(_move_to_trash(plan.hub_root, snapshot))
            else:
                _unlink(snapshot)
    _step_done("snapshots")
    for blob in plan.blobs:
        _unlink(os.path.join(repo, "blobs", blob))
    _step_done("blobs")
    for commit in plan.commits:  # huggingface_hub's per-commit side files
        _unlink(os.path.join(repo, "trees", f"{commit}.json"))
        _rmtree(os.path.join(repo, ".no_exist", commit))


def execute_delete(plan: DeletePlan, holding_repo_lock: bool = True) -> int:
    """Delete what the plan names; returns the number of stale lock files removed."""
    check_repo_folder(plan.hub_root, plan.dirname)  # again: the folder may have changed since planning
    try:
        sweep_trash(plan.hub_root)
        if not plan.whole_repo:
            _delete_revision(plan)
            sweep_trash(plan.hub_root)  # the snapshot went through the trash: leave no empty trash folder
            return 0
        if os.path.isdir(plan.repo_path):
            moved = _move_to_trash(plan.hub_root, plan.repo_path)
            _step_done("rename")
            _empty_trash_entry(moved)
        else:
            _unlink(plan.repo_path)
        _step_done("contents")
        removed = _remove_locks(plan, holding_repo_lock)
        sweep_trash(plan.hub_root)
        return removed
    except PermissionError as exc:
        raise PermissionDenied(f"cannot delete {exc.filename or plan.name}: {exc.strerror or exc}") from exc
    except OSError as exc:
        where = f" at {exc.filename}" if exc.filename else ""
        raise DeletionFailed(f"deleting {plan.name} failed{where}: {exc.strerror or exc}") from exc
