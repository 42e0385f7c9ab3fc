"""``mlxk rm``: the plan, the confirmations, and what really goes from (and stays on) the disk.

Every test checks the filesystem itself, not only the envelope: a plan that says the right
thing while the wrong files go (or stay) must fail here.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from huggingface_hub import scan_cache_dir

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo
from mlxk.cache.root import mlxk_cache_dir
from mlxk.cache.scan import CacheLocation
from mlxk.errors import LocksPresent
from mlxk.ops.rm import plan_removal, remove
from tests.cachefix import healthy_model
from tests.conftest import CliResult

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())

NAME = "mlx-community/Tiny-Chat-4bit"
OTHER = "org/other-model"
Cli = Callable[..., CliResult]

# the data keys every rm envelope carries (ambiguous matches carry the first six only)
DATA_KEYS = {
    "model", "action", "message", "requires_confirmation", "matches", "lock_files_cleaned", "revision",
    "whole_repo", "snapshots", "kept_snapshots", "refs", "blobs", "incomplete_blobs", "freed_bytes",
    "stale_lock_files", "held_locks", "outside_links",
}  # fmt: skip


def envelope(result: CliResult, exit_code: int) -> Any:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    out = result.json()
    jsonschema.validate(out, SCHEMA, cls=jsonschema.Draft7Validator)
    assert out["command"] == "rm"
    assert out["status"] == ("success" if exit_code == 0 else "error")
    return out


def error_type(result: CliResult, exit_code: int) -> str:
    out = envelope(result, exit_code)
    return str(out["error"]["type"])


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): kind and size, or the link text."""
    entries: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for entry in [*dirs, *files]:
            path = os.path.join(folder, entry)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = "dir"
            else:
                entries[rel] = f"file:{st.st_size}"
    return entries


def blob_sizes(repo: CachedRepo) -> dict[str, int]:
    blobs = repo.repo_dir / "blobs"
    return {p.name: p.stat().st_size for p in blobs.iterdir()}


def no_scan_warnings(hub: Path) -> set[str]:
    """huggingface_hub reads the cache without a warning; the repo ids it sees."""
    info = scan_cache_dir(hub)
    assert info.warnings == []
    return {r.repo_id for r in info.repos}


def listed(cli: Cli) -> list[str]:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.stdout
    return [m["name"] for m in result.json()["data"]["models"]]


def lock_folder(hub: Path, repo: CachedRepo) -> Path:
    return hub / ".locks" / repo.repo_dir.name


def trash(hub: Path) -> Path:
    return hub / ".locks" / ".mlxk-trash"


# --- two snapshots of one model that share most blobs -------------------------------------------

OLD = gen.commit_hash("old revision")
NEW = gen.commit_hash("new revision")


class TwoRevisions:
    """``NAME`` at ``OLD`` (ref ``v1``) and ``NEW`` (ref ``main``): weights and tokenizer shared,
    config.json and README.md different, so each snapshot has two blobs of its own."""

    def __init__(self, hub: Path) -> None:
        new_files = gen.mlx_chat_model_files(tensors=12)
        old_files = dict(new_files)
        old_files["config.json"] = gen.llama_config(rope_theta=10000.0)
        old_files["README.md"] = gen.readme() + b"\nThe first upload.\n"
        self.old = gen.add_model(hub, NAME, old_files, commit=OLD, ref="v1")
        self.new = gen.add_model(hub, NAME, new_files, commit=NEW, ref="main")
        self.repo_dir = self.new.repo_dir
        self.exclusive_old = {self.old.blob_of(f).name for f in ("config.json", "README.md")}
        self.new_blobs = {self.new.blob_of(f).name for f in new_files}
        assert not self.exclusive_old & self.new_blobs
        assert {self.old.blob_of(f).name for f in old_files} - self.exclusive_old <= self.new_blobs
        self.prefix = OLD[:7]
        assert not NEW.startswith(self.prefix)

    def blobs(self) -> set[str]:
        return {p.name for p in (self.repo_dir / "blobs").iterdir()}


@pytest.fixture
def two(hub: Path) -> TwoRevisions:
    return TwoRevisions(hub)


# --- 1. dry run ---------------------------------------------------------------------------------


