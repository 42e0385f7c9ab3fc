"""One entry for every embedding model: which family runs a config, and loading it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlxk.embedding.bert import is_encoder_config, load_encoder
from mlxk.embedding.common import Embedder, read_json
from mlxk.errors import ModelIncompatible

# encoder architectures this install has no forward pass for (their config would otherwise be
# taken for a decoder's), and non-text models
_NOT_DECODERS = frozenset(
    {"nomic_bert", "modernbert", "mpnet", "e5", "gte", "new", "xlm", "t5", "clip", "siglip", "whisper"}
)


def embedding_family(config: Mapping[str, Any]) -> str | None:
    """ "encoder" (BERT family, mlxk's own forward pass), "decoder" (a causal language model that
    mlx-lm builds; whether it knows the model_type is found when loading), or None."""
    if is_encoder_config(config):
        return "encoder"
    model_type = str(config.get("model_type") or "").lower()
    if (
        not model_type
        or model_type in _NOT_DECODERS
        or model_type in {"bert", "roberta", "xlm-roberta", "distilbert"}
    ):
        return None
    if config.get("is_encoder_decoder") or isinstance(config.get("vision_config"), dict):
        return None
    return "decoder"


def load_embedder(path: str) -> Embedder:
    """The embedding model in snapshot folder ``path``."""
    from mlxk.embedding.decoder import load_decoder_embedder

    config = read_json(os.path.join(path, "config.json"))
    if not isinstance(config, dict):
        raise ModelIncompatible("the snapshot has no config.json object")
    family = embedding_family(config)
    if family == "encoder":
        return load_encoder(path)
    if family == "decoder":
        return load_decoder_embedder(path, config)
    raise ModelIncompatible(f"model_type {config.get('model_type')!r} is not an embedding model mlxk can run")
