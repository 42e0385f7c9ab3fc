"""Races with another process in ``mlxk/cache``: the arms for the file tree changing between two of
our system calls (a blob removed between the listing of ``blobs/`` and its lstat, the trash folder
removed by a concurrent sweep between our mkdir and rename, a folder swapped for a link between its
lstat and its open, ...).

A real race cannot be staged deterministically, so in each test the other process is a named
stand-in: the one call at which the race happens (an ``os`` function, or one of the module's own
helpers) is wrapped so that, right at that call, it first does what the other process would do, for
real on disk, and then runs the real call (or, for a race that follows a call, runs it and then acts).
Each test checks what a user sees: rm finishes and reports the right thing, or fails with a clear
error having deleted nothing; the cache is left consistent; nothing outside the cache is touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mlxk.core
from benchmarks import cachegen as gen
from mlxk.cache import delete_plan
from mlxk.cache.delete_plan import check_repo_folder as check_repo_folder_real
from mlxk.cache.delete_run import sweep_trash
from mlxk.cache.leftovers import Cleaned, clean_stale_leftovers
from mlxk.cache.locks import lock_is_held as lock_is_held_real
from mlxk.cache.nofollow import Folder
from mlxk.cache.nofollow import opened as opened_real
from mlxk.cache.scan import CacheLocation, scan_records
from mlxk.cache.trash import TRASH
from mlxk.cache.trash import list_entries as list_entries_real
from mlxk.cache.trash import open_trash as open_trash_real
from mlxk.cache.trash import write_journal as write_journal_real
from mlxk.core import twin
from mlxk.errors import DeletionFailed
from mlxk.ops.deep import DeepOptions, verify_content
from mlxk.ops.rm import plan_removal, remove
from tests.cachefix import healthy_model, replace_blob
from tests.test_rm import NAME, NEW, OLD, TwoRevisions, no_scan_warnings, trash, tree

SECRET = b"four years of work"


@pytest.fixture
def two(hub: Path) -> TwoRevisions:
    return TwoRevisions(hub)


def rm(hub: Path, spec: str) -> int:
    """``mlxk rm SPEC`` once confirmed, in-process: the plan, then the removal; the lock files cleaned."""
    return remove(plan_removal(CacheLocation(str(hub), None), spec), force=False)


def stale_lock(hub: Path, dirname: str, rel: str = "download.lock") -> Path:
    """A lock file a dead downloader left (nobody holds it)."""
    path = hub / ".locks" / dirname / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def nothing_left_behind(hub: Path) -> bool:
    """No repo folder, no trash, no lock folder: rm of the only model leaves an empty hub."""
    return sorted(os.listdir(hub)) == []


def old_untouched(two: TwoRevisions) -> bool:
    return (
        (two.repo_dir / "refs" / "v1").read_text() == OLD
        and (two.repo_dir / "snapshots" / OLD).is_dir()
        and two.exclusive_old <= two.blobs()
    )


def only_new_left(two: TwoRevisions) -> bool:
    """One snapshot's rm finished: OLD, its ref and its own blobs gone, NEW whole, no trash."""
    return (
        sorted(os.listdir(two.repo_dir / "snapshots")) == [NEW]
        and sorted(os.listdir(two.repo_dir / "refs")) == ["main"]
        and two.blobs() == two.new_blobs
        and not os.path.lexists(trash(two.repo_dir.parent))
    )


# --- mlxk/cache/content.py ------------------------------------------------------------------------


