"""``mlxk rm MODEL[@hash]``: plan first, then (once confirmed) delete in a safe order."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from mlxk.cache.delete_plan import DeletePlan, plan_delete
from mlxk.cache.delete_run import execute_delete
from mlxk.cache.locks import RepoLock
from mlxk.cache.names import dirname_to_name, split_revision
from mlxk.cache.resolve import resolve
from mlxk.cache.scan import CacheLocation, repo_dirnames
from mlxk.errors import DeletionFailed, LocksPresent, PermissionDenied, RequiresConfirmation


@dataclass(frozen=True, slots=True)
class Removal:
    plan: DeletePlan
    spec: str
    exact: bool  # the user typed the model's full name; a fuzzy match always needs a yes

    @property
    def name(self) -> str:
        return self.plan.name


def plan_removal(location: CacheLocation, spec: str) -> Removal:
    """Resolve ``spec`` to one cached model and work out what deleting it (or one snapshot) frees."""
    resolved = resolve(repo_dirnames(location.hub_root), spec, single=True)
    dirname = resolved.dirnames[0]
    typed, _ = split_revision(spec)
    return Removal(
        plan_delete(location.hub_root, dirname, resolved.revision), spec, dirname_to_name(dirname) == typed
    )


def remove(removal: Removal, *, force: bool) -> int:
    """Delete what the plan names; returns how many stale lock files went with it.

    A lock held by a live process (a download in progress) refuses the removal unless ``force``;
    mlxk's repo lock is held meanwhile, so a pull that starts now waits until rm is done.
    """
    plan = removal.plan
    if plan.held_locks and not force:
        raise LocksPresent(locks_message(plan))
    lock = RepoLock(plan.hub_root, plan.dirname)
    try:
        locked = lock.acquire(wait=False)
    except OSError as exc:
        # a cache folder the user may not write is permission_denied, as for the deletion itself;
        # anything else (a lock folder that is a link, ELOOP) is a refusal: deletion_failed
        denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        error = PermissionDenied if denied else DeletionFailed
        raise error(f"cannot lock {plan.name}: {exc.strerror or exc}") from exc
    if not locked and not force:
        raise LocksPresent(locks_message(plan))
    try:
        # A pull may have finished between the plan and now (a prompt can wait for minutes): delete
        # only what is still true, and never a plan the user did not see.
        current = plan_delete(plan.hub_root, plan.dirname, plan.commits[0] if not plan.whole_repo else None)
        if _what_goes(current) != _what_goes(plan):
            raise RequiresConfirmation(
                f"{plan.name} changed since the plan was made; run rm again to see the new one"
            )
        return execute_delete(current, holding_repo_lock=locked)
    finally:
        lock.release(remove=locked)  # never remove a lock file that another process holds


def _what_goes(plan: DeletePlan) -> tuple[object, ...]:
    return (plan.whole_repo, plan.commits, plan.kept_commits, plan.refs, plan.blobs)


def locks_message(plan: DeletePlan) -> str:
    held = ", ".join(plan.held_locks) or "mlxk.lock"
    return f"{plan.name} is in use by another process (held locks: {held}); wait for it, or use --force"
