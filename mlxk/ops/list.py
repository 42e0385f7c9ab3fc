"""``mlxk list [PATTERN]``: every cached model (or those whose name contains PATTERN)."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.cache.model import CachedModel
from mlxk.cache.names import dirname_to_name
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_models


@dataclass(frozen=True, slots=True)
class ListResult:
    models: tuple[CachedModel, ...]
    hub_root: str = ""  # the folder that was read
    pattern: str | None = None
    repos_in_cache: int = 0  # model folders in the cache, matching the pattern or not


def list_models(location: CacheLocation, pattern: str | None = None) -> ListResult:
    everything = repo_dirnames(location.hub_root)
    dirnames = everything
    if pattern:
        needle = pattern.lower()
        dirnames = [d for d in dirnames if needle in dirname_to_name(d).lower()]
    models = scan_models(location, dirnames) if dirnames else []
    return ListResult(
        tuple(sorted(models, key=lambda m: m.name)), location.hub_root, pattern, len(everything)
    )