def test_a_snapshot_link_removed_during_the_scan_leaves_its_blob_checked_by_its_own_name(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the snapshot link ``config.json`` is removed between the scan's lstat (a link) and its
    readlink, so the scan records a link with an empty target. Stand-in: ``os.readlink`` removes that
    link first. health --deep still hashes every blob and reports the damaged one by its blob name,
    since no snapshot file names it any more."""
    monkeypatch.setattr(mlxk.core, "impl", twin)  # the scan this module reads (its twin is Python)
    files = gen.mlx_chat_model_files(tensors=12)
    repo = gen.add_model(hub, NAME, files, real_hash=True)
    blob = repo.blob_of("config.json")
    replace_blob(repo, "config.json", b'{"model_type": "damaged"}')
    blobs = os.listdir(repo.repo_dir / "blobs")
    link = repo.snapshot / "config.json"
    real_readlink = os.readlink

    def readlink(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == str(link) and os.path.islink(link):
            os.unlink(link)  # the other process
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", readlink)
    location = CacheLocation(str(hub), None)
    records = scan_records(location)
    [entry] = [f for f in records[0].snapshots[0].files if f.path == "config.json"]
    assert (entry.is_link, entry.target) == (True, "")
    findings = verify_content(location, records, {repo.repo_dir.name: repo.commit}, DeepOptions(jobs=1))
    assert findings.files_hashed == len(blobs)
    problem = findings.problems[repo.repo_dir.name]
    assert problem.startswith(f"blobs/{blob.name}: "), problem


# --- mlxk/cache/delete_plan.py ----------------------------------------------------------------------


def test_a_repo_folder_swapped_for_a_link_while_rm_checks_it_is_refused(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the repo folder is swapped for a link to a folder outside the cache between
    ``check_repo_folder``'s lstat (a real folder) and its realpath. Stand-in: ``os.path.realpath``
    makes the swap first. rm refuses with a clear error and nothing outside the cache is touched."""
    repo = healthy_model(hub)
    outside = tmp_path / "outside"
    real_realpath = os.path.realpath

    def realpath(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == str(repo.repo_dir) and not os.path.islink(path):
            os.rename(repo.repo_dir, outside)  # the other process
            os.symlink(outside, repo.repo_dir)
        return real_realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", realpath)
    with pytest.raises(DeletionFailed, match="resolves outside the cache folder; refusing to delete it"):
        rm(hub, NAME)
    assert os.readlink(repo.repo_dir) == str(outside)
    assert (outside / "snapshots" / repo.commit / "config.json").read_bytes() == gen.llama_config()
    assert len(os.listdir(outside / "blobs")) == len(os.listdir(outside / "snapshots" / repo.commit))


def test_a_blob_removed_while_rm_plans_is_left_out_of_the_plan(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a blob is removed between the plan's listing of ``blobs/`` and its lstat. Stand-in:
    ``delete_plan._lstat`` removes that blob first. The plan names neither it nor its bytes, and rm
    still removes the whole model."""
    repo = healthy_model(hub)
    victim = repo.blob_of("config.json")
    sizes = {p.name: p.stat().st_size for p in (repo.repo_dir / "blobs").iterdir()}
    real_lstat = delete_plan._lstat

    def lstat(path: str) -> os.stat_result | None:
        if os.path.basename(path) == victim.name and os.path.lexists(path):
            os.unlink(path)  # the other process
        return real_lstat(path)

    monkeypatch.setattr(delete_plan, "_lstat", lstat)
    removal = plan_removal(CacheLocation(str(hub), None), NAME)
    assert victim.name not in removal.plan.blobs
    assert sorted(removal.plan.blobs) == sorted(set(sizes) - {victim.name})
    assert removal.plan.freed_bytes == sum(sizes.values()) - sizes[victim.name]
    assert remove(removal, force=False) == 0
    assert nothing_left_behind(hub)


# --- mlxk/cache/delete_run.py: a whole repo -------------------------------------------------------------


def test_a_cache_folder_moved_away_before_rm_opens_it_fails_clearly_and_deletes_nothing(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the whole hub folder is moved away between ``execute_delete``'s check of the repo folder
    and its open of the hub. Stand-in: ``delete_run.check_repo_folder`` runs, then moves the hub. rm
    says the cache folder does not exist, and the moved cache still holds the whole model."""
    repo = healthy_model(hub)
    before = tree(repo.repo_dir)
    moved = tmp_path / "moved"
    real_check = check_repo_folder_real

    def check_repo_folder(hub_root: str, dirname: str) -> str:
        path = real_check(hub_root, dirname)
        os.rename(hub, moved)  # the other process
        return path

    monkeypatch.setattr("mlxk.cache.delete_run.check_repo_folder", check_repo_folder)
    with pytest.raises(DeletionFailed, match=f"the cache folder {hub} does not exist"):
        rm(hub, NAME)
    assert tree(moved / repo.repo_dir.name) == before
    assert not os.path.lexists(moved / ".locks" / TRASH)


def test_a_cache_folder_moved_away_during_the_sweep_after_rm_does_not_fail_rm(
    hub: Path, tmp_path: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: after rm renamed the repo into the trash and removed it (its commit point: after that
    rename nothing can fail the command), the sweep that follows lists a dead rm's leftover entry,
    and the whole hub folder is moved away before the sweep opens it. Stand-in:
    ``delete_run.list_entries`` lists, then moves the hub. rm reports success (the model is gone);
    it used to fail with deletion_failed "the cache folder ... does not exist"."""
    repo = healthy_model(hub)
    (trash(hub) / f"models--org--gone.{dead_pid}.abcd1234").mkdir(parents=True)
    moved = tmp_path / "moved"

    def list_entries(hub_root: str) -> Any:
        entries = list_entries_real(hub_root)
        os.rename(hub, moved)  # the other process
        return entries

    monkeypatch.setattr("mlxk.cache.delete_run.list_entries", list_entries)
    assert rm(hub, NAME) == 0
    assert not os.path.lexists(moved / repo.repo_dir.name)


def test_a_repo_removed_by_another_process_before_rm_reaches_it_still_cleans_its_locks(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the repo folder is removed between ``execute_delete``'s check of it and the lstat that
    picks how it goes. Stand-in: ``delete_run.check_repo_folder`` runs, then removes the repo. rm
    finishes without error: the model is gone, and its stale lock file and lock folder go too."""
    repo = healthy_model(hub)
    stale_lock(hub, repo.repo_dir.name)
    real_check = check_repo_folder_real

    def check_repo_folder(hub_root: str, dirname: str) -> str:
        path = real_check(hub_root, dirname)
        shutil.rmtree(path)  # the other process
        return path

    monkeypatch.setattr("mlxk.cache.delete_run.check_repo_folder", check_repo_folder)
    assert rm(hub, NAME) == 1
    assert nothing_left_behind(hub)


@pytest.mark.parametrize("times", [1, 99])
def test_rm_makes_the_trash_again_when_a_concurrent_sweep_removes_it_before_the_rename(
    hub: Path, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """Race: a concurrent sweep removes the empty trash folder between its creation and the rename of
    the repo into it. Stand-in: ``os.rename`` of the repo removes the trash folder first, ``times``
    times in a row. rm makes it again each time, and finishes."""
    repo = healthy_model(hub)
    calls: list[str] = []
    real_rename = os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if src == repo.repo_dir.name and len(calls) < times:
            calls.append(src)
            os.rmdir(trash(hub))  # the other process
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    assert rm(hub, NAME) == 0
    assert len(calls) == times
    assert nothing_left_behind(hub)


def test_rm_gives_up_clearly_when_the_trash_keeps_vanishing_and_deletes_nothing(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a concurrent sweep removes the empty trash folder between its creation and the rename of
    the repo into it, a hundred times in a row. Stand-in: ``os.rename`` of the repo removes the trash
    folder first, every time. rm fails with a message that says so, and the model is whole."""
    repo = healthy_model(hub)
    before = tree(repo.repo_dir)
    real_rename = os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if src == repo.repo_dir.name:
            os.rmdir(trash(hub))  # the other process
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(
        DeletionFailed, match=f"deleting {NAME} failed: the trash folder under .* keeps vanishing"
    ):
        rm(hub, NAME)
    assert tree(repo.repo_dir) == before
    assert not os.path.lexists(trash(hub))


def test_a_repo_removed_by_another_process_right_before_its_rename_is_reported(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: another process removes the repo folder between rm's lstat of it and its rename into the
    trash. Stand-in: ``os.rename`` of the repo removes it first. rm reports the failed rename (not a
    vanishing trash, and without retrying), and leaves no trash entry behind."""
    repo = healthy_model(hub)
    calls: list[str] = []
    real_rename = os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if src == repo.repo_dir.name:
            calls.append(src)
            shutil.rmtree(repo.repo_dir)  # the other process
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(DeletionFailed, match=f"deleting {NAME} failed at {repo.repo_dir.name}: No such file"):
        rm(hub, NAME)
    assert calls == [repo.repo_dir.name]
    assert not os.path.lexists(repo.repo_dir)
    assert os.listdir(trash(hub)) == []


def test_our_trash_entry_removed_before_rm_empties_it_still_finishes(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the trash entry rm just renamed the repo into is removed (by another process) before rm
    opens it to empty it. Stand-in: ``delete_run.opened`` of that entry removes it first. rm finishes
    without error and leaves nothing behind."""
    repo = healthy_model(hub)
    stale_lock(hub, repo.repo_dir.name)
    calls: list[str] = []
    real_opened = opened_real

    def opened(root: str | Folder, *parts: str) -> Any:
        if parts and parts[-1].startswith(repo.repo_dir.name + "."):
            calls.append(parts[-1])
            shutil.rmtree(trash(hub) / parts[-1])  # the other process
        return real_opened(root, *parts)

    monkeypatch.setattr("mlxk.cache.delete_run.opened", opened)
    assert rm(hub, NAME) == 1
    assert len(calls) == 1
    assert nothing_left_behind(hub)


def test_the_trash_removed_before_rm_drops_its_entry_still_finishes(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the whole trash (with rm's emptied entry) is removed by another process after the entry
    was made and before rm drops it. Stand-in: ``delete_run.open_trash`` without ``create`` removes
    the trash first. rm finishes, reports its stale lock file, and leaves nothing behind."""
    repo = healthy_model(hub)
    stale_lock(hub, repo.repo_dir.name)
    calls: list[bool] = []
    real_open_trash = open_trash_real

    def open_trash(hub_folder: Folder, *, create: bool) -> Folder | None:
        if not create and os.path.lexists(trash(hub)):
            calls.append(create)
            shutil.rmtree(trash(hub))  # the other process
        return real_open_trash(hub_folder, create=create)

    monkeypatch.setattr("mlxk.cache.delete_run.open_trash", open_trash)
    assert rm(hub, NAME) == 1
    assert calls == [False]
    assert nothing_left_behind(hub)


def test_a_lock_subfolder_removed_while_rm_prunes_it_still_finishes(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: an empty folder in the repo's lock folder is removed (by another process) between rm's
    lstat of it and its open, while rm prunes empty lock folders. Stand-in: ``Folder.child`` of that
    folder, once it is empty, removes it first. rm finishes and no lock folder is left."""
    repo = healthy_model(hub)
    stale_lock(hub, repo.repo_dir.name, "sub/download.lock")
    sub = hub / ".locks" / repo.repo_dir.name / "sub"
    calls: list[str] = []
    real_child = Folder.child

    def child(self: Folder, name: str) -> Folder | None:
        if name == "sub" and os.path.isdir(sub) and not os.listdir(sub):
            calls.append(name)
            os.rmdir(sub)  # the other process
        return real_child(self, name)

    monkeypatch.setattr(Folder, "child", child)
    assert rm(hub, NAME) == 1
    assert calls == ["sub"]
    assert nothing_left_behind(hub)


# --- mlxk/cache/delete_run.py: one snapshot --------------------------------------------------------------


def test_a_repo_removed_by_another_process_before_one_snapshot_goes_leaves_no_journal(
    hub: Path, two: TwoRevisions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the repo folder is removed between ``execute_delete``'s check of it and the open that
    starts one snapshot's removal. Stand-in: ``delete_run.check_repo_folder`` runs, then removes the
    repo. rm of the snapshot finishes without error and leaves no journal for a later command."""
    real_check = check_repo_folder_real

    def check_repo_folder(hub_root: str, dirname: str) -> str:
        path = real_check(hub_root, dirname)
        shutil.rmtree(path)  # the other process
        return path

    monkeypatch.setattr("mlxk.cache.delete_run.check_repo_folder", check_repo_folder)
    assert rm(hub, f"{NAME}@{two.prefix}") == 0
    assert nothing_left_behind(hub)


def test_our_journal_entry_removed_before_the_snapshot_goes_fails_clearly_and_deletes_nothing(
    hub: Path, two: TwoRevisions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the trash entry rm made for one snapshot's removal (its journal just written) is removed
    by another process before rm opens it again. Stand-in: ``delete_run.write_journal`` writes the
    journal, then removes the whole entry. rm fails saying the entry vanished, before touching the
    snapshot, its ref or its blobs."""
    before = tree(two.repo_dir)
    real_write = write_journal_real

    def write_journal(entry: Folder, journal: Any) -> None:
        real_write(entry, journal)
        shutil.rmtree(entry.path)  # the other process

    monkeypatch.setattr("mlxk.cache.delete_run.write_journal", write_journal)
    with pytest.raises(DeletionFailed, match=r"the trash entry snapshot\.\d+\.[0-9a-f]{8} vanished"):
        rm(hub, f"{NAME}@{two.prefix}")
    assert old_untouched(two)
    assert tree(two.repo_dir) == before
    assert os.listdir(trash(hub)) == []


# --- mlxk/cache/delete_run.py: the sweep ---------------------------------------------------------------


def test_the_locks_folder_removed_while_the_sweep_runs_is_no_error(
    hub: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the whole ``.locks`` folder (the trash in it) is removed by another process after the
    sweep listed a dead rm's entry there. Stand-in: ``delete_run.list_entries`` lists, then removes
    ``.locks``. The sweep (as rm, pull and health run it) ends without error and touches no model."""
    repo = healthy_model(hub)
    before = tree(repo.repo_dir)
    (trash(hub) / f"models--org--gone.{dead_pid}.abcd1234" / "blobs").mkdir(parents=True)
    real_list = list_entries_real

    def list_entries(hub_root: str) -> Any:
        entries = real_list(hub_root)
        shutil.rmtree(hub / ".locks")  # the other process
        return entries

    monkeypatch.setattr("mlxk.cache.delete_run.list_entries", list_entries)
    sweep_trash(str(hub))
    assert tree(repo.repo_dir) == before
    assert sorted(os.listdir(hub)) == [repo.repo_dir.name]


def test_the_trash_removed_while_the_sweep_runs_keeps_other_lock_files(
    hub: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the trash is removed by another sweep after this sweep listed a dead rm's entry there.
    Stand-in: ``delete_run.list_entries`` lists, then removes the trash. The sweep ends without error,
    and the lock file of a model in the same ``.locks`` stays."""
    repo = healthy_model(hub)
    held = stale_lock(hub, repo.repo_dir.name)
    (trash(hub) / f"snapshot.{dead_pid}.abcd1234").mkdir(parents=True)
    real_list = list_entries_real

    def list_entries(hub_root: str) -> Any:
        entries = real_list(hub_root)
        shutil.rmtree(trash(hub))  # the other process
        return entries

    monkeypatch.setattr("mlxk.cache.delete_run.list_entries", list_entries)
    sweep_trash(str(hub))
    assert held.is_file()
    assert sorted(os.listdir(hub / ".locks")) == [repo.repo_dir.name]


# --- mlxk/cache/leftovers.py ---------------------------------------------------------------------------


def test_leftovers_removed_by_another_process_meanwhile_are_not_counted(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a partial blob, and then a stale lock file, are removed by another process (another pull
    cleaning up) between the listing and the unlink. Stand-in: ``leftovers.lock_is_held``, probing
    ``aaa.lock``, first removes ``aaa.1.incomplete`` (the first probe) and then ``aaa.lock`` itself
    (the second). The cleanup ends without error, counting only what it removed."""
    repo = healthy_model(hub)
    blobs = repo.repo_dir / "blobs"
    for name in ("aaa.1.incomplete", "bbb.2.incomplete"):
        (blobs / name).write_bytes(b"partial")
    for name in ("aaa.lock", "bbb.lock"):
        stale_lock(hub, repo.repo_dir.name, name)
    probes: list[str] = []
    real_held = lock_is_held_real

    def lock_is_held(path: str) -> bool:
        if os.path.basename(path) == "aaa.lock":
            probes.append(path)
            gone = blobs / "aaa.1.incomplete" if len(probes) == 1 else Path(path)
            gone.unlink()  # the other process
        return real_held(path)

    monkeypatch.setattr("mlxk.cache.leftovers.lock_is_held", lock_is_held)
    assert clean_stale_leftovers(str(hub), repo.repo_dir.name) == Cleaned(1, 1)
    assert len(probes) == 2
    assert not [n for n in os.listdir(blobs) if n.endswith(".incomplete")]
    assert os.listdir(hub / ".locks" / repo.repo_dir.name) == []


# --- mlxk/cache/locks.py -----------------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 99, 100])
def test_rm_takes_the_repo_lock_unless_its_folder_keeps_vanishing(
    hub: Path, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """Race: another process (a pull or rm releasing its own lock) removes the empty lock folder
    between our makedirs and our open of the lock file. Stand-in: ``os.open`` of the lock file removes
    the folder first, ``times`` times in a row. Short of a hundred, rm makes it again and finishes; when
    all hundred tries lose the race, the last open (without makedirs) meets the missing folder and rm
    fails with a clear error, having deleted nothing."""
    repo = healthy_model(hub)
    before = tree(repo.repo_dir)
    lock_file = hub / ".locks" / repo.repo_dir.name / "mlxk.lock"
    calls: list[int] = []
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == str(lock_file) and flags & os.O_CREAT and len(calls) < times:
            calls.append(flags)
            os.rmdir(lock_file.parent)  # the other process
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    if times < 100:
        assert rm(hub, NAME) == 0
        assert nothing_left_behind(hub)
    else:
        with pytest.raises(DeletionFailed, match=f"cannot lock {NAME}: No such file or directory"):
            rm(hub, NAME)
        assert tree(repo.repo_dir) == before
    assert len(calls) == times


# --- mlxk/cache/nofollow.py ---------------------------------------------------------------------------


@pytest.mark.parametrize("swapped", ["blobs", "entry"])
def test_a_folder_in_the_trash_swapped_for_a_link_goes_without_its_target(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    """Race: while rm removes the trash entry of a repo, another process swaps a folder there for a
    link to a folder outside the cache, between ``Folder.remove``'s lstat (a folder) and its open:
    the entry's ``blobs`` while rm empties the entry, or the emptied entry itself when rm drops it.
    Stand-in: ``Folder.child`` of that folder makes the swap first. rm finishes, the link goes, and
    the folder it points to keeps every file."""
    repo = healthy_model(hub)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_bytes(SECRET)
    calls: list[str] = []
    real_child = Folder.child

    def child(self: Folder, name: str) -> Folder | None:
        path = Path(self.path) / name
        if swapped == "blobs":
            ours = name == "blobs" and TRASH in self.path
        else:  # the entry, once rm has emptied it
            ours = name.startswith(repo.repo_dir.name + ".") and Path(self.path) == trash(hub)
            ours = ours and path.is_dir() and not path.is_symlink() and not os.listdir(path)
        if ours and not path.is_symlink():
            calls.append(name)
            shutil.rmtree(path)  # the other process
            os.symlink(elsewhere, path)
        return real_child(self, name)

    monkeypatch.setattr(Folder, "child", child)
    assert rm(hub, NAME) == 0
    assert len(calls) == 1
    assert nothing_left_behind(hub)
    assert tree(elsewhere) == {"thesis.tex": f"file:{len(SECRET)}"}
    assert (elsewhere / "thesis.tex").read_bytes() == SECRET


def test_a_folder_in_the_trash_removed_by_another_process_meanwhile_is_no_error(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: while rm empties the trash entry of a repo, another process removes the entry's
    ``snapshots`` folder between ``Folder.remove``'s lstat (a folder) and its open. Stand-in:
    ``Folder.child`` of that folder removes it first. rm finishes and leaves nothing behind."""
    healthy_model(hub)
    calls: list[str] = []
    real_child = Folder.child

    def child(self: Folder, name: str) -> Folder | None:
        path = Path(self.path) / name
        if name == "snapshots" and TRASH in self.path and path.is_dir():
            calls.append(self.path)
            shutil.rmtree(path)  # the other process
        return real_child(self, name)

    monkeypatch.setattr(Folder, "child", child)
    assert rm(hub, NAME) == 0
    assert len(calls) == 1
    assert nothing_left_behind(hub)


# --- mlxk/cache/trash.py ------------------------------------------------------------------------------


def _snapshot_mkdir(
    act: Callable[[], None], times: int, after: bool
) -> tuple[Callable[..., None], list[str]]:
    """``os.mkdir`` that, for a snapshot entry in the trash, runs ``act`` (the other process) before
    (or, with ``after``, right after) the real mkdir, ``times`` times in a row; and the names it
    raced on."""
    real_mkdir = os.mkdir
    calls: list[str] = []

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        ours = isinstance(path, str) and path.startswith("snapshot.") and kwargs.get("dir_fd") is not None
        if ours and len(calls) < times and not after:
            calls.append(path)
            act()
        real_mkdir(path, *args, **kwargs)
        if ours and len(calls) < times and after:
            calls.append(path)
            act()

    return mkdir, calls


@pytest.mark.parametrize("times", [1, 99])
def test_one_snapshot_rm_makes_the_trash_again_when_a_sweep_removes_it_before_the_entry(
    hub: Path, two: TwoRevisions, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """Race: a concurrent sweep removes the empty trash folder between its creation and the mkdir of
    this rm's snapshot entry in it. Stand-in: ``os.mkdir`` of the entry removes the trash folder
    first, ``times`` times in a row. rm makes it again each time, and removes the snapshot."""
    mkdir, calls = _snapshot_mkdir(lambda: os.rmdir(trash(hub)), times, after=False)
    monkeypatch.setattr(os, "mkdir", mkdir)
    assert rm(hub, f"{NAME}@{two.prefix}") == 0
    assert len(calls) == times
    assert only_new_left(two)
    assert no_scan_warnings(hub) == {NAME}


def test_one_snapshot_rm_makes_a_new_entry_when_another_process_removes_the_one_just_made(
    hub: Path, two: TwoRevisions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: this rm's new, empty snapshot entry is removed (by a concurrent sweep) between its mkdir
    and its open. Stand-in: ``os.mkdir`` of the entry makes it, then removes it. rm makes it again,
    writes its journal there, and removes the snapshot."""
    gone: list[str] = []

    def remove_entry() -> None:
        [name] = os.listdir(trash(hub))
        gone.append(name)
        os.rmdir(trash(hub) / name)  # the other process

    mkdir, _calls = _snapshot_mkdir(remove_entry, 1, after=True)
    monkeypatch.setattr(os, "mkdir", mkdir)
    assert rm(hub, f"{NAME}@{two.prefix}") == 0
    assert len(gone) == 1 and gone[0].startswith("snapshot.")
    assert only_new_left(two)


def test_one_snapshot_rm_gives_up_clearly_when_the_trash_keeps_vanishing_and_deletes_nothing(
    hub: Path, two: TwoRevisions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: a concurrent sweep removes the empty trash folder between its creation and the mkdir of
    this rm's snapshot entry, a hundred times in a row. Stand-in: ``os.mkdir`` of the entry removes
    the trash folder first, every time. rm fails naming the trash folder, and the snapshot, its ref
    and its blobs are all still there."""
    before = tree(two.repo_dir)
    mkdir, calls = _snapshot_mkdir(lambda: os.rmdir(trash(hub)), 1000, after=False)
    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(DeletionFailed, match=f"the trash folder {trash(hub)} keeps vanishing"):
        rm(hub, f"{NAME}@{two.prefix}")
    assert len(calls) == 100
    assert old_untouched(two)
    assert tree(two.repo_dir) == before
    assert not os.path.lexists(trash(hub))
