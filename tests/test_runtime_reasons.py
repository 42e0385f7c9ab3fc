"""Why ``mlxk list`` calls a healthy MLX model not runnable (mlxk.cache.build's runtime rules): an
embedding model, a model_type the installed mlx-lm has no module for, no mlx-lm at all."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
from mlxk.cache.runtime import mlx_lm_support


def _add(hub: Path, name: str, **config: Any) -> None:
    files = gen.mlx_chat_model_files(tensors=12)
    base = json.loads(gen.llama_config())
    files["config.json"] = json.dumps({**base, **config}).encode()
    gen.add_model(hub, name, files, real_hash=True)


def _entries(cli: Any) -> dict[str, dict[str, Any]]:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.stderr
    return {m["name"]: m for m in result.json()["data"]["models"]}


@pytest.fixture
def fresh_support() -> Iterator[None]:
    mlx_lm_support.cache_clear()
    yield
    mlx_lm_support.cache_clear()


def test_an_mlx_embedding_model_is_healthy_but_not_runnable(cli: Any, hub: Path) -> None:
    _add(hub, "mlx-community/bge-small-4bit", model_type="bert", architectures=["BertModel"])
    entry = _entries(cli)["mlx-community/bge-small-4bit"]
    assert entry["health"] == "healthy" and entry["model_type"] == "embedding"
    assert entry["runtime_compatible"] is False
    assert entry["reason"] == "embedding model: mlx-lm does not generate text with it"


def test_a_model_type_mlx_lm_lacks_is_not_runnable(cli: Any, hub: Path, fresh_support: None) -> None:
    _add(hub, "mlx-community/Future-4bit", model_type="no_such_arch")
    _add(hub, "mlx-community/Llama-4bit")
    entries = _entries(cli)
    version = importlib.metadata.version("mlx-lm")
    assert entries["mlx-community/Future-4bit"]["runtime_compatible"] is False
    assert entries["mlx-community/Future-4bit"]["reason"] == (
        f"model_type 'no_such_arch' is not supported by mlx-lm {version}"
    )
    assert entries["mlx-community/Llama-4bit"]["runtime_compatible"] is True


def test_without_mlx_lm_nothing_is_runnable(
    cli: Any, hub: Path, fresh_support: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlx-lm is installed here: ``sys.modules["mlx_lm"] = None`` is Python's own way of making an
    import (and ``find_spec``) find nothing, as on a machine without it."""
    _add(hub, "mlx-community/Llama-4bit")
    monkeypatch.setitem(sys.modules, "mlx_lm", None)
    entry = _entries(cli)["mlx-community/Llama-4bit"]
    assert entry["health"] == "healthy"
    assert (entry["runtime_compatible"], entry["reason"]) == (False, "mlx-lm is not installed")
