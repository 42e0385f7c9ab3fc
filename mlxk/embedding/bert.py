"""Sentence encoders of the BERT family (bert, roberta, xlm-roberta, distilbert) in MLX.

``load_encoder`` reads a snapshot folder as the Hub publishes it: ``config.json``, the weights in
safetensors under the transformers names (``encoder.layer.N.attention.self.query.weight``, maybe
behind a ``bert.``/``roberta.`` prefix), ``tokenizer.json``, and for sentence-transformers models
``modules.json`` with the pooling module's config. ``Encoder.embed`` tokenizes with the
``tokenizers`` library, runs the forward pass (written here on mlx.core: embeddings, post-norm
transformer layers, pooling over the real tokens) and returns plain Python lists.

mlx and tokenizers are imported inside the functions: importing this module stays light, so
``mlxk.embedding.embeddable`` can ask ``is_encoder_config`` before anything heavy is loaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlxk.core.blas import ensure_blas
from mlxk.embedding.common import Embedder, max_length, normalized, pool, pooling_mode, prompts, read_json
from mlxk.errors import ModelIncompatible

if TYPE_CHECKING:
    import mlx.core as mx

# model_type -> the layout of its weights. roberta and xlm-roberta are BERT with positions that
# start after the padding index; distilbert is BERT without token types, under other names.
FAMILIES: Mapping[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "distilbert": "distilbert",
}
SUPPORTED_MODEL_TYPES = frozenset(FAMILIES)


@dataclass(frozen=True)
class Architecture:
    """The numbers of one encoder, with the families' different config keys read into one shape."""

    model_type: str
    family: str
    hidden: int
    heads: int
    layers: int
    intermediate: int
    activation: str
    eps: float
    max_positions: int
    position_offset: int  # roberta numbers positions from padding_idx + 1


_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish"})


