"""What every embedding model here shares: the result's shape, reading a snapshot's
sentence-transformers files (pooling, length limit, prompts), batching by length, and shortening
vectors to fewer (Matryoshka) dimensions."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mlxk.errors import ModelIncompatible, ValidationError

if TYPE_CHECKING:
    import mlx.core as mx

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len", "lasttoken")
# the flags of a sentence-transformers Pooling config, by our name for the mode
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers modules that change nothing we compute (Normalize is the caller's choice)
_PASSIVE_MODULES = ("Transformer", "Pooling", "Normalize")
# tokenizer_config.json says "no limit" with a huge sentinel (int(1e30)); anything this large is one
_NO_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]  # in input order
    token_counts: list[int]  # tokens each text ran with, special tokens included (after truncation)
    truncated: list[bool]  # whether a text lost tokens to max_length
    dimensions: int


def read_json(path: str) -> Any:
    """The JSON value of ``path``; None when the file does not exist."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelIncompatible(f"cannot read {os.path.basename(path)}: {exc}") from exc


def pooling_mode(folder: str, default: str) -> str:
    """The pooling mode of a sentence-transformers snapshot (``modules.json`` names the Pooling
    module's folder); ``default`` when the snapshot has none (mean for BERT: what
    sentence-transformers gives a plain checkpoint too; the last token for decoders)."""
    modules = read_json(os.path.join(folder, "modules.json"))
    pooling_dir = "1_Pooling"
    if isinstance(modules, list):
        for module in modules:
            if not isinstance(module, dict):
                continue
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _PASSIVE_MODULES:
                # Dense projections and the like would change the vectors: refuse rather than be wrong
                raise ModelIncompatible(f"sentence-transformers module {kind!r} is not supported")
            if kind == "Pooling" and isinstance(module.get("path"), str):
                pooling_dir = module["path"]
    config = read_json(os.path.join(folder, pooling_dir, "config.json"))
    if not isinstance(config, dict):
        return default
    mode = config.get("pooling_mode")  # newer configs may name the mode outright
    modes = [mode] if isinstance(mode, str) else [m for flag, m in _POOLING_FLAGS.items() if config.get(flag)]
    modes = ["mean_sqrt_len" if m == "mean_sqrt_len_tokens" else m for m in modes]
    if not modes:
        return default
    # several modes concatenate their vectors in sentence-transformers; no model we know does that
    if len(modes) > 1 or modes[0] not in POOLING_MODES:
        raise ModelIncompatible(f"pooling {'+'.join(modes)} is not supported")
    return str(modes[0])


def max_length(folder: str, limit: int) -> int:
    """The longest input in tokens: ``limit`` (the positions the model has), lowered by the
    tokenizer's ``model_max_length`` and by sentence-transformers' ``max_seq_length`` (what the
    model was trained and evaluated with: all-MiniLM-L6-v2 has 512 positions but truncates at 256)."""
    for name, key in (
        ("tokenizer_config.json", "model_max_length"),
        ("sentence_bert_config.json", "max_seq_length"),
    ):
        data = read_json(os.path.join(folder, name))
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
            limit = min(limit, value)
    return limit


def prompts(folder: str) -> dict[str, str]:
    """The model's own prompts by name (``query``, ``document``, ...) from
    ``config_sentence_transformers.json``: text put before an input of that kind."""
    data = read_json(os.path.join(folder, "config_sentence_transformers.json"))
    found = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, str)}


