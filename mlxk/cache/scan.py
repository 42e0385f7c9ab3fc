"""One scan of the hub cache: native walk (or its twin), memo in and out, models built."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from mlxk import core
from mlxk.cache.build import build_model
from mlxk.cache.memo import load_memo, memo_allowed, memo_path, merge, save_memo
from mlxk.cache.model import CachedModel
from mlxk.cache.names import REPO_PREFIX
from mlxk.core.records import RepoRecord
from mlxk.errors import CacheNotFound, PermissionDenied


@dataclass(frozen=True, slots=True)
class CacheLocation:
    hub_root: str
    memo_dir: str | None  # None: do not read or write the memo


def repo_dirnames(hub_root: str) -> list[str]:
    """The ``models--*`` entries of the hub folder; empty when the folder does not exist yet
    (an empty cache, not an error). Any other failure to read it is a filesystem error."""
    try:
        with os.scandir(hub_root) as entries:
            return sorted(e.name for e in entries if e.name.startswith(REPO_PREFIX))
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise PermissionDenied(f"cannot read the cache folder {hub_root}: {exc.strerror}") from exc
    except OSError as exc:
        raise CacheNotFound(f"cannot read the cache folder {hub_root}: {exc.strerror}") from exc


def scan_records(location: CacheLocation, dirnames: Iterable[str] | None = None) -> list[RepoRecord]:
    names = repo_dirnames(location.hub_root) if dirnames is None else sorted(dirnames)
    if not names:
        return []
    path = None
    if location.memo_dir is not None and memo_allowed(location.memo_dir, location.hub_root):
        path = memo_path(location.memo_dir, location.hub_root)
    body = load_memo(path) if path else b""
    records, fresh = core.impl.scan_cache(location.hub_root, names, body, 0)
    if path and fresh:
        merged = merge(body, fresh)
        if merged is not None:
            save_memo(path, merged)
    return list(records)


def scan_models(location: CacheLocation, dirnames: Iterable[str] | None = None) -> list[CachedModel]:
    return [build_model(rec) for rec in scan_records(location, dirnames)]