def _int(config: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ModelIncompatible(f"config.json has no positive integer {' or '.join(keys)}")


def architecture(config: Mapping[str, Any]) -> Architecture:
    """The encoder ``config`` describes; ModelIncompatible when this module cannot run it."""
    model_type = str(config.get("model_type") or "").lower()
    family = FAMILIES.get(model_type)
    if family is None:
        raise ModelIncompatible(
            f"model_type {model_type or '(none)'!r} is not a supported encoder "
            f"({', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    # relative position schemes add terms to the attention scores that this forward pass lacks
    position_type = config.get("position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ModelIncompatible(f"position_embedding_type {position_type!r} is not supported (only absolute)")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise ModelIncompatible("a decoder configuration is not a sentence encoder")
    if family == "distilbert":
        hidden = _int(config, "dim", "hidden_size")
        heads = _int(config, "n_heads", "num_attention_heads")
        layers = _int(config, "n_layers", "num_hidden_layers")
        intermediate = _int(config, "hidden_dim", "intermediate_size")
        activation = str(config.get("activation", "gelu"))
        eps = 1e-12  # fixed in distilbert's code, not in its config
    else:
        hidden = _int(config, "hidden_size")
        heads = _int(config, "num_attention_heads")
        layers = _int(config, "num_hidden_layers")
        intermediate = _int(config, "intermediate_size")
        activation = str(config.get("hidden_act", "gelu"))
        eps = float(config.get("layer_norm_eps", 1e-12))
    if activation not in _ACTIVATIONS:
        raise ModelIncompatible(f"activation {activation!r} is not supported")
    if hidden % heads:
        raise ModelIncompatible(f"hidden size {hidden} is not a multiple of {heads} heads")
    max_positions = _int(config, "max_position_embeddings")
    offset = 0
    if family == "roberta":
        pad = config.get("pad_token_id", 1)
        offset = (pad if isinstance(pad, int) and not isinstance(pad, bool) else 1) + 1
        if max_positions <= offset:
            raise ModelIncompatible(f"max_position_embeddings {max_positions} leaves no positions")
    return Architecture(
        model_type, family, hidden, heads, layers, intermediate, activation, eps, max_positions, offset
    )


def is_encoder_config(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` (a config.json) is an encoder this module runs: model_type bert, roberta,
    xlm-roberta or distilbert, with absolute positions."""
    try:
        architecture(config)
    except ModelIncompatible:
        return False
    return True


def _weight_files(folder: str) -> list[str]:
    index = read_json(os.path.join(folder, "model.safetensors.index.json"))
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        names = sorted({str(v) for v in index["weight_map"].values()})
        return [os.path.join(folder, n) for n in names]
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return [single]
    if os.path.exists(os.path.join(folder, "pytorch_model.bin")):
        raise ModelIncompatible("the weights are a pytorch_model.bin; the encoder reads safetensors only")
    raise ModelIncompatible("no model.safetensors in the snapshot")


def _source_names(family: str, layers: int) -> dict[str, list[str]]:
    """Our tensor names -> the transformers names they are made of (several for the fused qkv)."""
    names: dict[str, list[str]] = {
        "word": ["embeddings.word_embeddings.weight"],
        "position": ["embeddings.position_embeddings.weight"],
        "emb_norm.weight": ["embeddings.LayerNorm.weight"],
        "emb_norm.bias": ["embeddings.LayerNorm.bias"],
    }
    if family != "distilbert":
        names["token_type"] = ["embeddings.token_type_embeddings.weight"]
    for i in range(layers):
        if family == "distilbert":
            base = f"transformer.layer.{i}."
            parts = {
                "qkv": [f"{base}attention.{p}_lin" for p in "qkv"],
                "attn_out": [f"{base}attention.out_lin"],
                "attn_norm": [f"{base}sa_layer_norm"],
                "ffn_in": [f"{base}ffn.lin1"],
                "ffn_out": [f"{base}ffn.lin2"],
                "ffn_norm": [f"{base}output_layer_norm"],
            }
        else:
            base = f"encoder.layer.{i}."
            parts = {
                "qkv": [f"{base}attention.self.{p}" for p in ("query", "key", "value")],
                "attn_out": [f"{base}attention.output.dense"],
                "attn_norm": [f"{base}attention.output.LayerNorm"],
                "ffn_in": [f"{base}intermediate.dense"],
                "ffn_out": [f"{base}output.dense"],
                "ffn_norm": [f"{base}output.LayerNorm"],
            }
        for part, sources in parts.items():
            for suffix in ("weight", "bias"):
                names[f"{i}.{part}.{suffix}"] = [f"{s}.{suffix}" for s in sources]
    return names


def _load_weights(folder: str, arch: Architecture) -> dict[str, mx.array]:
    import mlx.core as mx

    raw: dict[str, mx.array] = {}
    for path in _weight_files(folder):
        try:
            loaded = mx.load(path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelIncompatible(f"cannot read {os.path.basename(path)}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ModelIncompatible(f"{os.path.basename(path)} holds no named tensors")
        raw.update(loaded)
    if any(k.endswith(".scales") for k in raw):
        raise ModelIncompatible("quantized encoder weights are not supported")
    # Task heads put the encoder under a prefix ("bert.", "roberta."): find it by the one tensor
    # every family has, and prefer the shortest if a checkpoint somehow holds two.
    anchor = "embeddings.word_embeddings.weight"
    prefixes = sorted((k[: -len(anchor)] for k in raw if k.endswith(anchor)), key=len)
    if not prefixes:
        raise ModelIncompatible(f"the weights have no {anchor}")
    prefix = prefixes[0]

    def tensor(name: str) -> mx.array:
        for candidate in (name, name.replace("LayerNorm.weight", "LayerNorm.gamma")):
            if prefix + candidate in raw:
                return raw[prefix + candidate]
        if name.endswith("LayerNorm.bias") and prefix + name.replace(".bias", ".beta") in raw:
            return raw[prefix + name.replace(".bias", ".beta")]
        raise ModelIncompatible(f"the weights have no {prefix}{name}")

    weights: dict[str, mx.array] = {}
    for ours, sources in _source_names(arch.family, arch.layers).items():
        parts = [tensor(s) for s in sources]
        # query, key and value become one matrix: one matmul per layer instead of three
        weights[ours] = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)
    _check_shapes(weights, arch)
    mx.eval(weights)  # read the bytes now (and drop the task heads) rather than at the first request
    return weights


def _check_shapes(weights: Mapping[str, mx.array], arch: Architecture) -> None:
    h, f = arch.hidden, arch.intermediate
    expected: dict[str, tuple[int, ...]] = {"emb_norm.weight": (h,), "emb_norm.bias": (h,)}
    for i in range(arch.layers):
        expected |= {
            f"{i}.qkv.weight": (3 * h, h),
            f"{i}.qkv.bias": (3 * h,),
            f"{i}.attn_out.weight": (h, h),
            f"{i}.ffn_in.weight": (f, h),
            f"{i}.ffn_in.bias": (f,),
            f"{i}.ffn_out.weight": (h, f),
        }
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ModelIncompatible(f"tensor {name} has shape {tuple(weights[name].shape)}, expected {shape}")
    for name in ("word", "position", "token_type"):
        if name in weights and (weights[name].ndim != 2 or weights[name].shape[1] != h):
            raise ModelIncompatible(f"{name} embeddings have shape {tuple(weights[name].shape)}")
    if weights["position"].shape[0] < arch.max_positions:
        raise ModelIncompatible(f"{weights['position'].shape[0]} position embeddings, config says more")


class Encoder(Embedder):
    """A loaded BERT-family sentence encoder."""

    def __init__(
        self,
        arch: Architecture,
        weights: dict[str, mx.array],
        tokenizer: Any,
        *,
        pooling: str,
        max_length: int,
        pad_id: int,
        prompts: dict[str, str],
    ) -> None:
        self.arch = arch
        self.model_type = arch.model_type
        self.pooling = pooling
        self.max_length = max_length
        self.dimensions = arch.hidden
        self._weights = weights
        self._tokenizer = tokenizer
        self._pad_id = pad_id
        self.vocab_size = int(weights["word"].shape[0])
        self.prompts = prompts

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        encodings = self._tokenizer.encode_batch(list(texts))
        # truncation moves what it cut into ``overflowing``: a text was cut exactly when that is non-empty
        return [list(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings]

    def _embed_batch(self, rows: list[list[int]], normalize: bool) -> mx.array:
        import mlx.core as mx

        width = max(len(r) for r in rows)
        ids = mx.array([r + [self._pad_id] * (width - len(r)) for r in rows], dtype=mx.int32)
        lengths = mx.array([len(r) for r in rows], dtype=mx.int32)
        mask = mx.arange(width)[None, :] < lengths[:, None]  # (batch, width): True on real tokens
        hidden = forward(self.arch, self._weights, ids, mask)
        pooled = pool(hidden.astype(mx.float32), mask, lengths, self.pooling)
        if normalize:
            pooled = normalized(pooled)
        mx.eval(pooled)
        return pooled


# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (erf is +-1 in float32 beyond): the rational approximation
# float32 math libraries use (Eigen's coefficients), within 1e-6 of erf everywhere
ERF_CLAMP = 3.832506856900711
ERF_NUMERATOR = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02,
)  # fmt: skip
ERF_DENOMINATOR = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def erf(x: mx.array) -> mx.array:
    """erf of float arrays. MLX's CPU backend computes its transcendental functions one element at a
    time (measured here: mx.erf 20 times slower than a multiplication, and than numpy's ufuncs), so
    on the CPU a rational approximation made of multiplications and one division is the fast way;
    other devices have a vectorized mx.erf."""
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return mx.erf(x)
    x = mx.clip(x, -ERF_CLAMP, ERF_CLAMP)
    x2 = x * x
    p = mx.array(ERF_NUMERATOR[0], dtype=x.dtype)
    for c in ERF_NUMERATOR[1:]:
        p = p * x2 + c
    q = mx.array(ERF_DENOMINATOR[0], dtype=x.dtype)
    for c in ERF_DENOMINATOR[1:]:
        q = q * x2 + c
    return x * p / q


def _activation(name: str, x: mx.array) -> mx.array:
    import mlx.core as mx

    if name == "gelu":  # BERT's "gelu" is the exact one, through erf
        return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):  # the tanh approximation
        return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    if name == "relu":
        return mx.maximum(x, 0)
    return x * mx.sigmoid(x)  # silu / swish


def forward(arch: Architecture, w: Mapping[str, mx.array], ids: mx.array, mask: mx.array) -> mx.array:
    """Last hidden states (batch, length, hidden) of token ``ids`` with padding ``mask`` (True on
    real tokens). BERT is post-norm: each sublayer adds its output to its input, then normalizes."""
    import mlx.core as mx

    batch, length = ids.shape
    heads, head_dim = arch.heads, arch.hidden // arch.heads
    start = arch.position_offset
    x = w["word"][ids] + w["position"][start : start + length][None]
    if "token_type" in w:
        x = x + w["token_type"][0]  # every token is of type 0 (single sentences)
    x = mx.fast.layer_norm(x, w["emb_norm.weight"], w["emb_norm.bias"], arch.eps)
    # additive mask over the keys: padding gets the most negative number of the dtype, so its
    # softmax weight is 0 (a finite value, unlike -inf, cannot turn a row into NaN)
    neg = mx.array(mx.finfo(x.dtype).min, dtype=x.dtype)
    bias = mx.where(mask, mx.array(0, dtype=x.dtype), neg)[:, None, None, :]

    def linear(v: mx.array, name: str) -> mx.array:
        return mx.addmm(w[f"{name}.bias"], v, w[f"{name}.weight"].T)

    def norm(v: mx.array, name: str) -> mx.array:
        return mx.fast.layer_norm(v, w[f"{name}.weight"], w[f"{name}.bias"], arch.eps)

    for i in range(arch.layers):
        qkv = linear(x, f"{i}.qkv").reshape(batch, length, 3, heads, head_dim)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
        context = mx.fast.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(head_dim), mask=bias)
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, arch.hidden)
        x = norm(x + linear(context, f"{i}.attn_out"), f"{i}.attn_norm")
        inner = _activation(arch.activation, linear(x, f"{i}.ffn_in"))
        x = norm(x + linear(inner, f"{i}.ffn_out"), f"{i}.ffn_norm")
    return x


def load_encoder(path: str) -> Encoder:
    """The encoder in snapshot folder ``path``. ModelIncompatible when it is not one this module
    runs (family, pooling, weights); OSError when files cannot be read."""
    from tokenizers import Tokenizer

    ensure_blas()  # before the first import of mlx.core: libmlx binds its BLAS when it loads
    config = read_json(os.path.join(path, "config.json"))
    if not isinstance(config, dict):
        raise ModelIncompatible("the snapshot has no config.json object")
    arch = architecture(config)
    pooling = pooling_mode(path, "mean")
    limit = max_length(path, arch.max_positions - arch.position_offset)
    tokenizer_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tokenizer_path):
        raise ModelIncompatible("the snapshot has no tokenizer.json (the encoder needs a fast tokenizer)")
    try:
        tokenizer = Tokenizer.from_file(tokenizer_path)
    except Exception as exc:  # the Rust side raises plain Exception for a malformed file
        raise ModelIncompatible(f"cannot read tokenizer.json: {exc}") from exc
    # tokenizer.json may carry its own padding and truncation (all-MiniLM-L6-v2's pads every text
    # to 128): batches are padded here, to their longest text, and truncation follows max_length.
    padding = tokenizer.padding
    tokenizer.no_padding()
    tokenizer.enable_truncation(limit)
    pad_id = padding.get("pad_id") if isinstance(padding, dict) else None
    if not isinstance(pad_id, int):
        configured = config.get("pad_token_id")
        pad_id = configured if isinstance(configured, int) and not isinstance(configured, bool) else 0
    weights = _load_weights(path, arch)
    vocab = weights["word"].shape[0]
    if not 0 <= pad_id < vocab:  # the padded positions are masked; the id only has to be valid
        pad_id = 0
    return Encoder(
        arch, weights, tokenizer, pooling=pooling, max_length=limit, pad_id=pad_id, prompts=prompts(path)
    )
