"""The sentence encoder's forward pass in numpy (float32, numpy's own OpenBLAS), the yardstick of the
embedding benchmarks: the same function as mlxk.embedding.bert (BERT, mean pooling, L2 norm), written
the way a numpy user would, on whole batches padded to their longest text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mlxk.embedding.bert import ERF_CLAMP, ERF_DENOMINATOR, ERF_NUMERATOR

Array = np.ndarray[Any, Any]


# the rational erf the encoder uses on the CPU (numpy has no erf of its own)
def _erf(x: Array) -> Array:
    x = np.clip(x, -ERF_CLAMP, ERF_CLAMP)
    x2 = x * x
    p = np.float32(ERF_NUMERATOR[0])
    for c in ERF_NUMERATOR[1:]:
        p = p * x2 + np.float32(c)
    q = np.float32(ERF_DENOMINATOR[0])
    for c in ERF_DENOMINATOR[1:]:
        q = q * x2 + np.float32(c)
    return np.asarray(x * p / q)


def set_numpy_threads(threads: int) -> int | None:
    """Run numpy's own OpenBLAS (the ILP64 scipy-openblas64 its Linux wheels bundle) on ``threads``
    threads, so that both sides of a comparison use as many; the count it had, or None where numpy
    carries no such library (another build: left as it is)."""
    import ctypes

    folder = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(folder.glob("libscipy_openblas64_*.so")):
        library = ctypes.CDLL(str(path))
        before = int(library.scipy_openblas_get_num_threads64_())
        library.scipy_openblas_set_num_threads64_(ctypes.c_int(threads))
        return before
    return None


def _layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return np.asarray(centered / np.sqrt(var + np.float32(eps)) * gamma + beta)


class NumpyBert:
    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        raw = load_file(str(folder / "model.safetensors"))
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in raw.items()}
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.layers: list[dict[str, Any]] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [w[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]
            qkv_b = [w[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")]
            self.layers.append({
                "qkv": np.ascontiguousarray(np.concatenate(qkv).T), "qkv_b": np.concatenate(qkv_b),
                "out": np.ascontiguousarray(w[f"{p}attention.output.dense.weight"].T),
                "out_b": w[f"{p}attention.output.dense.bias"],
                "ln1": (w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]),
                "up": np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
                "up_b": w[f"{p}intermediate.dense.bias"],
                "down": np.ascontiguousarray(w[f"{p}output.dense.weight"].T), "down_b": w[f"{p}output.dense.bias"],
                "ln2": (w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
            })  # fmt: skip
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(256)

    def embed(self, texts: list[str]) -> Array:
        rows = [e.ids for e in self.tokenizer.encode_batch(texts)]
        batch, width = len(rows), max(len(r) for r in rows)
        ids = np.zeros((batch, width), dtype=np.int64)
        mask = np.zeros((batch, width), dtype=bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        x = self.word[ids] + self.position[:width] + self.token_type
        x = _layer_norm(x, *self.emb_ln, self.eps).reshape(batch * width, -1)
        bias = np.where(mask, np.float32(0), np.finfo(np.float32).min)[:, None, None, :]
        size = x.shape[1] // self.heads
        scale = np.float32(1 / math.sqrt(size))
        for layer in self.layers:
            qkv = (x @ layer["qkv"] + layer["qkv_b"]).reshape(batch, width, 3, self.heads, size)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)
            scores = q @ k.transpose(0, 1, 3, 2) * scale + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, -1)
            x = _layer_norm(
                x + context @ layer["out"] + layer["out_b"], layer["ln1"][0], layer["ln1"][1], self.eps
            )
            inner = x @ layer["up"] + layer["up_b"]
            inner = np.float32(0.5) * inner * (1 + _erf(inner * np.float32(1 / math.sqrt(2))))
            x = _layer_norm(
                x + inner @ layer["down"] + layer["down_b"], layer["ln2"][0], layer["ln2"][1], self.eps
            )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (x.reshape(batch, width, -1) * weights).sum(axis=1) / weights.sum(axis=1)
        return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
