"""The cache as frozen values: what ``list``, ``show`` and ``health`` report about a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxk.core.records import FileEntry


@dataclass(frozen=True, slots=True)
class Leftovers:
    """Harmless remains of interrupted downloads: reported by health, never unhealthy."""

    incomplete_blobs: tuple[tuple[str, int], ...] = ()
    lock_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CachedModel:
    name: str
    dirname: str
    hash: str | None  # commit of the described snapshot
    snapshots: tuple[str, ...]  # every snapshot commit in the repo, newest first
    size_bytes: int
    last_modified_ns: int  # epoch nanoseconds
    framework: str
    model_type: str
    capabilities: tuple[str, ...]
    healthy: bool
    health_reason: str | None  # first integrity problem
    runtime_compatible: bool
    runtime_reason: str | None
    config: dict[str, Any] | None
    files: tuple[FileEntry, ...]  # the scan's records of the described snapshot
    leftovers: Leftovers = field(default_factory=Leftovers)

    @property
    def reason(self) -> str | None:
        """The first problem found: integrity before runtime."""
        return self.health_reason if not self.healthy else self.runtime_reason
