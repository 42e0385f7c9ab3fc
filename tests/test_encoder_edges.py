"""The BERT-family encoder (mlxk.embedding.bert, mlxk.embedding.common) on tiny random encoders, at
the edges the main tests leave: the other feed-forward activations, weight files that hold no named
tensors, sentence-transformers files with odd entries, tokenizers that give no token or ids past the
embedding table, token-id inputs that are empty, and the helpers that batch and shorten vectors.

Vectors are compared with the float64 numpy reference of tests.test_encoder (one sentence at a time,
no padding, weights read by the ``safetensors`` package).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlxk.embedding.bert import load_encoder
from mlxk.embedding.common import batches, shorten
from mlxk.errors import ModelIncompatible, ValidationError
from tests.test_encoder import (
    HEADS,
    LAYERS,
    Array,
    cosine,
    reference_hidden,
    reference_tokens,
    reference_vector,
    write_tiny,
)

TEXTS = ["hello world", "the cat sat on the mat", "a dog ran"]


def _tanh_gelu(x: Array) -> Array:
    return np.asarray(0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))))


def _relu(x: Array) -> Array:
    return np.asarray(np.maximum(x, 0.0))


def _silu(x: Array) -> Array:
    return np.asarray(x / (1.0 + np.exp(-x)))


ACTIVATIONS = {
    "gelu_new": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu_fast": _tanh_gelu,
    "relu": _relu,
    "silu": _silu,
    "swish": _silu,
}


def _set_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_feed_forward_activation_matches_the_reference(tmp_path: Path, name: str) -> None:
    params = write_tiny(tmp_path, "bert", "mean", seed=3)
    _set_config(tmp_path, hidden_act=name)
    encoder = load_encoder(str(tmp_path))
    assert encoder.arch.activation == name
    result = encoder.embed(TEXTS)
    config = {"num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "layer_norm_eps": 1e-12}
    for row, vector in zip(
        reference_tokens(tmp_path, TEXTS, encoder.max_length), result.vectors, strict=True
    ):
        expected = reference_vector(reference_hidden(params, config, row, 0, ACTIVATIONS[name]))
        assert cosine(vector, expected) >= 0.9999
    # and the activation matters: the exact gelu's vectors are measurably different
    gelu = reference_vector(reference_hidden(params, config, reference_tokens(tmp_path, TEXTS[:1], 40)[0], 0))
    if name in ("relu", "silu", "swish"):
        assert cosine(result.vectors[0], gelu) < 0.9999


def test_a_weight_file_without_named_tensors_is_refused(tmp_path: Path) -> None:
    """An index whose weight_map names a .npy file: mx.load reads it as one unnamed array."""
    write_tiny(tmp_path, "bert")
    np.save(tmp_path / "extra.npy", np.zeros(3, np.float32))
    index = {"weight_map": {"bert.pooler.dense.weight": "extra.npy"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelIncompatible, match=r"^extra\.npy holds no named tensors$"):
        load_encoder(str(tmp_path))


def test_modules_json_entries_that_are_not_objects_are_skipped(tmp_path: Path) -> None:
    write_tiny(tmp_path, "bert", "cls")
    modules = json.loads((tmp_path / "modules.json").read_text())
    (tmp_path / "modules.json").write_text(json.dumps(["stray", 3, None, *modules]))
    assert load_encoder(str(tmp_path)).pooling == "cls"


def test_a_pooling_config_with_no_mode_set_keeps_the_default(tmp_path: Path) -> None:
    write_tiny(tmp_path, "bert", "cls")
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": False})
    )
    assert load_encoder(str(tmp_path)).pooling == "mean"


def test_a_text_the_tokenizer_gives_no_token_for_is_refused(tmp_path: Path) -> None:
    """A tokenizer without a post-processor adds no special tokens: an empty text is no token."""
    write_tiny(tmp_path, "bert")
    tokenizer = json.loads((tmp_path / "tokenizer.json").read_text())
    tokenizer["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    encoder = load_encoder(str(tmp_path))
    assert encoder.embed(["hello"]).token_counts == [1]
    with pytest.raises(ValueError, match=r"^texts\[1\] gives no tokens$"):
        encoder.embed(["hello", ""])


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    write_tiny(tmp_path, "bert")
    tensors = load_file(str(tmp_path / "model.safetensors"))
    name = "bert.embeddings.word_embeddings.weight"
    tensors[name] = tensors[name][:6].copy()  # 4 special tokens, "hello" (4) and "world" (5)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    encoder = load_encoder(str(tmp_path))
    assert encoder.vocab_size == 6
    assert encoder.embed(["hello world"]).token_counts == [4]
    # "cat" is id 7 in the tokenizer; [SEP] (3) is the largest id of "hello world"
    with pytest.raises(ModelIncompatible, match=r"^the tokenizer gives id 7, the model has 6 embeddings$"):
        encoder.embed(["hello world", "the cat"])


def test_token_id_inputs_that_are_empty_are_refused(tmp_path: Path) -> None:
    params = write_tiny(tmp_path, "bert")
    encoder = load_encoder(str(tmp_path))
    with pytest.raises(ValidationError, match=r"^input 1 has no tokens$"):
        encoder.embed_ids([[2, 4, 3], []])
    bad: list[Any] = [[], "2 4 3", ([2, 4, 3],)]
    for rows in bad:
        with pytest.raises(ValueError, match=r"^rows must be a non-empty list of token id lists$"):
            encoder.embed_ids(rows)
    # the ids as they are: the same vector as the text they spell
    config = {"num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "layer_norm_eps": 1e-12}
    vector = encoder.embed_ids([[2, 4, 5, 3]]).vectors[0]  # [CLS] hello world [SEP]
    assert cosine(vector, reference_vector(reference_hidden(params, config, [2, 4, 5, 3], 0))) >= 0.9999


def test_batches_group_by_length_and_keep_every_index() -> None:
    assert batches([], 4) == []
    lengths = [5, 1, 30, 2, 3, 100]
    out = batches(lengths, 3)
    assert sorted(i for batch in out for i in batch) == list(range(len(lengths)))
    # in order of length, 3 at most; 30 is more than twice 5 + 8 and 100 more than twice 30 + 8,
    # so each starts a batch of its own
    assert out == [[1, 3, 4], [0], [2], [5]]
    assert batches(lengths, 2) == [[1, 3], [4, 0], [2], [5]]


def test_shorten_cuts_and_rescales_only_when_asked() -> None:
    vectors = [[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]
    assert shorten(vectors, 2, normalize=False) == [[3.0, 4.0], [0.0, 0.0]]
    assert shorten(vectors, 2, normalize=True) == [[0.6, 0.8], [0.0, 0.0]]  # a zero head stays zero
