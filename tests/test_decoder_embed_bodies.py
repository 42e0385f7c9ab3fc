"""Decoder-based embedders of other shapes than tests/embedfix.py's Qwen3 (mlxk.embedding.decoder):
an untied checkpoint saved without its unused output head, a family whose mlx-lm class has no
``sanitize`` of its own (Gemma), a model_type mlx-lm cannot build, and a family whose body has no
``embed_tokens`` (GPT-2). Each snapshot is Qwen3-Embedding's sentence-transformers layout
(embedfix's "st" files) with another config and real random weights of mlx-lm's own class.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlxk.embedding.common import Embedder
from mlxk.embedding.loader import load_embedder
from tests.embedfix import build_tiny_qwen3_embedding
from tests.modelfix import install

NAME = "test/Decoder-Embedding-Tiny"
TEXTS = ["hello world", "a cat sat on the mat", "quantum chromodynamics"]


@pytest.fixture(scope="module")
def qwen3() -> dict[str, bytes]:
    return build_tiny_qwen3_embedding("st")


def vocab_size(files: dict[str, bytes]) -> int:
    return int(json.loads(files["config.json"])["vocab_size"])


def with_model(base: dict[str, bytes], config: dict[str, Any], *, bare: bool = False) -> dict[str, bytes]:
    """``base``'s tokenizer and sentence-transformers files around a model of mlx-lm's class for
    ``config`` (seeded random weights); ``bare``: saved without the ``model.`` prefix, as a checkpoint of
    the transformer alone."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import save_model

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(5)
    model = module.Model(module.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    files = {k: v for k, v in base.items() if not k.startswith("model.safetensors")}
    with tempfile.TemporaryDirectory(prefix="mlxk-decoder-body-") as tmp:
        if bare:
            pairs = tree_flatten(model.parameters())  # a list of (dotted name, array) without a destination
            assert isinstance(pairs, list)
            weights = {k.removeprefix("model."): v for k, v in pairs}
            mx.save_safetensors(str(Path(tmp, "model.safetensors")), weights, metadata={"format": "pt"})
        else:
            save_model(Path(tmp), model)
        for path in Path(tmp).iterdir():
            files[path.name] = path.read_bytes()
    files["config.json"] = json.dumps(config).encode()
    return files


def loaded(tmp_path: Path, files: dict[str, bytes]) -> Embedder:
    hub = tmp_path / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    repo = install(hub, NAME, files)
    return load_embedder(str(repo.snapshot))


def vectors(embedder: Embedder) -> np.ndarray:
    return np.asarray(embedder.embed(TEXTS).vectors)


def refusal(cli: Any) -> str:
    result = cli("embed", NAME, "hello", "--json")
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 1 and error["type"] == "model_incompatible", result.stdout
    return str(error["message"])


def test_an_untied_checkpoint_without_its_output_head_embeds_as_the_tied_one(
    tmp_path: Path, qwen3: dict[str, bytes]
) -> None:
    """The head an embedder never uses is filled in for mlx-lm's strict loading; the body, and so
    every vector, is the same as with the tied checkpoint's."""
    config = json.loads(qwen3["config.json"])
    untied = {**qwen3, "config.json": json.dumps({**config, "tie_word_embeddings": False}).encode()}
    tied_vectors = vectors(loaded(tmp_path / "tied", qwen3))
    embedder = loaded(tmp_path / "untied", untied)
    assert embedder.dimensions == config["hidden_size"]
    assert np.max(np.abs(vectors(embedder) - tied_vectors)) < 1e-6


def test_a_family_without_a_sanitize_of_its_own_loads_bare_or_prefixed(
    tmp_path: Path, qwen3: dict[str, bytes]
) -> None:
    config = {
        "model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64,
        "num_attention_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6, "vocab_size": vocab_size(qwen3),
        "num_key_value_heads": 1, "max_position_embeddings": 256,
    }  # fmt: skip
    assert not hasattr(importlib.import_module("mlx_lm.models.gemma").Model, "sanitize")
    prefixed = loaded(tmp_path / "prefixed", with_model(qwen3, config))
    bare = loaded(tmp_path / "bare", with_model(qwen3, config, bare=True))
    assert (prefixed.model_type, prefixed.dimensions, prefixed.max_length) == ("gemma", 32, 256)
    got = vectors(bare)
    assert np.max(np.abs(got - vectors(prefixed))) < 1e-6
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in got}) == len(TEXTS)  # each text its own vector


def test_a_model_type_mlx_lm_cannot_build_is_incompatible(
    cli: Any, hub: Path, qwen3: dict[str, bytes]
) -> None:
    config = {**json.loads(qwen3["config.json"]), "model_type": "qwen9000"}
    install(hub, NAME, {**qwen3, "config.json": json.dumps(config).encode()})
    prefix = "mlx-lm cannot load this qwen9000: "
    message = refusal(cli)
    assert message.startswith(prefix) and "qwen9000" in message.removeprefix(prefix)  # mlx-lm's reason


def test_a_body_without_embed_tokens_is_incompatible(cli: Any, hub: Path, qwen3: dict[str, bytes]) -> None:
    """mlx-lm builds GPT-2 (its token embedding is ``wte``), but mlxk calls a body by its
    ``embed_tokens``: a clear refusal, not an AttributeError from inside the forward pass."""
    config = {
        "model_type": "gpt2", "n_ctx": 256, "n_embd": 32, "n_head": 2, "n_layer": 1, "n_positions": 256,
        "layer_norm_epsilon": 1e-5, "vocab_size": vocab_size(qwen3),
    }  # fmt: skip
    install(hub, NAME, with_model(qwen3, config))
    assert refusal(cli) == "gpt2 has no transformer body mlxk knows how to call"
