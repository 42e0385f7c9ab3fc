"""``mlxk health [PATTERN]``: file integrity of every (or every matching) cached model."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from mlxk.cache.build import build_model
from mlxk.cache.delete_run import finish_pending_deletions
from mlxk.cache.locks import lock_is_held
from mlxk.cache.model import CachedModel
from mlxk.cache.resolve import resolve
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_records
from mlxk.core.records import RepoRecord
from mlxk.errors import HashNotFound
from mlxk.ops.deep import DeepFindings, DeepOptions, verify_content


@dataclass(frozen=True, slots=True)
class HealthEntry:
    model: CachedModel
    held_locks: tuple[str, ...]  # lock files a live process holds (a download in progress)
    unverified: int = 0  # --deep: files with no checksum to compare with (copies without a tree listing)

    @property
    def stale_locks(self) -> tuple[str, ...]:
        return tuple(lock for lock in self.model.leftovers.lock_files if lock not in self.held_locks)


@dataclass(frozen=True, slots=True)
class HealthResult:
    entries: tuple[HealthEntry, ...]
    deep: DeepFindings | None = None  # what --deep hashed

    @property
    def unhealthy_count(self) -> int:
        return sum(1 for e in self.entries if not e.model.healthy)


def _held_locks(location: CacheLocation, model: CachedModel) -> tuple[str, ...]:
    base = os.path.join(location.hub_root, ".locks", model.dirname)
    return tuple(lock for lock in model.leftovers.lock_files if lock_is_held(os.path.join(base, lock)))


def _models_at_revision(records: list[RepoRecord], revision: str | None) -> list[CachedModel]:
    """Every record's model; with ``name@hex``, only the matches that have such a snapshot."""
    if revision is None:
        return [build_model(rec) for rec in records]
    models, missing = [], []
    for rec in records:
        try:
            models.append(build_model(rec, revision))
        except HashNotFound as exc:
            missing.append(exc)
    if not models and missing:
        raise missing[0]
    return models


def _deepened(model: CachedModel, findings: DeepFindings) -> CachedModel:
    problem = findings.problems.get(model.dirname)
    if problem is None or not model.healthy:
        return model  # integrity problems found without hashing come first
    return replace(model, healthy=False, health_reason=problem, runtime_compatible=False)


def check_health(
    location: CacheLocation, pattern: str | None = None, deep: DeepOptions | None = None
) -> HealthResult:
    dirnames = repo_dirnames(location.hub_root)
    revision = None
    if pattern:
        resolved = resolve(dirnames, pattern, single=False)
        dirnames, revision = resolved.dirnames, resolved.revision
    finish_pending_deletions(location.hub_root, dirnames)  # what a killed `rm MODEL@HASH` left
    records = scan_records(location, dirnames) if dirnames else []
    models = sorted(_models_at_revision(records, revision), key=lambda m: m.name)
    if deep is None:
        return HealthResult(tuple(HealthEntry(m, _held_locks(location, m)) for m in models))
    chosen = {m.dirname for m in models}
    described = {m.dirname: m.hash for m in models}
    findings = verify_content(location, [r for r in records if r.dirname in chosen], described, deep)
    entries = tuple(
        HealthEntry(_deepened(m, findings), _held_locks(location, m), findings.unverifiable.get(m.dirname, 0))
        for m in models
    )
    return HealthResult(entries, findings)
