"""The loopback Hub for pull tests: one small MLX model served, huggingface_hub pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
from tests.hubserver import FakeHub

REPO = "mlx-community/Tiny-Chat-4bit"
BIG = "model.safetensors"


def model_files(**kwargs: Any) -> dict[str, bytes]:
    files = gen.mlx_chat_model_files(tensors=16, dims=(128, 128), **kwargs)
    return {path: content for path, content in files.items() if isinstance(content, bytes)}


def serve_fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Starts the server with ``REPO`` on it and points huggingface_hub (and mlxk) at it."""
    server = FakeHub(tmp_path / "fakehub")
    server.add_commit(REPO, model_files())
    with server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        yield server
        assert server.errors == []


def repo_dir(hub: Path, name: str = REPO) -> Path:
    return hub / ("models--" + name.replace("/", "--"))


def finished_files(hub: Path, name: str = REPO) -> set[str]:
    """The files a pull completed: each gets its snapshot link once its blob is whole. A pull's
    files download concurrently, so when one fails the others may or may not have finished."""
    return {path.name for path in repo_dir(hub, name).glob("snapshots/*/*")}
