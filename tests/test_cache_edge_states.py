"""rm's trash and journals, and ``health --deep``, on cache states the other tests do not build: a repo
without ``refs/`` or ``snapshots/``, a file where a trash entry folder belongs, a journaled repo that is
now a link, a whole repo's lock folder that is a link, a file gone between the scan and the hashing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import cachegen as gen
from mlxk.cache.scan import CacheLocation, scan_records
from mlxk.ops.deep import DeepOptions, verify_content
from tests.cachefix import healthy_model
from tests.conftest import CliResult
from tests.test_deep_edges import _copies, _listing
from tests.test_rm import NAME, NEW, OLD, OTHER, TwoRevisions, envelope, error_type, trash, tree

Cli = Callable[..., CliResult]
SECRET = b"four years of work"


@pytest.fixture
def two(hub: Path) -> TwoRevisions:
    return TwoRevisions(hub)


def journal_entry(hub: Path, pid: int, repo: str, commits: list[str], blobs: list[str]) -> Path:
    """A snapshot entry as an rm killed right after writing its journal leaves it."""
    folder = trash(hub) / f"snapshot.{pid}.abcd1234"
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text(json.dumps({"repo": repo, "commits": commits, "blobs": blobs}))
    return folder


# --- mlxk/cache/delete_run.py -----------------------------------------------------------------------


def test_one_snapshot_of_a_repo_without_refs_is_removed(cli: Cli, two: TwoRevisions) -> None:
    """A repo whose refs folder is gone (refs are optional): rm of one snapshot removes it and its own
    blobs, and the other snapshot stays whole."""
    shutil.rmtree(two.repo_dir / "refs")
    new_before = tree(two.new.snapshot)
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert (data["snapshots"], data["kept_snapshots"], data["blobs"]) == ([OLD], [NEW], 2)
    assert not (two.repo_dir / "snapshots" / OLD).exists()
    assert two.blobs() == two.new_blobs
    assert tree(two.new.snapshot) == new_before
    assert not (two.repo_dir / "refs").exists()


def test_a_journal_whose_repo_lost_its_snapshots_folder_is_finished(
    cli: Cli, hub: Path, two: TwoRevisions, dead_pid: int
) -> None:
    """A killed snapshot removal, and the repo's whole snapshots folder removed since by hand: health
    still frees the journaled blobs and the journaled snapshot's ref, and drops the journal."""
    journal_entry(hub, dead_pid, two.repo_dir.name, [OLD], sorted(two.exclusive_old))
    shutil.rmtree(two.repo_dir / "snapshots")
    health = cli("health", NAME, "--json")
    assert health.exit_code == 0, health.stdout
    unhealthy = health.json()["data"]["unhealthy"]
    assert [m["reason"] for m in unhealthy] == [f"refs/main points to snapshot {NEW[:8]}, which is missing"]
    assert two.blobs() == two.new_blobs  # only the journaled blobs went
    assert not (two.repo_dir / "refs" / "v1").exists()
    assert (two.repo_dir / "refs" / "main").read_text() == NEW
    assert not os.path.lexists(trash(hub))


def test_a_file_named_like_a_snapshot_entry_is_swept_by_rm_only(
    cli: Cli, hub: Path, two: TwoRevisions, dead_pid: int
) -> None:
    """A plain file where a snapshot entry folder belongs holds no journal: health (which finishes only
    its repos' journals) leaves it, rm's sweep removes it."""
    trash(hub).mkdir(parents=True)
    stray = trash(hub) / f"snapshot.{dead_pid}.abcd1234"
    stray.write_bytes(b"not a folder")
    assert cli("health", NAME, "--json").exit_code == 0
    assert stray.read_bytes() == b"not a folder"
    healthy_model(hub, OTHER)
    envelope(cli("rm", OTHER, "-f", "--json"), 0)
    assert not os.path.lexists(trash(hub))
    assert (two.repo_dir / "snapshots" / OLD).is_dir() and two.exclusive_old <= two.blobs()


