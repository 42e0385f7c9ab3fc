"""``mlxk list [PATTERN]``: every cached model (or those whose name contains PATTERN), filtered
and ordered as asked (``ListQuery``; by name when nothing is asked)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlxk.cache.model import CachedModel
from mlxk.cache.names import dirname_to_name
from mlxk.cache.resolve import is_local_path, local_path_error
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_models
from mlxk.ops.list_query import ListQuery


@dataclass(frozen=True, slots=True)
class ListResult:
    models: tuple[CachedModel, ...]
    hub_root: str = ""  # the folder that was read
    pattern: str | None = None
    repos_in_cache: int = 0  # model folders in the cache, matching the pattern or not
    filters: tuple[str, ...] = ()  # the --filter expressions applied, as typed
    matched: int = 0  # models that matched the pattern, before the filters


def list_models(
    location: CacheLocation,
    pattern: str | None = None,
    query: ListQuery | None = None,
    now_ns: int | None = None,
) -> ListResult:
    if pattern and is_local_path(pattern):
        raise local_path_error(pattern)
    everything = repo_dirnames(location.hub_root)
    dirnames = everything
    if pattern:
        needle = pattern.lower()
        dirnames = [d for d in dirnames if needle in dirname_to_name(d).lower()]
    models = scan_models(location, dirnames) if dirnames else []
    query = query or ListQuery()
    kept = query.apply(models, time.time_ns() if now_ns is None else now_ns)
    return ListResult(
        tuple(kept),
        location.hub_root,
        pattern,
        len(everything),
        tuple(f.text for f in query.filters),
        len(models),
    )
