"""``mlxk show MODEL[@hash]``: one model's card, optionally with its files and config."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.cache.build import build_model
from mlxk.cache.content import model_fingerprint
from mlxk.cache.model import CachedModel
from mlxk.cache.resolve import resolve
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_records
from mlxk.errors import ModelNotFound


@dataclass(frozen=True, slots=True)
class ShowResult:
    model: CachedModel
    with_files: bool
    with_config: bool
    fingerprint: str | None = None  # sha256 over the snapshot's (path, checksum) list; see content.py


def show_model(
    location: CacheLocation, spec: str, *, files: bool = False, config: bool = False
) -> ShowResult:
    resolved = resolve(repo_dirnames(location.hub_root), spec, single=True)
    records = scan_records(location, resolved.dirnames)
    if not records:
        raise ModelNotFound(f"no model in the cache matches {spec!r}")
    model = build_model(records[0], resolved.revision)
    fingerprint = model_fingerprint(location.hub_root, model.dirname, model.hash, model.files)
    return ShowResult(model, files, config, fingerprint)
