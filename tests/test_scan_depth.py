"""The cache scan follows folders inside ``refs`` and a repo's lock folder to a depth of 8 (``MAX_DEPTH``)
and no deeper, on both cores: what lies deeper is not counted, and a deep tree harms nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxk.core.records import MAX_DEPTH
from tests.cachefix import healthy_model


def nested(top: Path, depth: int) -> Path:
    folder = top.joinpath(*(f"d{i}" for i in range(1, depth + 1)))
    folder.mkdir(parents=True)
    return folder


def test_lock_files_deeper_than_the_limit_are_not_counted(core: str, hub: Path, cli: Any) -> None:
    repo = healthy_model(hub, "org/m")
    locks = hub / ".locks" / repo.repo_dir.name
    (nested(locks, MAX_DEPTH) / "at-the-limit.lock").touch()
    (nested(locks / "deeper", MAX_DEPTH) / "past-the-limit.lock").touch()  # 9 folders down
    (entry,) = cli("health", "--json").json()["data"]["healthy"]
    assert (entry["name"], entry["reason"]) == ("org/m", "healthy (1 stale lock file)")


def test_a_refs_tree_deeper_than_the_limit_leaves_the_model_as_it_was(core: str, hub: Path, cli: Any) -> None:
    repo = healthy_model(hub, "org/m")
    commit = (repo.repo_dir / "refs" / "main").read_text()
    (nested(repo.repo_dir / "refs" / "pr", 2 * MAX_DEPTH) / "main").write_text("0" * 40)
    (listed,) = cli("list", "--json").json()["data"]["models"]
    assert (listed["name"], listed["hash"], listed["health"]) == ("org/m", commit, "healthy")
    (entry,) = cli("health", "--json").json()["data"]["healthy"]
    assert entry["reason"] == "healthy"
