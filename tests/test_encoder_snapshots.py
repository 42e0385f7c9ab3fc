"""Encoder snapshots as they come from the Hub, in their less common shapes (sharded weights,
TensorFlow-era LayerNorm names, pooling configs that name their mode) and damaged or unsupported
ones: each of the latter is refused with a ModelIncompatible that says what is wrong, never a
crash. Built on the tiny random BERT of tests/test_encoder.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlxk.embedding.bert import load_encoder
from mlxk.embedding.loader import embedding_family, load_embedder
from mlxk.errors import ModelIncompatible
from tests.test_encoder import FAMILY_CASES, TINY_TEXTS, cosine, write_tiny

WEIGHTS = "model.safetensors"


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def edit_tensors(folder: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    tensors = load_file(str(folder / WEIGHTS))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})


def pooling_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))


def _only_bin(folder: Path) -> None:
    (folder / WEIGHTS).rename(folder / "pytorch_model.bin")


def _quantized(t: dict[str, np.ndarray]) -> None:
    t["bert.encoder.layer.0.output.dense.scales"] = np.ones((4,), np.float32)


def _no_word_embeddings(t: dict[str, np.ndarray]) -> None:
    del t["bert.embeddings.word_embeddings.weight"]


def _qkv_wrong_shape(t: dict[str, np.ndarray]) -> None:
    t["bert.encoder.layer.0.attention.self.key.weight"] = t["bert.encoder.layer.0.attention.self.key.weight"][
        :-1
    ]


def _few_positions(t: dict[str, np.ndarray]) -> None:
    t["bert.embeddings.position_embeddings.weight"] = t["bert.embeddings.position_embeddings.weight"][:8]


def _flat_words(t: dict[str, np.ndarray]) -> None:
    t["bert.embeddings.word_embeddings.weight"] = t["bert.embeddings.word_embeddings.weight"].reshape(-1)


# damage -> (what it does to a tiny BERT snapshot, the words the refusal must contain)
DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "no config.json": (lambda f: (f / "config.json").unlink(), "no config.json object"),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{"), "cannot read config.json"),
    "a decoder config": (lambda f: edit_config(f, is_decoder=True), "decoder configuration"),
    "no tokenizer.json": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    "tokenizer.json malformed": (
        lambda f: (f / "tokenizer.json").write_text('{"model": 3}'),
        "cannot read tokenizer.json",
    ),
    "pytorch weights only": (_only_bin, "pytorch_model.bin"),
    "no weights": (lambda f: (f / WEIGHTS).unlink(), "no model.safetensors"),
    "weights not safetensors": (
        lambda f: (f / WEIGHTS).write_bytes(b"\x08" + b"\0" * 7 + b"garbage!"),
        "cannot read",
    ),
    "quantized weights": (lambda f: edit_tensors(f, _quantized), "quantized encoder weights"),
    "no word embeddings": (
        lambda f: edit_tensors(f, _no_word_embeddings),
        "no embeddings.word_embeddings.weight",
    ),
    "a tensor of the wrong shape": (
        lambda f: edit_tensors(f, _qkv_wrong_shape),
        "tensor 0.qkv.weight has shape",
    ),
    "word embeddings not a matrix": (lambda f: edit_tensors(f, _flat_words), "word embeddings have shape"),
    "fewer positions than the config": (lambda f: edit_tensors(f, _few_positions), "config says more"),
    "two pooling modes": (
        lambda f: pooling_config(f, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}),
        "pooling mean+cls is not supported",
    ),
    "an unknown pooling mode": (
        lambda f: pooling_config(f, {"pooling_mode": "weightedmean"}),
        "weightedmean",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_unsupported_snapshot_is_refused_with_a_reason(tmp_path: Path, damage: str) -> None:
    write_tiny(tmp_path, "bert", "mean")
    make, words = DAMAGE[damage]
    make(tmp_path)
    with pytest.raises(ModelIncompatible) as refused:
        load_encoder(str(tmp_path))
    assert words in refused.value.message


def test_a_roberta_without_room_for_positions_is_refused() -> None:
    config = {**FAMILY_CASES["xlm-roberta"][0], "max_position_embeddings": 2}  # pad 1: positions from 2
    assert embedding_family(config) is None


@pytest.fixture
def reference(tmp_path: Path) -> list[list[float]]:
    """The vectors of the plain single-file tiny BERT (mean pooling)."""
    folder = tmp_path / "reference"
    write_tiny(folder, "bert", "mean")
    return load_encoder(str(folder)).embed(TINY_TEXTS).vectors


def same_vectors(a: list[list[float]], b: list[list[float]]) -> bool:
    return all(cosine(x, y) >= 0.99999 for x, y in zip(a, b, strict=True))


def test_sharded_weights_with_an_index_give_the_same_vectors(
    tmp_path: Path, reference: list[list[float]]
) -> None:
    folder = tmp_path / "sharded"
    write_tiny(folder, "bert", "mean")
    tensors = load_file(str(folder / WEIGHTS))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    (folder / WEIGHTS).unlink()
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert same_vectors(load_encoder(str(folder)).embed(TINY_TEXTS).vectors, reference)


def test_tensorflow_era_layer_norm_names_give_the_same_vectors(
    tmp_path: Path, reference: list[list[float]]
) -> None:
    folder = tmp_path / "gamma-beta"
    write_tiny(folder, "bert", "mean")

    def rename(t: dict[str, np.ndarray]) -> None:
        for name in [n for n in t if "LayerNorm." in n]:
            t[
                name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                    "LayerNorm.bias", "LayerNorm.beta"
                )
            ] = t.pop(name)

    edit_tensors(folder, rename)
    assert same_vectors(load_encoder(str(folder)).embed(TINY_TEXTS).vectors, reference)


def test_padding_ids_from_the_config_or_out_of_range_change_no_vector(
    tmp_path: Path, reference: list[list[float]]
) -> None:
    """Padded positions are masked: whichever valid pad id is used, every vector stays the same."""
    for pad in (3, 10_000, None):
        folder = tmp_path / f"pad-{pad}"
        write_tiny(folder, "bert", "mean")
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        tokenizer["padding"] = None  # the pad id then comes from config.json
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        edit_config(folder, pad_token_id=pad)
        encoder = load_encoder(str(folder))
        assert same_vectors(encoder.embed(TINY_TEXTS, batch_size=5).vectors, reference), pad


@pytest.mark.parametrize("mode", ["max", "mean_sqrt_len", "cls"])
def test_a_pooling_config_that_names_its_mode(tmp_path: Path, mode: str) -> None:
    write_tiny(tmp_path, "bert", "mean")
    pooling_config(tmp_path, {"word_embedding_dimension": 32, "pooling_mode": mode})
    encoder = load_encoder(str(tmp_path))
    assert encoder.pooling == mode
    raw = encoder.embed(["the cat sat", "a dog ran on the mat"], normalize=False).vectors
    alone = [
        encoder.embed([text], normalize=False).vectors[0] for text in ["the cat sat", "a dog ran on the mat"]
    ]
    assert same_vectors(raw, alone)  # batched with padding or alone: the same vector


@pytest.mark.parametrize(
    ("config", "family"),
    [
        ({"model_type": "t5", "is_encoder_decoder": True}, None),
        ({"model_type": "llava", "vision_config": {"hidden_size": 8}}, None),
        ({"model_type": "whisper"}, None),
        ({"model_type": "bert", "position_embedding_type": "relative_key"}, None),
        ({}, None),
        ({"model_type": "qwen3"}, "decoder"),
        (FAMILY_CASES["bert"][0], "encoder"),
    ],
)
def test_which_family_embeds_a_config(config: dict[str, Any], family: str | None) -> None:
    assert embedding_family(config) == family


def test_a_snapshot_that_is_no_embedding_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelIncompatible, match=r"no config\.json object"):
        load_embedder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    with pytest.raises(ModelIncompatible, match="model_type 't5' is not an embedding model"):
        load_embedder(str(tmp_path))
