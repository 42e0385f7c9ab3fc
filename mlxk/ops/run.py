"""``mlxk run``: which cached snapshot to load, and why not, decided before any weight is read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlxk.cache.model import CachedModel
from mlxk.cache.scan import CacheLocation
from mlxk.errors import InsufficientMemory, ModelIncompatible
from mlxk.ops.pick import pick_model
from mlxk.ops.version import total_memory_bytes

# Weights need this much room beside them for the KV cache, activations and the rest of the system.
MEMORY_HEADROOM = 0.9


@dataclass(frozen=True, slots=True)
class Runnable:
    model: CachedModel
    path: str  # the snapshot folder mlx-lm loads


def runnable_model(location: CacheLocation, spec: str, *, purpose: str = "generation") -> Runnable:
    """The snapshot ``spec`` names, if mlx-lm can run it for ``purpose`` on this machine."""
    model = pick_model(location, spec, healthy=True)
    if purpose == "generation" and model.model_type == "embedding":
        raise ModelIncompatible(
            f"{model.name} is an embedding model; it does not generate text (use mlxk embed)"
        )
    if not model.runtime_compatible:
        raise ModelIncompatible(f"{model.name} cannot run with this mlx-lm: {model.runtime_reason}")
    total = total_memory_bytes()
    if total is not None and model.size_bytes > total * MEMORY_HEADROOM:
        raise InsufficientMemory(
            f"{model.name} needs {model.size_bytes / 1e9:.1f} GB for its weights alone; "
            f"this machine has {total / 1e9:.1f} GB"
        )
    assert model.hash is not None  # a healthy model has a snapshot
    return Runnable(model, os.path.join(location.hub_root, model.dirname, "snapshots", model.hash))
