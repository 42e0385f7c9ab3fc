"""One cached model named by the user, built from a fresh scan: what show, run and embed start from."""

from __future__ import annotations

from mlxk.cache.build import build_model
from mlxk.cache.model import CachedModel
from mlxk.cache.resolve import resolve
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_records
from mlxk.errors import ModelNotFound, ModelUnhealthy


def pick_model(location: CacheLocation, spec: str, *, healthy: bool = False) -> CachedModel:
    """The model ``spec`` resolves to (``name@hash`` honoured); with ``healthy``, refused unless
    its files pass the health rules (a model about to be loaded)."""
    resolved = resolve(repo_dirnames(location.hub_root), spec, single=True)
    records = scan_records(location, resolved.dirnames)
    if not records:
        raise ModelNotFound(f"no model in the cache matches {spec!r}")
    model = build_model(records[0], resolved.revision)
    if healthy and not model.healthy:
        raise ModelUnhealthy(f"{model.name} is unhealthy: {model.health_reason} (see mlxk health)")
    return model
