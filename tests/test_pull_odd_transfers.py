"""``mlxk pull`` when a file's body is not the size the Hub announced, and when another client is
downloading a file of the same repo that this pull does not fetch."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.hubfix import BIG, REPO, model_files, repo_dir
from tests.hubserver import FakeHub


@pytest.mark.parametrize("extra", [7, -7], ids=["longer", "shorter"])
def test_a_body_of_another_size_than_announced_fails_the_pull(
    cli: Any, hub: Path, fake: FakeHub, extra: int
) -> None:
    """The connection ends cleanly, so nothing is retried: huggingface_hub's size check fails the file."""
    fake.wrong_length = {BIG: extra}
    result = cli("pull", REPO, "--json")
    error = result.json()["error"]
    assert (result.exit_code, error["type"]) == (2, "download_failed")
    size = len(model_files()[BIG])
    assert error["message"].startswith(f"a file of {REPO} arrived with the wrong size")
    assert f"should be of size {size} but has size {size + extra}" in error["message"]
    repo = repo_dir(hub)
    assert not (repo / "refs" / "main").exists()  # nothing published
    good = hashlib.sha256(model_files()[BIG]).hexdigest()
    assert not (repo / "blobs" / good).exists()  # no blob of the wrong size under the right name
    assert not list((repo / "blobs").glob("*.incomplete"))  # the wrong-sized file is not kept to resume
    # no phantom model: what arrived is listed as the partial download it is, not as a usable model
    (listed,) = cli("list", "--json").json()["data"]["models"]
    assert (listed["name"], listed["health"], listed["reason"]) == (REPO, "unhealthy", "no weight files")
    fake.wrong_length = {}
    assert cli("pull", REPO, "--force-resume", "--json").exit_code == 0
    assert (repo / "blobs" / good).read_bytes() == model_files()[BIG]
    assert cli("health", REPO, "--json").json()["data"]["summary"]["healthy_count"] == 1


def test_another_clients_download_of_a_file_not_pulled_is_left_alone(
    cli: Any, hub: Path, fake: FakeHub
) -> None:
    """Another client (huggingface_hub in another process) is downloading the weights of the repo's
    ``dev`` branch, a blob ``main`` does not have: it holds the blob's lock and writes its
    ``.incomplete`` file. A pull of ``main`` neither removes that file nor takes it for one of its own."""
    files = dict(model_files())
    other = files[BIG][:-4] + b"\x01\x02\x03\x04"
    fake.add_commit(REPO, {**files, BIG: other}, branch="dev")
    etag = hashlib.sha256(other).hexdigest()  # the blob name of an LFS file
    repo = repo_dir(hub)
    (repo / "blobs").mkdir(parents=True)
    partial = repo / "blobs" / f"{etag}.incomplete"
    partial.write_bytes(other[:1000])
    locks = hub / ".locks" / repo.name
    locks.mkdir(parents=True)
    lock = os.open(locks / f"{etag}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as huggingface_hub's download holds it
        # the repo folder is there (the other client's file): resuming it needs a yes
        result = cli("pull", REPO, "--force-resume", "--json")
        assert result.exit_code == 0, result.stdout
        data = result.json()["data"]
        assert (data["download_status"], data["health"]) == ("success", "healthy")
        assert data["leftovers_cleaned"] == 0
        assert partial.read_bytes() == other[:1000]  # untouched
        assert not (repo / "blobs" / etag).exists()
        commit = (repo / "refs" / "main").read_text()
        assert (repo / "snapshots" / commit / BIG).read_bytes() == files[BIG]
        (entry,) = cli("health", "--json").json()["data"]["healthy"]
        assert entry["reason"] == (  # the other client's download, still going
            "healthy (1 leftover .incomplete blob from an interrupted download; 1 lock held (download in progress?))"
        )
    finally:
        os.close(lock)