def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the texts, in batches of at most ``batch_size``. Texts go in order of length, and
    a batch also ends where the next text is more than twice as long as its first: every text is
    padded to the longest of its batch, and one long text would otherwise make a batch of short
    ones cost as much as that many long ones."""
    out: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batch and (len(batch) == batch_size or lengths[i] > 2 * lengths[batch[0]] + 8):
            out.append(batch)
            batch = []
        batch.append(i)
    if batch:
        out.append(batch)
    return out


def shorten(vectors: list[list[float]], dimensions: int, normalize: bool) -> list[list[float]]:
    """The first ``dimensions`` components of each vector (a Matryoshka model's shorter vector),
    scaled back to unit length when ``normalize`` (a zero vector stays zero)."""
    out = []
    for vector in vectors:
        head = vector[:dimensions]
        if normalize:
            norm = math.sqrt(math.fsum(v * v for v in head))
            head = [v / max(norm, 1e-12) for v in head]
        out.append(head)
    return out


def check_ids(rows: Sequence[Sequence[int]], vocab: int) -> None:
    """ValidationError naming the first input and position whose token id is not in ``[0, vocab)``:
    an id past the embedding table would read out of bounds (MLX does not check gathers)."""
    for i, row in enumerate(rows):
        if not row:
            raise ValidationError(f"input {i} has no tokens")
        for j, token in enumerate(row):
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
                raise ValidationError(
                    f"input {i}: token {j} ({token!r}) is not an id of this model (0 to {vocab - 1})"
                )


class Embedder:
    """A loaded embedding model: texts or token ids in, vectors out. The families differ in their
    tokenizer handling and forward pass (``tokenize``, ``_embed_batch``); the checks, batching,
    prompts and dimensions are the same for all. ``embed`` may be called from one thread at a time."""

    model_type: str
    pooling: str
    max_length: int
    dimensions: int  # of the full vectors
    vocab_size: int
    matryoshka: bool = False  # trained so that the first n components are an n-dimensional embedding
    instruct_template: str | None = None  # "...{task}...": how a task instruction precedes a query
    prompts: dict[str, str]

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each text (special tokens added, cut to ``max_length``) and whether it was cut."""
        raise NotImplementedError

    def _embed_batch(self, rows: list[list[int]], normalize: bool) -> mx.array:
        """(len(rows), dimensions) float32 vectors of the token rows, evaluated."""
        raise NotImplementedError

    def query_prompt(self, instruct: str | None = None) -> str:
        """The text put before a retrieval query: the model's own "query" prompt, or its instruction
        format around ``instruct`` (ValidationError for a model that takes no instruction)."""
        if instruct is None:
            default = self.instruct_template.format(task=DEFAULT_TASK) if self.instruct_template else ""
            return self.prompts.get("query", default)
        if self.instruct_template is None:
            raise ValidationError(
                f"{self.model_type} embedding models take no task instruction (only decoder-based ones do)"
            )
        return self.instruct_template.format(task=instruct)

    def check_dimensions(self, dimensions: int | None) -> int:
        """The vector size to give for a requested ``dimensions`` (None: the full size)."""
        if dimensions is None or dimensions == self.dimensions:
            return self.dimensions
        if not self.matryoshka:
            raise ValidationError(
                f"this {self.model_type} model gives {self.dimensions} dimensions only "
                "(it was not trained for shorter, Matryoshka vectors)"
            )
        if not 1 <= dimensions <= self.dimensions:
            raise ValidationError(f"dimensions must be from 1 to {self.dimensions}, not {dimensions}")
        return dimensions

    def embed(
        self,
        texts: list[str],
        *,
        normalize: bool = True,
        batch_size: int = 32,
        dimensions: int | None = None,
        prefix: str = "",
    ) -> Embeddings:
        """Vectors of ``texts`` (in their order, each with ``prefix`` put before it), L2-normalized
        unless ``normalize`` is False, cut to ``dimensions`` when given (Matryoshka models)."""
        if not isinstance(texts, list):
            raise TypeError(f"texts must be a list of strings, not {type(texts).__name__}")
        if not texts:
            raise ValueError("texts is empty: nothing to embed")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        ids, truncated = self.tokenize([prefix + t for t in texts] if prefix else texts)
        for i, row in enumerate(ids):
            if not row:  # a tokenizer without special tokens can give nothing: no token, no vector
                raise ValueError(f"texts[{i}] gives no tokens")
            if max(row) >= self.vocab_size:
                raise ModelIncompatible(
                    f"the tokenizer gives id {max(row)}, the model has {self.vocab_size} embeddings"
                )
        return self._vectors(ids, truncated, normalize, batch_size, dimensions)

    def embed_ids(
        self,
        rows: list[list[int]],
        *,
        normalize: bool = True,
        batch_size: int = 32,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Vectors of inputs given as token ids of the model's own tokenizer (used as they are: no
        special tokens added), cut to ``max_length`` like texts. ValidationError for an id outside
        the vocabulary, naming the input and the position."""
        if not isinstance(rows, list) or not rows:
            raise ValueError("rows must be a non-empty list of token id lists")
        check_ids(rows, self.vocab_size)
        truncated = [len(row) > self.max_length for row in rows]
        cut = [list(row[: self.max_length]) for row in rows]
        return self._vectors(cut, truncated, normalize, batch_size, dimensions)

    def _vectors(
        self,
        ids: list[list[int]],
        truncated: list[bool],
        normalize: bool,
        batch_size: int,
        dimensions: int | None,
    ) -> Embeddings:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        size = self.check_dimensions(dimensions)
        vectors: list[list[float]] = [[] for _ in ids]
        for chunk in batches([len(row) for row in ids], batch_size):
            # a shorter vector is normalized after it is cut: pool, then cut, then normalize
            pooled = self._embed_batch([ids[i] for i in chunk], normalize and size == self.dimensions)
            rows = cast("list[list[float]]", pooled.tolist())
            if size != self.dimensions:
                rows = shorten(rows, size, normalize)
            for i, vector in zip(chunk, rows, strict=True):
                vectors[i] = vector
        return Embeddings(vectors, [len(row) for row in ids], truncated, size)


# Qwen3-Embedding's instruction format and default retrieval task (its model card)
QWEN3_INSTRUCT_TEMPLATE = "Instruct: {task}\nQuery:"
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def normalized(pooled: mx.array) -> mx.array:
    """Rows scaled to unit length; as torch's F.normalize, a zero row stays zero instead of NaN."""
    import mlx.core as mx

    norms = mx.sqrt(mx.sum(pooled * pooled, axis=-1, keepdims=True))
    return pooled / mx.maximum(norms, 1e-12)


def pool(hidden: mx.array, mask: mx.array, lengths: mx.array, mode: str) -> mx.array:
    """One vector per sequence from ``hidden`` (batch, length, dim), over its real tokens only."""
    import mlx.core as mx

    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        return hidden[mx.arange(hidden.shape[0]), lengths - 1]
    weights = mask[:, :, None].astype(hidden.dtype)
    if mode == "max":
        return mx.max(mx.where(weights > 0, hidden, mx.finfo(hidden.dtype).min), axis=1)
    total = mx.sum(hidden * weights, axis=1)
    counts = lengths[:, None].astype(hidden.dtype)
    return total / (mx.sqrt(counts) if mode == "mean_sqrt_len" else counts)
