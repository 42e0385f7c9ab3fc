"""Edge cases found in review: relative cache paths, symlinked lock folders, plans gone stale,
snapshots complete but never verified, racing lock folders, local disk errors."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlxk.cache.scan import CacheLocation
from mlxk.errors import RequiresConfirmation
from mlxk.hub.remote import local_error
from mlxk.hub.tail_hash import TailHasher
from mlxk.ops.rm import plan_removal, remove
from tests.cachefix import healthy_model
from tests.hubfix import BIG, REPO, model_files, repo_dir
from tests.hubserver import FakeHub
from tests.privfix import mlxk_as_a_user
from tests.test_pull import incomplete, wait_for
from tests.test_rm import NAME, TwoRevisions


def test_a_relative_cache_path_pulls_and_removes_correctly(
    cli: Any, tmp_path: Path, fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", "./rel/../rel-hub")
    assert cli("pull", REPO, "--json").exit_code == 0
    v2 = fake.add_commit(REPO, {**model_files(), "extra.json": b"{}"}, branch="v2")
    assert cli("pull", f"{REPO}@v2", "--json").exit_code == 0
    assert cli("rm", f"{REPO}@{v2[:8]}", "-f", "--json").exit_code == 0
    health = cli("health", "--json").json()["data"]
    assert health["summary"]["healthy_count"] == 1  # the shared blobs of main stayed


def test_rm_never_deletes_through_a_symlinked_lock_folder(cli: Any, hub: Path, tmp_path: Path) -> None:
    healthy_model(hub, NAME)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    (hub / ".locks").mkdir()
    os.symlink(victim, hub / ".locks" / "models--mlx-community--Tiny-Chat-4bit")
    result = cli("rm", NAME, "-f", "--json")
    assert (victim / "important.txt").read_text() == "keep me"
    assert sorted(p.name for p in victim.iterdir()) == ["important.txt"]  # no mlxk.lock made there either
    assert result.json()["error"]["type"] == "deletion_failed"  # a refusal, as docs/json-api.md says


def test_rm_refuses_a_plan_that_went_stale(hub: Path) -> None:
    two = TwoRevisions(hub)
    location = CacheLocation(str(hub), None)
    removal = plan_removal(location, f"{NAME}@{two.prefix}")
    os.unlink(two.new.snapshot / "README.md")  # the model changes after the plan was shown
    os.symlink(os.readlink(two.old.snapshot / "README.md"), two.new.snapshot / "README.md")
    with pytest.raises(RequiresConfirmation):
        remove(removal, force=True)
    assert two.old.snapshot.exists() and two.exclusive_old <= two.blobs()


def test_rm_of_a_repo_whose_blobs_folder_is_a_link(cli: Any, hub: Path, tmp_path: Path) -> None:
    repo = healthy_model(hub, NAME)
    outside = tmp_path / "blobs-elsewhere"
    os.rename(repo.repo_dir / "blobs", outside)
    os.symlink(outside, repo.repo_dir / "blobs")
    assert cli("rm", NAME, "-f", "--json").exit_code == 0
    assert not repo.repo_dir.exists() and len(list(outside.iterdir())) == 6


def test_a_complete_but_unverified_snapshot_is_verified_before_its_ref(
    cli: Any, hub: Path, fake: FakeHub
) -> None:
    assert cli("pull", REPO).exit_code == 0
    repo = repo_dir(hub)
    blob = repo / "blobs" / hashlib.sha256(model_files()[BIG]).hexdigest()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))  # as if killed after the last byte and before the checks
    (repo / "refs" / "main").unlink()
    result = cli("pull", REPO, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (2, "download_failed")
    assert not blob.exists() and not (repo / "refs" / "main").exists()


def test_a_rewound_download_trusts_no_streamed_digest(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    with TailHasher(str(blobs), {"a" * 64: (3, True)}) as hasher:
        (blobs / f"{'a' * 64}.x.incomplete").write_bytes(b"abc")
        os.rename(blobs / f"{'a' * 64}.x.incomplete", blobs / ("a" * 64))
        hasher.distrust()
    assert hasher.digests == {}


def test_lock_folders_survive_racing_processes(hub: Path) -> None:
    code = (
        "import sys\nfrom mlxk.cache.locks import RepoLock\n"
        "for _ in range(300):\n"
        "    lock = RepoLock(sys.argv[1], 'models--org--m')\n"
        "    lock.acquire(wait=True)\n"
        "    lock.release()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(hub)], stderr=subprocess.PIPE) for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors


def test_rm_force_leaves_a_held_repo_lock_alone(cli: Any, hub: Path) -> None:
    healthy_model(hub, NAME)
    folder = hub / ".locks" / "models--mlx-community--Tiny-Chat-4bit"
    folder.mkdir(parents=True)
    with open(folder / "mlxk.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a pull in progress
        assert cli("rm", NAME, "-f", "--json").exit_code == 0
        assert (folder / "mlxk.lock").exists()


@pytest.mark.parametrize(
    ("code", "error_type", "exit_code"),
    [
        (errno.ENOSPC, "insufficient_space", 3),
        (errno.EACCES, "permission_denied", 3),
        (errno.EROFS, "permission_denied", 3),
        (errno.EIO, "filesystem_error", 3),
    ],
)
def test_local_disk_errors_are_not_network_errors(code: int, error_type: str, exit_code: int) -> None:
    error = local_error(OSError(code, os.strerror(code), "/cache/x"), "org/m")
    assert (error.error_type, error.exit_code) == (error_type, exit_code)


def test_a_read_only_cache_is_permission_denied(hub: Path, fake: FakeHub) -> None:
    os.chmod(hub, 0o555)
    try:
        result = mlxk_as_a_user("pull", REPO, "--json")  # root would write there anyway
    finally:
        os.chmod(hub, 0o755)
    assert (result.returncode, json.loads(result.stdout)["error"]["type"]) == (3, "permission_denied")
    assert list(hub.iterdir()) == []


def test_a_pull_racing_rm_force_ends_cleanly_and_leaves_nothing(hub: Path, fake: FakeHub) -> None:
    """rm -f deletes a model while it downloads: the pull stops with a clear error, and neither
    its half-written files nor its lock files stay behind."""
    fake.slow_bps = 400_000
    puller = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], stdout=subprocess.PIPE, text=True
    )
    wait_for(lambda: bool(incomplete(hub)))
    removed = subprocess.run(
        [sys.executable, "-m", "mlxk", "rm", REPO, "-f", "--json"], capture_output=True, text=True, timeout=60
    )
    assert removed.returncode == 0, removed.stdout
    out = puller.communicate(timeout=120)[0]
    envelope = json.loads(out)
    assert puller.returncode == 1, out
    assert envelope["error"]["type"] == "interrupted" and "deleted" in envelope["error"]["message"]
    assert envelope["data"]["download_status"] == "failed"
    left = sorted(str(p.relative_to(hub)) for p in hub.rglob("*"))
    assert left in ([], ["CACHEDIR.TAG"]), left  # huggingface_hub's tag of the cache folder may stay
    fake.slow_bps = None
    assert subprocess.run([sys.executable, "-m", "mlxk", "pull", REPO, "-q"], timeout=120).returncode == 0


def test_the_next_pull_cleans_what_a_killed_whole_repo_rm_left(cli: Any, hub: Path, fake: FakeHub) -> None:
    assert cli("pull", REPO).exit_code == 0
    env = {**os.environ, "MLXK_TEST_RM_KILL_AFTER": "rename"}
    killed = subprocess.run([sys.executable, "-m", "mlxk", "rm", REPO, "-f"], env=env, timeout=60)
    assert killed.returncode == -9
    assert (hub / ".locks" / repo_dir(hub).name / "mlxk.lock").exists()  # the killed rm's lock file
    assert cli("pull", REPO, "--json").json()["data"]["download_status"] == "success"
    assert not (hub / ".locks").exists()  # no trash entry, no lock folder, nothing left


def test_a_pull_finishes_a_killed_rm_before_it_adds(cli: Any, hub: Path, fake: FakeHub) -> None:
    """A killed rm MODEL@HASH, then a pull of that same snapshot: the removal is finished first, so
    it can never take the freshly pulled snapshot later."""
    assert cli("pull", REPO).exit_code == 0
    v2 = fake.add_commit(REPO, {**model_files(), "extra.json": b'{"v": 2}'}, branch="v2")
    assert cli("pull", f"{REPO}@v2").exit_code == 0
    env = {**os.environ, "MLXK_TEST_RM_KILL_AFTER": "refs"}
    killed = subprocess.run(
        [sys.executable, "-m", "mlxk", "rm", f"{REPO}@{v2[:8]}", "-f"], env=env, timeout=60
    )
    assert killed.returncode == -9
    assert (repo_dir(hub) / "snapshots" / v2).is_dir()  # the kill came before the snapshot went

    again = cli("pull", f"{REPO}@v2", "--json").json()["data"]
    assert (again["download_status"], again["commit"]) == ("success", v2)
    health = cli("health", "--json").json()["data"]  # health would finish a pending removal: none left
    assert health["summary"] == {"total": 1, "healthy_count": 1, "unhealthy_count": 0}
    assert (repo_dir(hub) / "snapshots" / v2 / "extra.json").read_bytes() == b'{"v": 2}'
    assert (repo_dir(hub) / "refs" / "v2").read_text() == v2
    assert not (hub / ".locks").exists()
