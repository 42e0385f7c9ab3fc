"""Which cached snapshot can embed, decided before any weight is read (``mlxk embed`` and the
server ask the same question)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlxk.cache.model import CachedModel
from mlxk.cache.pick import pick_model
from mlxk.cache.scan import CacheLocation
from mlxk.errors import ModelIncompatible


@dataclass(frozen=True, slots=True)
class Embeddable:
    model: CachedModel
    path: str  # the snapshot folder the encoder loads


def embedding_model(location: CacheLocation, spec: str) -> Embeddable:
    from mlxk.embedding.loader import embedding_family

    model = pick_model(location, spec, healthy=True)
    if model.model_type != "embedding" or embedding_family(model.config or {}) is None:
        kind = (
            model.model_type
            if model.model_type != "embedding"
            else "an embedding model of an unsupported kind"
        )
        raise ModelIncompatible(
            f"{model.name} is {kind}, not an embedding model mlxk can run "
            "(BERT-family encoders, decoder-based embedders such as Qwen3-Embedding)"
        )
    assert model.hash is not None
    return Embeddable(model, os.path.join(location.hub_root, model.dirname, "snapshots", model.hash))
