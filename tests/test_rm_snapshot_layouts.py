"""Removing one snapshot from repos laid out in the other ways huggingface_hub and people leave
them: files copied into the snapshot (no blobs folder), huggingface_hub's per-commit side files
(``trees/<commit>.json``, ``.no_exist/<commit>/``), and a link where a snapshot folder belongs.
Only what belongs to the removed snapshot goes; the other snapshot, and anything outside the
cache, stays as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from huggingface_hub import scan_cache_dir

from benchmarks import cachegen as gen
from tests.conftest import CliResult
from tests.test_rm import NAME, NEW, OLD, SCHEMA, TwoRevisions, envelope, error_type, trash, tree

Cli = Callable[..., CliResult]


@pytest.fixture
def two(hub: Path) -> TwoRevisions:
    return TwoRevisions(hub)


def test_one_snapshot_of_a_copy_mode_repo(cli: Cli, hub: Path) -> None:
    """Files stored in the snapshot itself (symlinks off), no blobs folder at all."""
    old = gen.add_model(
        hub, NAME, {"config.json": b'{"v": 1}', "w.bin": b"1" * 5000}, commit=OLD, ref="v1", links=False
    )
    new = gen.add_model(
        hub, NAME, {"config.json": b'{"v": 2}', "w.bin": b"2" * 7000}, commit=NEW, links=False
    )
    shutil.rmtree(new.repo_dir / "blobs")
    new_before = tree(new.snapshot)

    data = envelope(cli("rm", f"{NAME}@{OLD[:8]}", "-f", "--json"), 0)["data"]
    assert (data["snapshots"], data["kept_snapshots"], data["whole_repo"]) == ([OLD], [NEW], False)
    assert data["freed_bytes"] == 5000 + len(b'{"v": 1}')
    assert not os.path.lexists(old.snapshot) and not (new.repo_dir / "refs" / "v1").exists()
    assert tree(new.snapshot) == new_before
    assert not os.path.lexists(trash(hub))


def test_the_snapshots_side_files_go_with_it(cli: Cli, hub: Path, two: TwoRevisions) -> None:
    repo = two.repo_dir
    (repo / "trees").mkdir()
    (repo / "trees" / f"{NEW}.json").write_text("[]")  # only the kept snapshot has a tree listing
    for commit in (OLD, NEW):
        (repo / ".no_exist" / commit).mkdir(parents=True)
        (repo / ".no_exist" / commit / "generation_config.json").write_bytes(b"")

    envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)
    assert sorted(os.listdir(repo / ".no_exist")) == [NEW]
    assert os.listdir(repo / "trees") == [f"{NEW}.json"]
    assert two.blobs() == two.new_blobs
    (cached,) = scan_cache_dir(hub).repos
    assert {r.commit_hash for r in cached.revisions} == {NEW}

    (repo / "trees" / f"{OLD}.json").write_text("[]")  # the other way round: a listing, no snapshot
    assert error_type(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 1) == "hash_not_found"
    assert (repo / "trees" / f"{OLD}.json").exists()  # not a snapshot: rm names snapshots only


def test_a_link_where_a_snapshot_folder_belongs_goes_alone(
    cli: Cli, hub: Path, two: TwoRevisions, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-snapshot"
    shutil.move(str(two.old.snapshot), outside)
    (outside / "notes.txt").write_bytes(b"keep me")
    os.symlink(outside, two.old.snapshot)
    outside_before = tree(outside)

    envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)
    assert not os.path.lexists(two.old.snapshot)
    assert tree(outside) == outside_before
    assert two.blobs() == two.new_blobs


def test_a_prefix_shared_by_two_snapshots_deletes_nothing(cli: Cli, hub: Path) -> None:
    files = {"config.json": b"{}"}
    first = gen.add_model(hub, NAME, files, commit="abcd" + "1" * 36, ref="v1")
    gen.add_model(hub, NAME, {"config.json": b"[]"}, commit="abcd" + "2" * 36, ref="main")
    gen.add_model(hub, NAME, {"config.json": b"1"}, commit="9" * 40, ref="v0")
    before = tree(hub)
    result = cli("rm", f"{NAME}@abcd", "-f", "--json")
    assert error_type(result, 1) == "ambiguous_match"  # as show and health say it
    out = result.json()
    assert out["error"]["matches"] == out["data"]["matches"] == [f"{NAME}@abcd1111", f"{NAME}@abcd2222"]
    assert out["data"]["action"] == "ambiguous"
    jsonschema.validate(out, SCHEMA, cls=jsonschema.Draft7Validator)
    assert cli("show", f"{NAME}@abcd", "--json").json()["error"]["type"] == "ambiguous_match"
    assert tree(hub) == before
    envelope(cli("rm", f"{NAME}@abcd1", "-f", "--json"), 0)  # more of the hash: one snapshot
    assert not os.path.lexists(first.snapshot)


def test_a_ref_that_is_a_link_is_never_read_or_followed(
    cli: Cli, hub: Path, two: TwoRevisions, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-ref"
    outside.write_text(OLD)  # says OLD, but through a link: not a ref of this cache
    (two.repo_dir / "refs" / "v1").unlink()
    os.symlink(outside, two.repo_dir / "refs" / "v1")
    os.mkfifo(two.old.snapshot / "a-fifo")  # neither a file nor a link: counts for nothing, goes
    data = envelope(cli("rm", f"{NAME}@{two.prefix}", "--dry-run", "--json"), 0)["data"]
    assert data["refs"] == []
    envelope(cli("rm", f"{NAME}@{two.prefix}", "-f", "--json"), 0)
    assert outside.read_text() == OLD
    assert not os.path.lexists(two.old.snapshot)
    assert two.blobs() == two.new_blobs
