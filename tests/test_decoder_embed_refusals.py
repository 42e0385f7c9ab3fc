"""Decoder-based embedding models whose snapshot the embedder cannot use (healthy as a cache entry,
but not loadable as an embedder): ``mlxk embed`` says why (model_incompatible, exit 1) instead of
failing inside mlx-lm; and a checkpoint saved without its unused output head still loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from tests.embedfix import build_tiny_qwen3_embedding
from tests.modelfix import install

NAME = "test/Qwen3-Embedding-Tiny"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return build_tiny_qwen3_embedding("st")


def refusal(cli: Any) -> str:
    result = cli("embed", NAME, "hello", "--json")
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 1 and error["type"] == "model_incompatible", result.stdout
    return str(error["message"])


def test_a_sentencepiece_vocabulary_without_tokenizer_json(
    cli: Any, hub: Path, files: dict[str, bytes]
) -> None:
    snapshot = {k: v for k, v in files.items() if k != "tokenizer.json"}
    snapshot["tokenizer.model"] = b"\x0a\x00"  # a vocabulary the cache accepts, not one the embedder reads
    install(hub, NAME, snapshot)
    assert refusal(cli) == "the snapshot has no tokenizer.json (the embedder needs a fast tokenizer)"


def test_a_tokenizer_json_that_does_not_parse(cli: Any, hub: Path, files: dict[str, bytes]) -> None:
    install(hub, NAME, {**files, "tokenizer.json": b'{"version": "1.0", "model": 5}'})
    assert refusal(cli).startswith("cannot read tokenizer.json: ")


def test_weights_that_miss_a_tensor(cli: Any, hub: Path, files: dict[str, bytes], tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    source.write_bytes(files["model.safetensors"])
    loaded = mx.load(str(source))
    assert isinstance(loaded, dict)
    weights = dict(loaded)
    dropped = next(k for k in sorted(weights) if k.endswith("o_proj.weight"))
    del weights[dropped]
    mx.save_safetensors(str(source), weights, metadata={"format": "mlx"})
    install(hub, NAME, {**files, "model.safetensors": source.read_bytes()})
    message = refusal(cli)
    assert message.startswith("mlx-lm cannot load this qwen3: ") and dropped.split(".")[-2] in message
