"""What list, health, show and run say about what a failed pull leaves, made by real pulls
(huggingface_hub against our Hub on 127.0.0.1), never by hand."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.hubfix import REPO, repo_dir
from tests.hubserver import FakeHub

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())
pytestmark = pytest.mark.usefixtures("core")


def mlxk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlxk", *args], capture_output=True, text=True, timeout=120)


def envelope(*args: str) -> Any:
    proc = mlxk(*args, "--json")
    data = json.loads(proc.stdout)
    jsonschema.validate(data, SCHEMA, cls=jsonschema.Draft7Validator)
    return data


def wait_for_partial_file(hub: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the pull has a *.incomplete blob on disk (it streams slowly: it stays there)."""
    blobs = repo_dir(hub) / "blobs"
    deadline = time.monotonic() + 60  # only so that a broken pull fails the test instead of hanging it
    while not (blobs.is_dir() and any(p.name.endswith(".incomplete") for p in blobs.iterdir())):
        assert proc.poll() is None, "the pull ended before it wrote anything"
        assert time.monotonic() < deadline, "the pull wrote nothing"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)  # a poll that returns at once should the pull end


def test_a_killed_pull_is_an_incomplete_download_to_resume(hub: Path, fake: FakeHub) -> None:
    fake.slow_bps = 200_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_partial_file(hub, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    listed = envelope("list")["data"]["models"]
    assert [m["health"] for m in listed] == ["unhealthy"]
    reason = listed[0]["reason"]
    assert reason.startswith("incomplete download: ")
    assert "(*.incomplete)" in reason and reason.endswith(f"resume it with `mlxk pull {REPO}`")
    assert envelope("health")["data"]["unhealthy"][0]["reason"] == reason
    assert reason in mlxk("health").stdout

    fake.slow_bps = None
    assert mlxk("pull", REPO, "--force-resume").returncode == 0  # the hint is right: it resumes
    assert envelope("health")["data"]["summary"]["healthy_count"] == 1


def test_a_pull_that_failed_its_checks_leaves_nothing_called_healthy(hub: Path, fake: FakeHub) -> None:
    fake.wrong_bytes.add("tokenizer.json")
    failed = envelope("pull", REPO)
    assert failed["error"]["type"] == "download_failed"
    assert not (repo_dir(hub) / "refs" / "main").exists()  # the snapshot is there, without its tokenizer

    expected = "no tokenizer file beside tokenizer_config.json (tokenizer.json, tokenizer.model, vocab.*, *.tiktoken)"
    model = envelope("list")["data"]["models"][0]
    assert (model["health"], model["runtime_compatible"], model["reason"]) == ("unhealthy", False, expected)
    deep = mlxk("health", "--deep", "--strict")
    assert deep.returncode == 1 and expected in deep.stdout
    run = envelope("run", REPO, "hello")
    assert run["error"]["type"] == "model_unhealthy"  # refused before anything is loaded
