"""rm and links: nothing outside the hub folder is ever deleted, whatever the cache's folders point to.

Each layout below puts a folder of the repo (``snapshots/``, ``blobs/``, ``refs/``, ``trees/``,
``.no_exist/``) somewhere outside the cache, behind a symlink, next to files that were never part of
the model: some named like blobs (checksums), some not. The outside folder is fingerprinted (every
entry, with the sha256 of every file) before and after; the two must be equal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.test_rm import NAME, OLD, TwoRevisions, envelope, trash, tree

Cli = Callable[..., CliResult]

BLOB_NAMED = "ab" * 32  # a sha256-shaped name: what an orphan blob looks like
THESIS = b"four years of work"


def fingerprint(root: Path) -> dict[str, str]:
    """Every entry under ``root``, links not followed: folders, link texts, and file content hashes."""
    seen: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for entry in [*dirs, *files]:
            path = os.path.join(folder, entry)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = "dir"
            else:
                seen[rel] = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


def move_out(two: TwoRevisions, folder: str, outside: Path) -> Path:
    """Moves the repo's ``folder`` to ``outside`` and leaves a symlink in its place."""
    real = outside / f"{folder.strip('.')}-real"
    source = two.repo_dir / folder
    if source.exists():
        shutil.move(str(source), str(real))
    else:
        real.mkdir()
    os.symlink(real, source)
    return real


def snapshots_outside(two: TwoRevisions, outside: Path) -> None:
    real = move_out(two, "snapshots", outside)
    (real / OLD / "never-part-of-the-model.txt").write_bytes(THESIS)


def blobs_outside(two: TwoRevisions, outside: Path) -> None:
    real = move_out(two, "blobs", outside)
    (real / "thesis.txt").write_bytes(THESIS)
    (real / BLOB_NAMED).write_bytes(THESIS)


def refs_outside(two: TwoRevisions, outside: Path) -> None:
    real = move_out(two, "refs", outside)
    (real / "other-project").write_text(OLD)


def trees_outside(two: TwoRevisions, outside: Path) -> None:
    real = move_out(two, "trees", outside)
    (real / f"{OLD}.json").write_bytes(THESIS)


def no_exist_outside(two: TwoRevisions, outside: Path) -> None:
    real = move_out(two, ".no_exist", outside)
    (real / OLD).mkdir()
    (real / OLD / "notes.txt").write_bytes(THESIS)


LAYOUTS = {
    "snapshots": snapshots_outside,
    "blobs": blobs_outside,
    "refs": refs_outside,
    "trees": trees_outside,
    ".no_exist": no_exist_outside,
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "unrelated.txt").write_bytes(THESIS)
    (folder / ("cd" * 20)).write_bytes(THESIS)  # sha1-shaped, and outside
    return folder


@pytest.mark.parametrize("folder", list(LAYOUTS))
def test_one_snapshot_rm_refuses_a_linked_folder_and_touches_nothing(
    cli: Cli, hub: Path, outside: Path, folder: str
) -> None:
    two = TwoRevisions(hub)
    LAYOUTS[folder](two, outside)
    outside_before, hub_before = fingerprint(outside), tree(hub)

    for args in (("--dry-run",), ("-f",)):
        out = envelope(cli("rm", f"{NAME}@{two.prefix}", *args, "--json"), 3)
        assert out["error"]["type"] == "deletion_failed", args
        assert str(two.repo_dir / folder) in out["error"]["message"]  # the link is named
        assert "symbolic link" in out["error"]["message"]

    assert fingerprint(outside) == outside_before
    assert tree(hub) == hub_before
    assert not os.path.lexists(trash(hub))


@pytest.mark.parametrize("folder", list(LAYOUTS))
def test_whole_repo_rm_unlinks_a_linked_folder_and_keeps_its_target(
    cli: Cli, hub: Path, outside: Path, folder: str
) -> None:
    two = TwoRevisions(hub)
    LAYOUTS[folder](two, outside)
    outside_before = fingerprint(outside)

    plan = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)["data"]
    assert folder in plan["outside_links"]  # reported, never read through
    data = envelope(cli("rm", NAME, "-f", "--json"), 0)["data"]
    assert data["whole_repo"] is True

    assert not os.path.lexists(two.repo_dir)
    assert fingerprint(outside) == outside_before
    assert not os.path.lexists(trash(hub))


def test_linked_blobs_bytes_are_not_counted_as_freed(cli: Cli, hub: Path, outside: Path) -> None:
    two = TwoRevisions(hub)
    blobs_outside(two, outside)
    plan = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)["data"]
    assert (plan["blobs"], plan["freed_bytes"]) == (0, 0)


def test_only_files_named_like_blobs_are_freed_as_orphans(cli: Cli, hub: Path) -> None:
    two = TwoRevisions(hub)
    blobs = two.repo_dir / "blobs"
    (blobs / "thesis.txt").write_bytes(THESIS)  # no snapshot names it, and it is no blob
    (blobs / "notes").mkdir()
    (blobs / ("12" * 32)).mkdir()  # named like a blob, but a folder: not a blob either
    (blobs / ("ef" * 32)).write_bytes(THESIS)  # an orphan blob a killed rm could have left
    plan = envelope(cli("rm", f"{NAME}@{two.prefix}", "--dry-run", "--json"), 0)["data"]
    assert plan["blobs"] == 3

    envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)
    assert (blobs / "thesis.txt").read_bytes() == THESIS
    assert (blobs / "notes").is_dir()
    assert two.blobs() == two.new_blobs | {"thesis.txt", "notes", "12" * 32}


def test_a_snapshot_link_to_an_outside_blob_named_file_keeps_its_target(
    cli: Cli, hub: Path, outside: Path
) -> None:
    two = TwoRevisions(hub)
    target = outside / BLOB_NAMED
    target.write_bytes(THESIS)
    os.symlink(target, two.old.snapshot / "weights.bin")  # absolute, into a folder named nothing special
    os.symlink(os.path.relpath(outside / ("cd" * 20), two.old.snapshot), two.old.snapshot / "rel.bin")
    outside_before = fingerprint(outside)

    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)["data"]
    assert sorted(data["outside_links"]) == [f"{OLD}/rel.bin", f"{OLD}/weights.bin"]
    assert fingerprint(outside) == outside_before
    assert two.blobs() == two.new_blobs


def test_a_folder_turned_into_a_link_after_the_plan_is_refused(hub: Path, outside: Path) -> None:
    """The tree can change between the plan (and its prompt) and the deletion: checked again."""
    from mlxk.cache.scan import CacheLocation
    from mlxk.errors import DeletionFailed
    from mlxk.ops.rm import plan_removal, remove

    two = TwoRevisions(hub)
    removal = plan_removal(CacheLocation(str(hub), None), f"{NAME}@{two.prefix}")
    real = outside / "blobs-real"
    shutil.copytree(two.repo_dir / "blobs", real, symlinks=True)
    shutil.rmtree(two.repo_dir / "blobs")
    os.symlink(real, two.repo_dir / "blobs")  # same names, now outside
    outside_before = fingerprint(outside)

    with pytest.raises(DeletionFailed, match="symbolic link"):
        remove(removal, force=True)
    assert fingerprint(outside) == outside_before
    assert (two.repo_dir / "refs" / "v1").read_text() == OLD  # not even the refs went
