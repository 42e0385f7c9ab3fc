"""The trash of rm (mlxk.cache.trash, mlxk.cache.delete_run): entries left by runs that were killed,
entries of runs still alive, and entries someone else put there.

A killed run's state is built here with the same functions rm uses (``make_entry``,
``write_journal``), at points the kill hooks of tests/test_rm.py do not reach: right after the
journal is written, before anything else. Entries mlxk did not write (a journal that is not JSON,
names a path outside the repo, is a link) are never acted on, whatever they say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlxk.cache.nofollow import Folder
from mlxk.cache.trash import Journal, list_entries, make_entry, parse_entry, pending_journals, write_journal
from tests.cachefix import healthy_model
from tests.conftest import CliResult
from tests.test_rm import NAME, NEW, OLD, OTHER, TwoRevisions, envelope, error_type, trash, tree

Cli = Callable[..., CliResult]
SECRET = b"four years of work"


@pytest.fixture
def two(hub: Path) -> TwoRevisions:
    return TwoRevisions(hub)


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that runs until the test ends (an rm still at work, as far as the trash knows)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc.pid
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()


def journal_of_old(two: TwoRevisions) -> Journal:
    return Journal(two.repo_dir.name, (OLD,), tuple(sorted(two.exclusive_old)))


def entry_with_journal(hub: Path, journal: Journal) -> str:
    """A snapshot entry as rm leaves it when killed right after writing its journal (this process's pid)."""
    with Folder.open_root(str(hub)) as root:  # type: ignore[union-attr]
        entry, name = make_entry(root, "snapshot")
        with entry:
            write_journal(entry, journal)
    return name


def foreign_entry(hub: Path, name: str, journal: bytes | None = None) -> Path:
    folder = trash(hub) / name
    folder.mkdir(parents=True)
    if journal is not None:
        (folder / "journal.json").write_bytes(journal)
    return folder


def old_untouched(two: TwoRevisions) -> bool:
    return (
        (two.repo_dir / "refs" / "v1").read_text() == OLD
        and (two.repo_dir / "snapshots" / OLD).is_dir()
        and two.exclusive_old <= two.blobs()
    )


def test_a_kill_right_after_the_journal_is_finished_by_health(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    new_before = tree(two.new.snapshot)
    entry_with_journal(hub, journal_of_old(two))
    assert pending_journals(str(hub), two.repo_dir.name) == [journal_of_old(two)]
    assert pending_journals(str(hub), "models--org--elsewhere") == []

    health = cli("health", NAME, "--json")
    assert health.exit_code == 0, health.stdout
    assert not (two.repo_dir / "refs" / "v1").exists()
    assert not (two.repo_dir / "snapshots" / OLD).exists()
    assert two.blobs() == two.new_blobs
    assert tree(two.new.snapshot) == new_before
    assert not os.path.lexists(trash(hub))


def test_a_kill_right_after_the_journal_is_finished_by_the_same_rm(
    cli: Cli, hub: Path, two: TwoRevisions
) -> None:
    entry_with_journal(hub, journal_of_old(two))
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert (data["snapshots"], data["kept_snapshots"], data["blobs"]) == ([OLD], [NEW], 2)
    assert two.blobs() == two.new_blobs
    assert not os.path.lexists(trash(hub))


def test_a_journal_of_a_repo_that_is_gone_is_dropped(cli: Cli, hub: Path, dead_pid: int) -> None:
    gone = Journal("models--org--gone", (OLD,), ("ab" * 32,))
    body = json.dumps({"repo": gone.repo, "commits": list(gone.commits), "blobs": list(gone.blobs)})
    folder = foreign_entry(hub, f"snapshot.{dead_pid}.00000000", body.encode())
    healthy_model(hub, OTHER)
    envelope(cli("rm", OTHER, "-f", "--json"), 0)
    assert not os.path.lexists(folder)
    assert not os.path.lexists(hub / ".locks")


def test_a_journal_whose_repo_became_a_file_is_dropped(cli: Cli, hub: Path, dead_pid: int) -> None:
    """health finds a stray file named like the repo a killed snapshot removal journaled: there is no
    snapshot left to remove; the journal goes and the file is left as it is."""
    stray = hub / "models--org--stray"
    stray.write_bytes(b"a file where a repo was")
    body = {"repo": stray.name, "commits": [OLD], "blobs": ["ab" * 32]}
    folder = foreign_entry(hub, f"snapshot.{dead_pid}.00000000", json.dumps(body).encode())
    result = cli("health", "--json")
    assert result.exit_code == 0, result.stdout
    assert not os.path.lexists(folder) and not os.path.lexists(trash(hub))
    assert stray.read_bytes() == b"a file where a repo was"


BAD_JOURNALS = {
    "not json": b"{",
    "not an object": b"[1, 2]",
    "no blobs key": json.dumps({"repo": "REPO", "commits": [OLD]}).encode(),
    "repo outside the hub": json.dumps({"repo": "../outside", "commits": [OLD], "blobs": []}).encode(),
    "repo not a model": json.dumps({"repo": "datasets--x--y", "commits": [OLD], "blobs": []}).encode(),
    "commit climbing out": json.dumps(
        {"repo": "REPO", "commits": ["../../../outside"], "blobs": []}
    ).encode(),
    "commit with a slash": json.dumps({"repo": "REPO", "commits": [f"{OLD}/x"], "blobs": []}).encode(),
    "commits not a list": json.dumps({"repo": "REPO", "commits": OLD, "blobs": []}).encode(),
    "blob not a checksum": json.dumps({"repo": "REPO", "commits": [OLD], "blobs": ["thesis.txt"]}).encode(),
    "blob a number": json.dumps({"repo": "REPO", "commits": [OLD], "blobs": [7]}).encode(),
}


@pytest.mark.parametrize("kind", [*BAD_JOURNALS, "journal is a link", "no journal"])
def test_a_journal_that_is_not_ours_is_never_acted_on(
    cli: Cli, hub: Path, two: TwoRevisions, tmp_path: Path, dead_pid: int, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.txt").write_bytes(SECRET)
    folder = foreign_entry(hub, f"snapshot.{dead_pid}.abcd1234")
    if kind == "journal is a link":  # a valid journal, reached through a link: not read
        (outside / "journal.json").write_text(
            json.dumps({"repo": two.repo_dir.name, "commits": [OLD], "blobs": sorted(two.exclusive_old)})
        )
        os.symlink(outside / "journal.json", folder / "journal.json")
    elif kind != "no journal":
        (folder / "journal.json").write_bytes(BAD_JOURNALS[kind].replace(b"REPO", two.repo_dir.name.encode()))
    outside_before = tree(outside)

    # health finishes known removals of the repos it reads; an entry it cannot read is not its business
    assert cli("health", NAME, "--json").exit_code == 0
    assert os.path.lexists(folder)
    assert pending_journals(str(hub), two.repo_dir.name) == []
    # rm sweeps the trash: the entry goes, unread
    healthy_model(hub, OTHER)
    envelope(cli("rm", OTHER, "-f", "--json"), 0)
    assert not os.path.lexists(trash(hub))
    assert old_untouched(two)
    assert tree(outside) == outside_before


def test_entries_of_a_live_rm_are_left_alone_until_it_is_gone(
    cli: Cli, hub: Path, two: TwoRevisions, live_pid: int
) -> None:
    body = json.dumps({"repo": two.repo_dir.name, "commits": [OLD], "blobs": sorted(two.exclusive_old)})
    snapshot_entry = foreign_entry(hub, f"snapshot.{live_pid}.abcd1234", body.encode())
    repo_entry = foreign_entry(hub, f"models--org--going.{live_pid}.abcd1234")
    (repo_entry / "blobs").mkdir()
    healthy_model(hub, OTHER)

    assert pending_journals(str(hub), two.repo_dir.name) == []  # its owner may still be at it
    assert cli("health", NAME, "--json").exit_code == 0
    envelope(cli("rm", OTHER, "-f", "--json"), 0)  # sweeps, but not a live process's entries
    assert os.path.isdir(snapshot_entry) and os.path.isdir(repo_entry / "blobs")
    assert old_untouched(two)
    assert sorted(e.name for e in list_entries(str(hub))) == sorted([snapshot_entry.name, repo_entry.name])


def test_entries_of_another_user_count_as_alive(hub: Path) -> None:
    """pid 1 always runs; as root kill(1, 0) succeeds, as anyone else it fails with EPERM: alive both ways."""
    assert parse_entry("snapshot.1.abcd1234").owner_alive()
    assert parse_entry(f"snapshot.{os.getpid()}.abcd1234").owner_alive() is False  # our own: a past run
    assert parse_entry("leftover").owner_alive() is False
    assert parse_entry("leftover").pid is None and parse_entry("leftover").repo is None
    assert parse_entry("models--a--b.12.cafe").repo == "models--a--b"
    assert parse_entry("other.12.cafe").repo is None


def test_a_whole_repo_entry_is_swept_by_rm_only(
    cli: Cli, hub: Path, two: TwoRevisions, dead_pid: int
) -> None:
    """A whole repo's rm killed after its rename: health leaves the entry (not one of its repos), rm
    removes it with the lock files of the repo it was, which is gone."""
    gone = "models--org--gone"
    entry = foreign_entry(hub, f"{gone}.{dead_pid}.abcd1234")
    (entry / "blobs").mkdir()
    (entry / "blobs" / ("ab" * 32)).write_bytes(b"weights")
    strange = foreign_entry(hub, "not-an-entry-name")
    locks = hub / ".locks" / gone
    locks.mkdir()
    (locks / f"{'ab' * 32}.lock").write_bytes(b"")

    assert cli("health", NAME, "--json").exit_code == 0
    assert os.path.isdir(entry) and os.path.isdir(strange)
    assert error_type(cli("rm", "org/gone", "-f", "--json"), 1) == "model_not_found"
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(locks)
    assert old_untouched(two)


def test_a_trash_folder_that_is_a_link_is_refused(cli: Cli, hub: Path, tmp_path: Path, dead_pid: int) -> None:
    outside = tmp_path / "outside"
    lure = outside / f"snapshot.{dead_pid}.abcd1234"
    lure.mkdir(parents=True)
    (lure / "thesis.txt").write_bytes(SECRET)
    (hub / ".locks").mkdir()
    os.symlink(outside, trash(hub))
    repo = healthy_model(hub, NAME)
    outside_before, repo_before = tree(outside), tree(repo.repo_dir)

    assert list_entries(str(hub)) == []  # nothing behind a link is ours
    result = cli("rm", NAME, "-f", "--json")
    assert error_type(result, 3) == "deletion_failed"
    assert str(trash(hub)) in result.json()["error"]["message"]
    assert tree(outside) == outside_before
    assert tree(repo.repo_dir) == repo_before
    assert os.path.islink(trash(hub))