def test_a_swept_whole_repo_entry_removes_nothing_through_a_linked_lock_folder(
    cli: Cli, hub: Path, two: TwoRevisions, tmp_path: Path, dead_pid: int
) -> None:
    """A whole repo's rm killed after its rename, and the repo's lock folder is now a link: the sweep
    removes the entry and leaves the link and what it leads to alone."""
    gone = "models--org--gone"
    entry = trash(hub) / f"{gone}.{dead_pid}.abcd1234"
    (entry / "blobs").mkdir(parents=True)
    (entry / "blobs" / ("ab" * 32)).write_bytes(b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{'ab' * 32}.lock").write_bytes(SECRET)
    (outside / "thesis.txt").write_bytes(SECRET)
    os.symlink(outside, hub / ".locks" / gone)
    outside_before = tree(outside)

    assert error_type(cli("rm", "org/gone", "-f", "--json"), 1) == "model_not_found"
    assert not os.path.lexists(entry)
    assert os.path.islink(hub / ".locks" / gone)
    assert tree(outside) == outside_before
    assert (two.repo_dir / "snapshots" / OLD).is_dir()


# --- mlxk/cache/delete_plan.py (plan_pending) ------------------------------------------------------


def test_a_journal_whose_repo_became_a_link_is_kept_and_nothing_is_followed(
    cli: Cli, hub: Path, two: TwoRevisions, tmp_path: Path, dead_pid: int
) -> None:
    """The repo a killed snapshot removal journaled is now a link (to a copy elsewhere): neither health
    nor rm's sweep deletes anything through it, and the journal stays, unfinished."""
    outside = tmp_path / "outside" / two.repo_dir.name
    outside.parent.mkdir()
    shutil.move(two.repo_dir, outside)
    os.symlink(outside, two.repo_dir)
    folder = journal_entry(hub, dead_pid, two.repo_dir.name, [OLD], sorted(two.exclusive_old))
    outside_before = tree(outside)

    cli("health", "--json")
    healthy_model(hub, OTHER)
    envelope(cli("rm", OTHER, "-f", "--json"), 0)
    assert tree(outside) == outside_before
    assert os.path.islink(two.repo_dir)
    assert os.path.isfile(folder / "journal.json")


# --- mlxk/ops/deep.py ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("core")
def test_a_copied_file_gone_between_the_scan_and_the_hashing_is_reported(hub: Path) -> None:
    """health --deep hashes the files its scan found; one removed meanwhile is reported as unreadable
    (the scan and the verification are called one after the other here, the file removed between)."""
    files = gen.mlx_chat_model_files(tensors=12)
    repo = _copies(hub, _listing(files))
    location = CacheLocation(str(hub), None)
    records = scan_records(location)
    (repo.snapshot / "config.json").unlink()
    findings = verify_content(location, records, {repo.repo_dir.name: repo.commit}, DeepOptions(jobs=1))
    assert findings.problems == {
        repo.repo_dir.name: "config.json: cannot be read (No such file or directory)"
    }
    assert findings.files_hashed == len([f for f in files if isinstance(files[f], bytes)]) - 1


# --- mlxk/cache/nofollow.py ---------------------------------------------------------------------------

_OUT_OF_DESCRIPTORS = """
import errno, os, resource, sys
from mlxk.cache.nofollow import Folder
root = Folder.open_root(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError as exc:
    assert exc.errno == errno.EMFILE
try:
    found = root.child("sub")
except OSError as exc:
    print("raised", errno.errorcode[exc.errno])
else:
    print("returned", found)
finally:
    for fd in held:  # gives the descriptors back, so coverage can write this child's data at exit
        os.close(fd)
"""


def test_a_folder_that_cannot_be_opened_for_want_of_descriptors_is_an_error_not_missing(
    tmp_path: Path,
) -> None:
    """Folder.child says None only for what is missing or not a folder; any other refusal (here no file
    descriptor left, EMFILE) reaches the caller, so rm and the sweep never take a real folder for absent."""
    (tmp_path / "sub").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "raised EMFILE"
