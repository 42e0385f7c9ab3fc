"""A person at a terminal is asked before rm deletes and before pull resumes; the answer decides."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cachefix import healthy_model
from tests.hubfix import REPO, repo_dir
from tests.hubserver import FakeHub


def on_terminal(answer: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Runs mlxk with a pseudo-terminal as stdin, the answer already typed."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer)
        return subprocess.run(
            [sys.executable, "-m", "mlxk", *args], stdin=slave, capture_output=True, timeout=60, check=False
        )
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize(("answer", "deleted"), [(b"y\n", True), (b"n\n", False), (b"\n", False)])
def test_rm_asks_on_a_terminal(hub: Path, answer: bytes, deleted: bool) -> None:
    repo = healthy_model(hub)
    proc = on_terminal(answer, "rm", "tiny")  # a fuzzy name: the question names the model it matched
    assert b"Delete mlx-community/Tiny-Chat-4bit? [y/N]" in proc.stderr
    assert b"freeing" in proc.stderr  # the plan is shown before the question
    assert (proc.returncode == 0) is deleted
    assert repo.repo_dir.exists() is not deleted


@pytest.mark.parametrize(("answer", "resumed"), [(b"y\n", True), (b"\n", True), (b"n\n", False)])
def test_pull_asks_before_resuming(hub: Path, fake: FakeHub, answer: bytes, resumed: bool) -> None:
    fake.wrong_bytes = {"model.safetensors"}
    assert subprocess.run([sys.executable, "-m", "mlxk", "pull", REPO, "-q"], check=False).returncode == 2
    fake.wrong_bytes = set()
    proc = on_terminal(answer, "pull", REPO)
    assert b"partly downloaded" in proc.stderr and b"[Y/n]" in proc.stderr
    assert (proc.returncode == 0) is resumed
    assert (repo_dir(hub) / "refs" / "main").exists() is resumed
    assert fake.gets("model.safetensors") == (2 if resumed else 1)
