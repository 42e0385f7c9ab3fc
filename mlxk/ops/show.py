"""``mlxk show MODEL[@hash]``: one model's card, optionally with its files and config."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.cache.content import model_fingerprint
from mlxk.cache.model import CachedModel
from mlxk.cache.pick import pick_model
from mlxk.cache.scan import CacheLocation


@dataclass(frozen=True, slots=True)
class ShowResult:
    model: CachedModel
    with_files: bool
    with_config: bool
    fingerprint: str | None = None  # sha256 over the snapshot's (path, checksum) list; see content.py


def show_model(
    location: CacheLocation, spec: str, *, files: bool = False, config: bool = False
) -> ShowResult:
    model = pick_model(location, spec)
    fingerprint = model_fingerprint(location.hub_root, model.dirname, model.hash, model.files)
    return ShowResult(model, files, config, fingerprint)
