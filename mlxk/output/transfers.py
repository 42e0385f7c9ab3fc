"""``pull`` and ``rm`` results -> the contract's open ``data`` objects, and text for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlxk.output.escape import escape_controls
from mlxk.output.units import human_size

if TYPE_CHECKING:
    from mlxk.cache.delete_plan import DeletePlan
    from mlxk.errors import MlxkError
    from mlxk.ops.pull import PullResult, PullTarget
    from mlxk.ops.rm import Removal

# error type -> the contract's download_status
_PULL_STATUS = {"access_denied": "access_denied", "requires_confirmation": "requires_confirmation"}
_FAILED = (
    "download_failed", "network_error", "insufficient_space", "model_unhealthy", "model_not_found", "interrupted",
)  # fmt: skip


def pull_data(result: PullResult) -> dict[str, Any]:
    target = result.target
    return {
        "model": target.expanded_from or target.repo_id,
        "download_status": result.status,
        "message": pull_message(result),
        "expanded_name": target.repo_id,
        "revision": target.revision,
        "commit": result.commit,
        "files": result.files,
        "size_bytes": result.total_bytes,
        "downloaded_bytes": result.downloaded_bytes,
        "duration_s": round(result.seconds, 3),
        "health": "healthy" if result.healthy else "unhealthy",
        "reason": result.reason,
        "leftovers_cleaned": result.leftovers_cleaned,
    }


def pull_error_data(error: MlxkError, spec: str) -> dict[str, Any]:
    """What a failed pull says in ``data``: the target when it was understood, and the status."""
    from mlxk.ops.pull import PullResult, PullTarget

    if isinstance(error.data, PullResult):
        data = pull_data(error.data)
        data.update(download_status="failed", message=error.message)
        return data
    target: PullTarget | None = error.data if isinstance(error.data, PullTarget) else None
    status = _PULL_STATUS.get(error.error_type, "failed" if error.error_type in _FAILED else "error")
    return {
        "model": (target.expanded_from or target.repo_id) if target else spec,
        "download_status": status,
        "message": error.message,
        "expanded_name": target.repo_id if target else None,
        "revision": target.revision if target else None,
    }


def pull_message(result: PullResult) -> str:
    name = result.target.repo_id
    if result.status == "already_exists":
        return f"{name} is already in the cache and complete ({result.commit[:8]})"
    rate = result.downloaded_bytes / result.seconds if result.seconds > 0 else 0.0
    return (
        f"downloaded {name} ({result.commit[:8]}): {result.files} files, "
        f"{human_size(result.downloaded_bytes)} in {result.seconds:.1f} s ({human_size(int(rate))}/s)"
    )


def render_pull(result: PullResult) -> str:
    text = pull_message(result) + "\n"
    if result.leftovers_cleaned:
        text += f"removed {result.leftovers_cleaned} leftover(s) of interrupted downloads\n"
    return text


def _plan_fields(plan: DeletePlan) -> dict[str, Any]:
    return {
        "revision": None if plan.whole_repo else (plan.commits[0] if plan.commits else None),
        "whole_repo": plan.whole_repo,
        "snapshots": list(plan.commits),
        "kept_snapshots": list(plan.kept_commits),
        "refs": list(plan.refs),
        "blobs": len(plan.blobs),
        "incomplete_blobs": len(plan.incomplete_blobs),
        "freed_bytes": plan.freed_bytes,
        "stale_lock_files": len(plan.stale_locks),
        "held_locks": list(plan.held_locks),
        "outside_links": list(plan.outside_links),
    }


def rm_data(removal: Removal, action: str, message: str, lock_files_cleaned: int = 0) -> dict[str, Any]:
    return {
        "model": removal.name,
        "action": action,
        "message": message,
        "requires_confirmation": action == "requires_confirmation",
        "matches": [removal.name],
        "lock_files_cleaned": lock_files_cleaned,
        **_plan_fields(removal.plan),
    }


def rm_ambiguous_data(spec: str, matches: list[str], message: str) -> dict[str, Any]:
    return {
        "model": spec,
        "action": "ambiguous",
        "message": message,
        "requires_confirmation": True,
        "matches": matches,
        "lock_files_cleaned": 0,
    }


def describe_plan(plan: DeletePlan) -> str:
    """One line: what goes and what it frees."""
    what = plan.name if plan.whole_repo else f"snapshot {plan.commits[0][:8]} of {plan.name}"
    parts = [f"{len(plan.commits)} snapshot(s)", f"{len(plan.blobs)} blob(s)"]
    if plan.incomplete_blobs:
        parts.append(f"{len(plan.incomplete_blobs)} leftover .incomplete blob(s)")
    if plan.whole_repo and plan.stale_locks:
        parts.append(f"{len(plan.stale_locks)} stale lock file(s)")
    return f"{what}: {', '.join(parts)}, freeing {human_size(plan.freed_bytes)}"


def render_plan(plan: DeletePlan, heading: str) -> str:
    # names come from the cache's folders: escaped for the terminal (the JSON message stays exact)
    lines = [f"{heading} {escape_controls(describe_plan(plan))}"]
    if plan.kept_commits:
        lines.append(f"  kept: {len(plan.kept_commits)} other snapshot(s) and the blobs they use")
    for link in plan.outside_links:
        lines.append(
            f"  note: link {escape_controls(link)} points outside the cache; the link goes, its target stays"
        )
    for lock in plan.held_locks:
        lines.append(f"  held lock: {escape_controls(lock)} (a download in progress?)")
    return "\n".join(lines) + "\n"
