"""What a user gets from parts of the cache that they may not read or write: the error types of
the JSON contract (permission_denied, exit 3) or the reason a model is unhealthy, and a cache left
as it was. Run with the permissions any user meets (``tests.privfix``), against both cores."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import cachegen as gen
from tests.cachefix import healthy_model
from tests.privfix import mlxk_as_a_user

NAME = "mlx-community/Tiny-Chat-4bit"


@contextmanager
def mode(path: Path, bits: int) -> Iterator[None]:
    os.chmod(path, bits)
    try:
        yield
    finally:
        os.chmod(path, 0o755)


def envelope(*args: str, exit_code: int) -> dict[str, Any]:
    result = mlxk_as_a_user(*args, "--json")
    assert result.returncode == exit_code, (result.stdout, result.stderr)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def listed(hub: Path) -> list[tuple[str, bool]]:
    models = envelope("list", exit_code=0)["data"]["models"]
    return [(m["name"], m["health"] == "healthy") for m in models]


def test_rm_in_a_cache_folder_it_may_not_write(core: str, hub: Path) -> None:
    healthy_model(hub)
    with mode(hub, 0o555):
        answer = envelope("rm", NAME, "-f", exit_code=3)
    assert answer["error"] == {
        "type": "permission_denied",
        "message": f"cannot lock {NAME}: Permission denied",
    }
    assert listed(hub) == [(NAME, True)]


def test_rm_of_a_repo_folder_it_may_not_write(core: str, hub: Path) -> None:
    repo = healthy_model(hub)
    with mode(repo.repo_dir, 0o555):
        answer = envelope("rm", NAME, "-f", exit_code=3)
    assert answer["error"]["type"] == "permission_denied"
    assert answer["error"]["message"] == f"cannot delete {repo.repo_dir.name}: Permission denied"
    assert listed(hub) == [(NAME, True)]


def test_a_cache_folder_it_may_not_read(core: str, hub: Path) -> None:
    healthy_model(hub)
    with mode(hub, 0):
        answer = envelope("list", exit_code=3)
    assert answer["error"] == {
        "type": "permission_denied",
        "message": f"cannot read the cache folder {hub}: Permission denied",
    }


def test_a_repo_or_snapshot_it_may_not_read_is_unhealthy_with_the_reason(core: str, hub: Path) -> None:
    repo = healthy_model(hub)
    snapshot = next((repo.repo_dir / "snapshots").iterdir())
    for folder, reason in (
        (repo.repo_dir, f"repo folder {repo.repo_dir.name} cannot be read: Permission denied"),
        (snapshot, f"snapshot {snapshot.name[:8]} cannot be read: Permission denied"),
    ):
        with mode(folder, 0):
            (entry,) = envelope("health", exit_code=0)["data"]["unhealthy"]
        assert (entry["name"], entry["reason"]) == (NAME, reason)


def test_a_config_or_index_it_may_not_read_is_unhealthy_with_the_reason(core: str, hub: Path) -> None:
    repo = gen.add_model(hub, NAME, gen.mlx_chat_model_files(tensors=12, shards=2))
    for file, reason in (
        ("config.json", "config.json cannot be read (errno 13)"),
        ("model.safetensors.index.json", "model.safetensors.index.json cannot be read"),
    ):
        blob = repo.blob_of(file)
        os.chmod(blob, 0)
        try:
            (entry,) = envelope("health", exit_code=0)["data"]["unhealthy"]
        finally:
            os.chmod(blob, 0o644)
        assert entry["reason"] == reason
