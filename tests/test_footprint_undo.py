"""What a refused download takes back (mlxk.hub.footprint): huggingface_hub's ``.incomplete`` blobs
and per-blob lock files that appeared during the pull go, unless a live downloader of another process
still holds their lock; whatever was there before the pull stays.

The first test is a real pull against our Hub on 127.0.0.1. huggingface_hub 2.x deletes its own
partial file when a transfer fails and waits for every running transfer before it raises, so a real
pull never leaves an ``.incomplete`` of its own; the ones ``undo`` must sort out belong to other
programs sharing the cache (a plain ``hf download``, killed or still running). The other tests build
that state on disk as such a program leaves it, around a real ``Footprint.take`` and ``undo``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlxk.hub.footprint import Footprint
from mlxk.hub.remote import RemoteFile
from tests.hubfix import BIG, REPO, model_files
from tests.hubserver import FakeHub
from tests.test_pull import entries, incomplete, wait_for

DIRNAME = "models--org--tiny"
COMMIT = "c" * 40
CONFIG = RemoteFile("config.json", 10, "a" * 40, False)
WEIGHTS = RemoteFile("model.safetensors", 1000, "b" * 64, True)
TOKENIZER = RemoteFile("tokenizer.json", 20, "d" * 40, False)
FOREIGN_BLOB = "f" * 64  # a blob of another commit: not this download's


def test_a_file_refused_while_another_is_still_arriving_leaves_nothing(hub: Path, fake: FakeHub) -> None:
    """The Hub refuses one file while the weights are still arriving: the pull waits for the
    transfer under way (huggingface_hub does not abandon it), then takes back everything it wrote,
    the weights that finished after the refusal and huggingface_hub's lock files included."""
    fake.add_commit(REPO, {**model_files(), "extra.json": b'{"v": 2}'})
    fake.deny = {"extra.json"}
    fake.hold = {BIG}  # the weights' body comes only once the refusal has been answered
    puller = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], stdout=subprocess.PIPE, text=True
    )

    def refused_while_arriving() -> bool:
        refused = any(path.endswith("/extra.json") for _, path in list(fake.requests))
        return refused and bool(incomplete(hub))

    wait_for(refused_while_arriving)
    fake.hold.discard(BIG)
    out = puller.communicate(timeout=120)[0]
    assert puller.returncode == 1, out
    envelope = json.loads(out)
    assert envelope["error"]["type"] == "access_denied" and REPO in envelope["error"]["message"]
    assert fake.gets(BIG) == 1  # the weights did arrive, after the refusal
    assert entries(hub) in ([], ["CACHEDIR.TAG"])  # huggingface_hub's tag of the cache folder may stay


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """A lock file held as a downloader of another process holds it (flock on its own open file)."""
    _touch(lock)
    with open(lock, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield


def test_undo_takes_a_dead_downloaders_leftovers_and_spares_live_and_older_ones(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    repo, locks = hub / DIRNAME, hub / ".locks" / DIRNAME
    older = _touch(repo / "blobs" / f"{WEIGHTS.blob}.00000000.incomplete")  # a killed pull of last week
    older_lock = _touch(locks / f"{TOKENIZER.blob}.lock")
    footprint = Footprint.take(str(hub), DIRNAME, COMMIT, (CONFIG, WEIGHTS, TOKENIZER))

    # during the pull: a downloader that died left its partial weights and their lock file, a live one
    # is writing the config, and another commit's download has a partial blob of its own
    dead = _touch(repo / "blobs" / f"{WEIGHTS.blob}.11111111.incomplete")
    dead_lock = _touch(locks / f"{WEIGHTS.blob}.lock")
    live = _touch(repo / "blobs" / f"{CONFIG.blob}.22222222.incomplete")
    other = _touch(repo / "blobs" / f"{FOREIGN_BLOB}.33333333.incomplete")
    with held(locks / f"{CONFIG.blob}.lock"):
        footprint.undo()
        assert not dead.exists() and not dead_lock.exists()
        assert live.exists() and (locks / f"{CONFIG.blob}.lock").exists()  # not ours to stop
        assert other.exists() and older.exists() and older_lock.exists()


def test_undo_never_removes_a_lock_entry_that_is_not_a_regular_file(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    locks = hub / ".locks" / DIRNAME
    footprint = Footprint.take(str(hub), DIRNAME, COMMIT, (CONFIG, WEIGHTS))
    target = _touch(tmp_path / "elsewhere" / "precious")
    locks.mkdir(parents=True)
    (locks / f"{WEIGHTS.blob}.lock").symlink_to(target)
    (locks / f"{CONFIG.blob}.lock").mkdir()
    footprint.undo()
    assert (locks / f"{WEIGHTS.blob}.lock").is_symlink() and target.read_bytes() == b"x"
    assert (locks / f"{CONFIG.blob}.lock").is_dir()


def test_undo_of_a_download_that_wrote_nothing_removes_the_folder_take_made(tmp_path: Path) -> None:
    """Refused before its first byte: no blobs folder, no lock folder, and the repo folder that
    ``take`` made (to know its identity) goes too."""
    hub = tmp_path / "hub"
    hub.mkdir()
    footprint = Footprint.take(str(hub), DIRNAME, COMMIT, (CONFIG, WEIGHTS))
    assert (hub / DIRNAME).is_dir()
    footprint.undo()
    assert list(hub.iterdir()) == []


def test_undo_after_the_whole_cache_folder_was_deleted_recreates_nothing(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    footprint = Footprint.take(str(hub), DIRNAME, COMMIT, (CONFIG, WEIGHTS))
    _touch(hub / ".locks" / DIRNAME / f"{WEIGHTS.blob}.lock")
    shutil.rmtree(hub)  # a user clearing the cache mid-pull
    assert footprint.repo_replaced()
    footprint.undo()
    assert not os.path.lexists(hub)