def test_dry_run_reports_the_plan_and_deletes_nothing(cli: Cli, hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    healthy_model(hub, OTHER)
    (repo.repo_dir / "blobs" / ("f" * 64 + ".incomplete")).write_bytes(b"x" * 1000)
    locks = lock_folder(hub, repo)
    locks.mkdir(parents=True)
    (locks / "a.lock").touch()
    sizes = blob_sizes(repo)
    before = tree(hub)

    out = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)
    data = out["data"]
    assert set(data) == DATA_KEYS
    assert data["action"] == "would_delete" and data["model"] == NAME
    assert data["requires_confirmation"] is False and data["lock_files_cleaned"] == 0
    assert data["whole_repo"] is True and data["revision"] is None
    assert data["snapshots"] == [repo.commit] and data["kept_snapshots"] == []
    assert data["refs"] == ["main"]
    assert data["blobs"] == len(sizes) - 1 == 6  # the .incomplete leftover is counted apart
    assert data["incomplete_blobs"] == 1
    assert data["freed_bytes"] == sum(sizes.values())
    assert data["stale_lock_files"] == 1 and data["held_locks"] == [] and data["outside_links"] == []

    human = cli("rm", NAME, "--dry-run")
    assert human.exit_code == 0
    assert human.stdout.startswith(f"Would delete {NAME}: 1 snapshot(s), 6 blob(s)")
    # -f with --dry-run still only plans
    assert envelope(cli("rm", NAME, "--dry-run", "-f", "--json"), 0)["data"]["action"] == "would_delete"
    assert tree(hub) == before


def test_dry_run_of_one_snapshot_counts_only_its_own_blobs(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    before = tree(hub)
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "--dry-run", "--json"), 0)["data"]
    sizes = blob_sizes(two.old)
    assert data["whole_repo"] is False and data["revision"] == OLD
    assert data["snapshots"] == [OLD] and data["kept_snapshots"] == [NEW] and data["refs"] == ["v1"]
    assert data["blobs"] == 2
    assert data["freed_bytes"] == sum(sizes[b] for b in two.exclusive_old)
    assert tree(hub) == before


# --- 2. confirmation, fuzzy and ambiguous names -------------------------------------------------


