"""Which cached snapshot can generate on this machine, and why not, decided before any weight is read
(``mlxk run`` and the server ask the same question)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlxk.errors import InsufficientMemory, ModelIncompatible

if TYPE_CHECKING:  # the scan's modules load only when a model is picked (`mlxk --version` stays light)
    from mlxk.cache.model import CachedModel
    from mlxk.cache.scan import CacheLocation

# Weights need this much room beside them for the KV cache, activations and the rest of the system.
MEMORY_HEADROOM = 0.9


def total_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf (Windows)
        return None


@dataclass(frozen=True, slots=True)
class Runnable:
    model: CachedModel
    path: str  # the snapshot folder mlx-lm loads


def runnable_model(
    location: CacheLocation, spec: str, *, purpose: str = "generation", shards: int = 1
) -> Runnable:
    """The snapshot ``spec`` names, if mlx-lm can run it for ``purpose`` on this machine (holding
    one of ``shards`` equal parts of its weights, when it is sharded over several machines)."""
    from mlxk.cache.pick import pick_model

    model = pick_model(location, spec, healthy=True)
    if purpose == "generation" and model.model_type == "embedding":
        raise ModelIncompatible(
            f"{model.name} is an embedding model; it does not generate text (use mlxk embed)"
        )
    if not model.runtime_compatible:
        raise ModelIncompatible(f"{model.name} cannot run with this mlx-lm: {model.runtime_reason}")
    total = total_memory_bytes()
    if total is not None and model.size_bytes / shards > total * MEMORY_HEADROOM:
        part = "its weights alone" if shards == 1 else f"its share of the weights on {shards} machines"
        raise InsufficientMemory(
            f"{model.name} needs {model.size_bytes / shards / 1e9:.1f} GB for {part}; "
            f"this machine has {total / 1e9:.1f} GB"
        )
    assert model.hash is not None  # a healthy model has a snapshot
    return Runnable(model, os.path.join(location.hub_root, model.dirname, "snapshots", model.hash))
