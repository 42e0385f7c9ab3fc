"""Decoder-based embedding models: Qwen3-Embedding and the other causal language models trained as
embedders (e5-mistral, gte-Qwen2, ...), run by mlx-lm's model classes without their output head.

The vector is the final hidden state of the last token (or the mean over the tokens, when the
snapshot's sentence-transformers Pooling config says so). Batches are padded on the right: under a
causal mask no real token ever sees a padding token, so no extra mask is needed, and the last real
token of each row sits at its length minus one.

Queries may carry a task instruction (``Instruct: {task}\\nQuery:{text}`` for Qwen3-Embedding);
documents are embedded as they are. Qwen3-Embedding was trained with Matryoshka representation
learning: the first n components of its vectors, renormalized, are an n-dimensional embedding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk.core.blas import ensure_blas
from mlxk.embedding.common import (
    QWEN3_INSTRUCT_TEMPLATE,
    Embedder,
    max_length,
    normalized,
    pool,
    pooling_mode,
    prompts,
)
from mlxk.errors import ModelIncompatible

if TYPE_CHECKING:
    import mlx.core as mx

# families whose embedding models were trained for shorter (Matryoshka) vectors: Qwen3-Embedding
# (its model card: any size up to the hidden size)
MATRYOSHKA_MODEL_TYPES = frozenset({"qwen3"})
_INSTRUCT_HEAD = "Instruct: "
_QUERY_MARK = "\nQuery:"


def instruct_template(query_prompt: str | None) -> str:
    """How a task instruction precedes a query: the model's own query prompt with its task taken out
    when it has the ``Instruct: ...\\nQuery:`` shape (e5-mistral's ends in "Query: "), else
    Qwen3-Embedding's format."""
    if query_prompt and query_prompt.startswith(_INSTRUCT_HEAD) and _QUERY_MARK in query_prompt:
        return _INSTRUCT_HEAD + "{task}" + query_prompt[query_prompt.index(_QUERY_MARK) :]
    return QWEN3_INSTRUCT_TEMPLATE


class DecoderEmbedder(Embedder):
    """A causal language model used as an embedder."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_type: str,
        pooling: str,
        max_length: int,
        pad_id: int,
        hidden: int,
        prompts: dict[str, str],
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._pad_id = pad_id
        self.model_type = model_type
        self.pooling = pooling
        self.max_length = max_length
        self.dimensions = hidden
        self.vocab_size = int(model.model.embed_tokens.weight.shape[0])
        self.prompts = prompts
        self.matryoshka = model_type in MATRYOSHKA_MODEL_TYPES
        self.instruct_template = instruct_template(prompts.get("query"))

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        encodings = self._tokenizer.encode_batch(list(texts))
        return [list(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings]

    def _embed_batch(self, rows: list[list[int]], normalize: bool) -> mx.array:
        import mlx.core as mx

        width = max(len(r) for r in rows)
        ids = mx.array([r + [self._pad_id] * (width - len(r)) for r in rows], dtype=mx.int32)
        lengths = mx.array([len(r) for r in rows], dtype=mx.int32)
        mask = mx.arange(width)[None, :] < lengths[:, None]
        hidden = self._model.model(ids)  # the transformer without the head: final normed states
        pooled = pool(hidden.astype(mx.float32), mask, lengths, self.pooling)
        if normalize:
            pooled = normalized(pooled)
        mx.eval(pooled)
        return pooled


def _model_classes(config: dict[str, Any]) -> tuple[type, type]:
    """mlx-lm's classes for ``config``, with a ``sanitize`` that also reads embedding checkpoints:
    saved from the bare transformer (``embed_tokens.weight`` rather than ``model.embed_tokens.weight``)
    and without the output head, which an embedder never uses (it gets the input embedding's
    tensors so that mlx-lm's strict loading finds every parameter)."""
    from mlx_lm.utils import _get_classes

    base, args = _get_classes(config)

    class EmbeddingModel(base):  # type: ignore[misc, valid-type]
        def sanitize(self, weights: dict[str, Any]) -> dict[str, Any]:
            if weights and not any(k.startswith("model.") for k in weights):
                weights = {f"model.{k}": v for k, v in weights.items()}
            parent = getattr(super(), "sanitize", None)
            if parent is not None:
                weights = parent(weights)
            if "lm_head" in self and "lm_head.weight" not in weights:
                for part in ("weight", "scales", "biases"):
                    if f"model.embed_tokens.{part}" in weights:
                        weights[f"lm_head.{part}"] = weights[f"model.embed_tokens.{part}"]
            return weights

    return EmbeddingModel, args


def load_decoder_embedder(path: str, config: Mapping[str, Any]) -> DecoderEmbedder:
    """The decoder-based embedding model in snapshot folder ``path`` (ModelIncompatible when mlx-lm
    cannot build it, or its files do not fit)."""
    from tokenizers import Tokenizer

    ensure_blas()  # before the first import of mlx.core: libmlx binds its BLAS when it loads
    from mlx_lm.utils import load_model

    model_type = str(config.get("model_type") or "")
    pooling = pooling_mode(path, "lasttoken")
    tokenizer_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tokenizer_path):
        raise ModelIncompatible("the snapshot has no tokenizer.json (the embedder needs a fast tokenizer)")
    try:
        tokenizer = Tokenizer.from_file(tokenizer_path)
    except Exception as exc:  # the Rust side raises plain Exception for a malformed file
        raise ModelIncompatible(f"cannot read tokenizer.json: {exc}") from exc
    try:
        model, loaded_config = load_model(Path(path), get_model_classes=_model_classes)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        raise ModelIncompatible(f"mlx-lm cannot load this {model_type or 'model'}: {exc}") from exc
    inner = getattr(model, "model", None)
    if inner is None or getattr(inner, "embed_tokens", None) is None:
        raise ModelIncompatible(f"{model_type} has no transformer body mlxk knows how to call")
    positions = loaded_config.get("max_position_embeddings")
    limit = max_length(path, positions if isinstance(positions, int) and positions > 0 else 32768)
    padding = tokenizer.padding
    tokenizer.no_padding()
    tokenizer.enable_truncation(limit)
    vocab = int(inner.embed_tokens.weight.shape[0])
    pad_id = padding.get("pad_id") if isinstance(padding, dict) else None
    if not isinstance(pad_id, int) or not 0 <= pad_id < vocab:
        pad_id = 0  # padding sits after the real tokens, which never see it: any valid id does
    hidden = loaded_config.get("hidden_size")
    if not isinstance(hidden, int):
        hidden = int(inner.embed_tokens.weight.shape[1])
    return DecoderEmbedder(
        model,
        tokenizer,
        model_type=model_type,
        pooling=pooling,
        max_length=limit,
        pad_id=pad_id,
        hidden=hidden,
        prompts=prompts(path),
    )