def test_without_force_nothing_is_deleted(cli: Cli, hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    before = tree(hub)

    out = envelope(cli("rm", NAME, "--json"), 1)
    assert out["error"]["type"] == "requires_confirmation"
    assert out["data"]["action"] == "requires_confirmation" and out["data"]["requires_confirmation"] is True
    assert out["data"]["snapshots"] == [repo.commit]  # the plan comes with the refusal
    assert tree(hub) == before

    human = cli("rm", NAME)  # stdin is not a terminal under pytest: no prompt, a refusal
    assert human.exit_code == 1
    assert "needs confirmation" in human.stdout + human.stderr
    assert tree(hub) == before


def test_fuzzy_name_needs_confirmation_even_with_force(cli: Cli, hub: Path) -> None:
    healthy_model(hub, NAME)
    before = tree(hub)
    for spec in ("tiny", "Tiny-Chat-4bit", "mlx-community/tiny-chat-4bit"):
        out = envelope(cli("rm", spec, "-f", "--json"), 1)
        assert out["error"]["type"] == "requires_confirmation", spec
        assert out["data"]["model"] == NAME and out["data"]["matches"] == [NAME]
        assert "fuzzily" in out["error"]["message"]
    assert cli("rm", "tiny", "-f").exit_code == 1
    assert tree(hub) == before


def test_exact_name_with_force_deletes(cli: Cli, hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    human = cli("rm", NAME, "-f")
    assert human.exit_code == 0, human.stderr
    assert human.stdout.startswith(f"Deleted {NAME}: 1 snapshot(s), 6 blob(s)")
    assert not os.path.lexists(repo.repo_dir)


def test_ambiguous_name_deletes_nothing(cli: Cli, hub: Path) -> None:
    healthy_model(hub, "org/chat-small")
    healthy_model(hub, "org/chat-large")
    before = tree(hub)
    out = envelope(cli("rm", "chat", "-f", "--json"), 1)
    assert out["error"]["type"] == "ambiguous_match"
    assert out["data"]["action"] == "ambiguous"
    assert sorted(out["data"]["matches"]) == ["org/chat-large", "org/chat-small"]
    assert cli("rm", "chat", "-f").exit_code == 1
    assert tree(hub) == before


# --- 3. the whole repo --------------------------------------------------------------------------


def test_whole_repo_goes_and_nothing_else(cli: Cli, hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    other = healthy_model(hub, OTHER)
    locks = lock_folder(hub, repo)
    (locks / "sub").mkdir(parents=True)
    (locks / "3d695f374bf9d2f5a64a612afbf18cdd7b4beb6a.lock").touch()
    (locks / "sub" / "b.lock").touch()
    other_locks = lock_folder(hub, other)
    other_locks.mkdir()
    (other_locks / "c.lock").touch()
    other_before = tree(other.repo_dir)

    out = envelope(cli("rm", NAME, "-f", "--json"), 0)
    data = out["data"]
    assert set(data) == DATA_KEYS
    assert data["action"] == "deleted" and data["whole_repo"] is True
    assert data["stale_lock_files"] == 2 and data["lock_files_cleaned"] == 2

    assert not os.path.lexists(repo.repo_dir)
    assert not os.path.lexists(locks)
    assert not os.path.lexists(trash(hub))
    assert tree(other.repo_dir) == other_before
    assert (other_locks / "c.lock").exists()  # another model's locks are not ours to clean
    assert no_scan_warnings(hub) == {OTHER}
    assert listed(cli) == [OTHER]
    assert error_type(cli("rm", NAME, "-f", "--json"), 1) == "model_not_found"


def test_rm_of_the_only_snapshot_by_hash_removes_the_repo(cli: Cli, hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    data = envelope(cli("rm", f"{NAME}@{repo.commit[:6]}", "-f", "--json"), 0)["data"]
    assert data["whole_repo"] is True and data["snapshots"] == [repo.commit]
    assert not os.path.lexists(repo.repo_dir)
    assert not os.path.lexists(trash(hub))


# --- 4. one snapshot out of two -----------------------------------------------------------------


def test_one_snapshot_goes_with_only_its_own_blobs(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    sizes = blob_sizes(two.old)
    new_before = tree(two.new.snapshot)

    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert data["action"] == "deleted" and data["whole_repo"] is False
    assert data["revision"] == OLD and data["snapshots"] == [OLD] and data["kept_snapshots"] == [NEW]
    assert data["refs"] == ["v1"] and data["blobs"] == 2
    assert data["freed_bytes"] == sum(sizes[b] for b in two.exclusive_old)

    assert not os.path.lexists(two.old.snapshot)
    assert two.blobs() == two.new_blobs  # shared blobs stay, the old one's own are gone
    assert sorted(p.name for p in (two.repo_dir / "refs").iterdir()) == ["main"]
    assert (two.repo_dir / "refs" / "main").read_text() == NEW
    assert tree(two.new.snapshot) == new_before
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(lock_folder(hub, two.new))

    health = cli("health", NAME, "--json")
    assert health.exit_code == 0, health.stdout
    assert [m["name"] for m in health.json()["data"]["healthy"]] == [NAME]
    assert no_scan_warnings(hub) == {NAME}
    (cached,) = scan_cache_dir(hub).repos
    assert {r.commit_hash for r in cached.revisions} == {NEW}


def test_unknown_hash_prefix_deletes_nothing(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    before = tree(hub)
    unknown = next(p for p in ("0000", "ffff", "1234") if not OLD.startswith(p) and not NEW.startswith(p))
    out = envelope(cli("rm", f"{NAME}@{unknown}", "-f", "--json"), 1)
    assert out["error"]["type"] == "hash_not_found"
    assert sorted(out["error"]["available_hashes"]) == sorted([OLD[:8], NEW[:8]])
    assert tree(hub) == before


# --- 5. held locks ------------------------------------------------------------------------------


@pytest.fixture
def held_lock(hub: Path) -> Iterator[Path]:
    """A lock file flock-ed by this process: a download in progress, as rm sees it."""
    path = hub / ".locks" / ("models--" + NAME.replace("/", "--")) / "download.lock"
    path.parent.mkdir(parents=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield path


def test_held_lock_refuses_unless_forced(cli: Cli, hub: Path, held_lock: Path) -> None:
    repo = healthy_model(hub, NAME)
    (held_lock.parent / "stale.lock").touch()
    before = tree(hub)

    out = envelope(cli("rm", NAME, "--json"), 1)
    assert out["error"]["type"] == "locks_present"
    assert "download.lock" in out["error"]["message"]
    assert out["data"]["held_locks"] == ["download.lock"] and out["data"]["stale_lock_files"] == 1
    assert cli("rm", NAME).exit_code == 1
    assert tree(hub) == before

    # a "yes" at the prompt is no -f: the removal itself refuses while the lock is held
    removal = plan_removal(CacheLocation(str(hub), mlxk_cache_dir()), NAME)
    with pytest.raises(LocksPresent):
        remove(removal, force=False)
    assert tree(hub) == before

    data = envelope(cli("rm", NAME, "-f", "--json"), 0)["data"]
    assert data["held_locks"] == ["download.lock"] and data["lock_files_cleaned"] == 1
    assert not os.path.lexists(repo.repo_dir)
    assert held_lock.exists()  # a live process's lock file is never pulled from under it
    assert not (held_lock.parent / "stale.lock").exists()
    assert not os.path.lexists(trash(hub))


# --- 6./7. symlinks are never followed ----------------------------------------------------------


def test_repo_folder_that_is_a_link_is_refused(cli: Cli, hub: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    victim = healthy_model(outside, "org/linked")  # a complete repo, only reachable through the link
    link = hub / victim.repo_dir.name
    os.symlink(victim.repo_dir, link)
    outside_before = tree(outside)

    for args in (("--dry-run",), ("-f",)):
        out = envelope(cli("rm", "org/linked", *args, "--json"), 3)
        assert out["error"]["type"] == "deletion_failed", args
        assert "symbolic link" in out["error"]["message"]
    assert cli("rm", "org/linked", "-f").exit_code == 3
    assert os.path.islink(link) and os.readlink(link) == str(victim.repo_dir)
    assert tree(outside) == outside_before
    assert not os.path.lexists(trash(hub))


def test_snapshot_links_to_outside_go_but_their_targets_stay(cli: Cli, hub: Path, tmp_path: Path) -> None:
    repo = healthy_model(hub, NAME)
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    folder = tmp_path / "outside-folder"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"keep me too")
    os.symlink(secret, repo.snapshot / "secret.txt")
    os.symlink(os.path.relpath(folder, repo.snapshot), repo.snapshot / "extra")  # relative, to a folder

    plan = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)["data"]
    assert sorted(plan["outside_links"]) == [f"{repo.commit}/extra", f"{repo.commit}/secret.txt"]
    assert plan["blobs"] == 6  # the targets are not counted as the model's bytes
    assert "points outside the cache" in cli("rm", NAME, "--dry-run").stdout

    data = envelope(cli("rm", NAME, "-f", "--json"), 0)["data"]
    assert sorted(data["outside_links"]) == sorted(plan["outside_links"])
    assert not os.path.lexists(repo.repo_dir)
    assert secret.read_text() == "keep me"
    assert (folder / "data.bin").read_bytes() == b"keep me too"


def test_outside_link_in_a_removed_snapshot_keeps_its_target(cli: Cli, hub: Path, tmp_path: Path) -> None:
    two = TwoRevisions(hub)
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    os.symlink(secret, two.old.snapshot / "secret.txt")
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert data["outside_links"] == [f"{OLD}/secret.txt"] and data["blobs"] == 2
    assert not os.path.lexists(two.old.snapshot)
    assert secret.read_text() == "keep me"
    assert two.blobs() == two.new_blobs


# --- 8. interrupted rm --------------------------------------------------------------------------


def rm_killed_after(step: str, spec: str) -> None:
    env = {**os.environ, "MLXK_TEST_RM_KILL_AFTER": step}
    proc = subprocess.run(
        [sys.executable, "-m", "mlxk", "rm", spec, "-f", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


def cache_still_readable(cli: Cli, hub: Path, commands: tuple[str, ...] = ("list", "health")) -> set[str]:
    for command in commands:
        result = cli(command, "--json")
        assert result.exit_code == 0, (command, result.stdout, result.stderr)
        out = result.json()
        jsonschema.validate(out, SCHEMA, cls=jsonschema.Draft7Validator)
        assert out["status"] == "success"
    return no_scan_warnings(hub)


@pytest.mark.parametrize("step", ["rename", "contents"])
def test_killed_whole_repo_rm(cli: Cli, hub: Path, step: str) -> None:
    repo = healthy_model(hub, NAME)
    other = healthy_model(hub, OTHER)
    other_before = tree(other.repo_dir)
    rm_killed_after(step, NAME)

    assert not os.path.lexists(repo.repo_dir)  # the rename is the commit point: gone for everyone
    assert cache_still_readable(cli, hub) == {OTHER}
    assert listed(cli) == [OTHER]

    rerun = cli("rm", NAME, "-f", "--json")  # the model is gone already
    if rerun.exit_code != 0:
        assert error_type(rerun, 1) == "model_not_found"
    assert not os.path.lexists(repo.repo_dir)
    assert tree(other.repo_dir) == other_before
    assert cache_still_readable(cli, hub) == {OTHER}

    envelope(cli("rm", OTHER, "-f", "--json"), 0)  # any later rm sweeps what the killed one left
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(lock_folder(hub, repo))  # the killed rm's own lock file went too
    assert not os.path.lexists(hub / ".locks")
    assert cache_still_readable(cli, hub) == set()


@pytest.mark.parametrize("step", ["rename", "contents"])
def test_rerun_after_a_killed_whole_repo_rm_removes_its_lock_folder(cli: Cli, hub: Path, step: str) -> None:
    repo = healthy_model(hub, NAME)
    rm_killed_after(step, NAME)
    assert (lock_folder(hub, repo) / "mlxk.lock").exists()  # the killed rm held it
    assert error_type(cli("rm", NAME, "-f", "--json"), 1) == "model_not_found"
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(hub / ".locks")


@pytest.mark.parametrize("step", ["refs", "snapshots", "blobs"])
def test_killed_snapshot_rm(cli: Cli, hub: Path, two: TwoRevisions, step: str) -> None:
    new_before = tree(two.new.snapshot)
    rm_killed_after(step, f"{NAME}@{two.prefix}")

    assert not (two.repo_dir / "refs" / "v1").exists()  # refs go first
    assert (two.repo_dir / "refs" / "main").read_text() == NEW
    assert os.path.lexists(two.old.snapshot) == (step == "refs")
    assert two.new_blobs <= two.blobs()
    # health would finish the job (test_a_killed_snapshot_rm_is_finished_by_the_next_command): not yet
    assert cache_still_readable(cli, hub, ("list",)) == {NAME}
    assert tree(two.new.snapshot) == new_before

    rerun = cli("rm", f"{NAME}@{two.prefix}", "-f", "--json")  # the same command finishes the job
    data = envelope(rerun, 0)["data"]
    assert (data["action"], data["snapshots"], data["kept_snapshots"]) == ("deleted", [OLD], [NEW])
    assert two.blobs() == two.new_blobs
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(hub / ".locks")
    assert error_type(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 1) == "hash_not_found"
    assert not os.path.lexists(two.old.snapshot)
    assert two.new_blobs <= two.blobs()
    assert tree(two.new.snapshot) == new_before
    assert cache_still_readable(cli, hub) == {NAME}
    (cached,) = scan_cache_dir(hub).repos
    assert {r.commit_hash for r in cached.revisions} == {NEW}


@pytest.mark.parametrize(
    ("step", "snapshot"),
    [
        pytest.param("rename", False),
        pytest.param("contents", False),
        pytest.param("refs", True),
        pytest.param("snapshots", True),
        pytest.param("blobs", True),
    ],
)
def test_rerun_after_a_killed_rm_sweeps_the_trash(cli: Cli, hub: Path, step: str, snapshot: bool) -> None:
    spec = f"{NAME}@{TwoRevisions(hub).prefix}" if snapshot else healthy_model(hub, NAME).name
    rm_killed_after(step, spec)
    cli("rm", spec, "-f", "--json")
    assert not os.path.lexists(trash(hub))


def test_rerun_after_a_kill_before_the_blobs_frees_them(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    rm_killed_after("snapshots", f"{NAME}@{two.prefix}")
    assert two.exclusive_old <= two.blobs()  # orphans now: no snapshot links to them
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert data["snapshots"] == [OLD] and data["blobs"] == 2
    assert two.blobs() == two.new_blobs


@pytest.mark.parametrize("finisher", ["health", "rm of another model", "rm of the repo", "dry run"])
def test_a_killed_snapshot_rm_is_finished_by_the_next_command(
    cli: Cli, hub: Path, two: TwoRevisions, finisher: str
) -> None:
    other = healthy_model(hub, OTHER)
    rm_killed_after("snapshots", f"{NAME}@{two.prefix}")
    new_before = tree(two.new.snapshot)
    if finisher == "health":
        health = cli("health", NAME, "--json").json()
        assert [m["name"] for m in health["data"]["healthy"]] == [NAME]
    elif finisher == "rm of another model":
        envelope(cli("rm", OTHER, "-f", "--json"), 0)
    elif finisher == "rm of the repo":
        envelope(cli("rm", NAME, "-f", "--json"), 0)
        assert not os.path.lexists(two.repo_dir)
    else:  # a dry run plans and changes nothing, not even what a killed run left
        envelope(cli("rm", f"{NAME}@{two.prefix}", "--dry-run", "--json"), 0)
        assert two.exclusive_old <= two.blobs()
        return
    if finisher != "rm of the repo":
        assert two.blobs() == two.new_blobs
        assert tree(two.new.snapshot) == new_before
    assert not os.path.lexists(trash(hub))
    assert os.path.lexists(other.repo_dir) is (finisher != "rm of another model")


def test_a_pending_deletion_never_takes_blobs_a_snapshot_uses_again(
    cli: Cli, hub: Path, two: TwoRevisions
) -> None:
    """Between the kill and the next command, a pull links the killed rm's blobs again: they stay."""
    rm_killed_after("snapshots", f"{NAME}@{two.prefix}")
    revived = gen.add_model(
        hub, NAME, {"config.json": gen.llama_config(rope_theta=10000.0)}, commit=NEW[::-1]
    )
    kept = revived.blob_of("config.json").name
    assert kept in two.exclusive_old
    assert cli("health", NAME, "--json").exit_code == 0
    assert two.blobs() == two.new_blobs | {kept}
    assert not os.path.lexists(trash(hub))


def test_a_held_lock_postpones_finishing_a_killed_rm(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    rm_killed_after("snapshots", f"{NAME}@{two.prefix}")
    folder = hub / ".locks" / two.repo_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "mlxk.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a pull of this model is running
        assert cli("health", NAME, "--json").exit_code == 0
        assert two.exclusive_old <= two.blobs()  # not now: the pull may be linking them
    assert cli("health", NAME, "--json").exit_code == 0
    assert two.blobs() == two.new_blobs
    assert not os.path.lexists(trash(hub))


# --- 8b. odd repo folders: decided before anything moves ------------------------------------------


@pytest.mark.parametrize("part", ["snapshots", "blobs", "refs"])
def test_a_file_where_a_folder_belongs_does_not_fail_a_whole_repo_rm(cli: Cli, hub: Path, part: str) -> None:
    repo = healthy_model(hub, NAME)
    target = repo.repo_dir / part
    shutil.rmtree(target)
    target.write_bytes(b"not a folder")
    os.mkfifo(repo.repo_dir / "a-fifo")
    out = envelope(cli("rm", NAME, "-f", "--json"), 0)
    assert out["data"]["action"] == "deleted"
    assert not os.path.lexists(repo.repo_dir)
    assert not os.path.lexists(trash(hub))


# --- 9. bad names -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["../etc", "a/b/c", "org/", "/abs/path", "org/name@xyz"])
def test_invalid_names_are_refused(cli: Cli, hub: Path, spec: str) -> None:
    healthy_model(hub, NAME)
    before = tree(hub.parent)
    assert error_type(cli("rm", spec, "-f", "--json"), 1) == "validation_error"
    assert tree(hub.parent) == before


def test_model_not_in_the_cache(cli: Cli, hub: Path) -> None:
    healthy_model(hub, NAME)
    before = tree(hub)
    assert error_type(cli("rm", "org/absent", "-f", "--json"), 1) == "model_not_found"
    assert error_type(cli("rm", "org/absent", "--dry-run", "--json"), 1) == "model_not_found"
    assert cli("rm", "org/absent", "-f").exit_code == 1
    assert tree(hub) == before
