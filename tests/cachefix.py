"""Small builders on top of benchmarks.cachegen for the tests: one healthy model, then damage."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo


def healthy_model(hub: Path, name: str = "mlx-community/Tiny-Chat-4bit", **kwargs: object) -> CachedRepo:
    files = gen.mlx_chat_model_files(tensors=12, **kwargs)  # type: ignore[arg-type]
    return gen.add_model(hub, name, files)


def replace_blob(repo: CachedRepo, file: str, data: bytes) -> None:
    """Overwrite the content behind ``file`` (the blob, or the copy in copy-mode)."""
    blob = repo.blob_of(file)
    os.chmod(blob, 0o644)
    blob.write_bytes(data)
    os.utime(blob, (gen.OLD_MTIME, gen.OLD_MTIME))


def truncate_blob(repo: CachedRepo, file: str, delta: int) -> None:
    blob = repo.blob_of(file)
    size = blob.stat().st_size
    with open(blob, "r+b") as fh:
        fh.truncate(size + delta)
    os.utime(blob, (gen.OLD_MTIME, gen.OLD_MTIME))
