"""mlxk's whole-repo lock (mlxk.cache.locks.RepoLock) in one process: flock locks belong to open
file descriptions, so two RepoLock objects on one path exclude each other as two processes would.
Each test states what a pull or rm racing another one would see: who gets the lock, which files are
left under ``.locks``."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from mlxk.cache.locks import REPO_LOCK_NAME, RepoLock, lock_is_held

DIRNAME = "models--org--name"


def _waiters(path: Path) -> int:
    """Processes or descriptions blocked in flock on ``path``'s inode, from /proc/locks (a blocked
    request is listed under the holder with a ``->`` mark)."""
    ino = os.stat(path).st_ino
    with open("/proc/locks") as fh:
        return sum(1 for line in fh if "->" in line and line.split()[-3].endswith(f":{ino}"))


def test_the_context_manager_holds_the_lock_and_leaves_nothing(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    lock_file = hub / ".locks" / DIRNAME / REPO_LOCK_NAME
    with RepoLock(str(hub), DIRNAME) as held:
        assert lock_file.is_file()
        assert lock_is_held(str(lock_file))
        assert RepoLock(str(hub), DIRNAME).acquire(wait=False) is False
        assert held.path == str(lock_file)
    assert not (hub / ".locks").exists()  # file, repo folder and the empty .locks all gone


def test_release_without_remove_keeps_the_file_and_frees_the_lock(tmp_path: Path) -> None:
    first = RepoLock(str(tmp_path), DIRNAME)
    assert first.acquire(wait=False)
    first.release(remove=False)
    assert os.path.isfile(first.path) and not lock_is_held(first.path)
    second = RepoLock(str(tmp_path), DIRNAME)
    assert second.acquire(wait=False)
    second.release()
    assert not (tmp_path / ".locks").exists()


def test_releasing_a_lock_never_taken_removes_nothing(tmp_path: Path) -> None:
    holder = RepoLock(str(tmp_path), DIRNAME)
    assert holder.acquire(wait=False)
    RepoLock(str(tmp_path), DIRNAME).release()  # not ours: the holder's file stays, still locked
    assert os.path.isfile(holder.path) and lock_is_held(holder.path)
    holder.release()
    assert not os.path.exists(holder.path)


def test_other_lock_files_keep_the_repo_folder(tmp_path: Path) -> None:
    lock = RepoLock(str(tmp_path), DIRNAME)
    assert lock.acquire(wait=False)
    other = tmp_path / ".locks" / DIRNAME / "abc.lock"  # huggingface_hub's, left after a download
    other.write_bytes(b"")
    lock.release()
    assert not os.path.exists(lock.path) and other.is_file()


@pytest.mark.parametrize("linked", [".locks", f".locks/{DIRNAME}"])
def test_a_lock_folder_that_is_a_link_is_refused(tmp_path: Path, linked: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hub = tmp_path / "hub"
    (hub / linked).parent.mkdir(parents=True, exist_ok=True)
    (hub / linked).symlink_to(elsewhere)
    with pytest.raises(PermissionError) as caught:
        RepoLock(str(hub), DIRNAME).acquire(wait=False)
    assert caught.value.errno == errno.ELOOP and "symbolic link" in str(caught.value)
    assert list(elsewhere.iterdir()) == []  # nothing created through the link


def test_a_waiter_whose_file_was_removed_locks_the_new_one(tmp_path: Path) -> None:
    """An rm removes the lock file while a pull waits on it: the waiter must not keep a lock on the
    removed inode (a third process would lock the new file beside it), and locks the file at the path."""
    holder = RepoLock(str(tmp_path), DIRNAME)
    assert holder.acquire(wait=True)
    waiter = RepoLock(str(tmp_path), DIRNAME)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.acquire(wait=True)))
    thread.start()
    deadline = time.monotonic() + 10
    while _waiters(Path(holder.path)) == 0:  # until the waiter is blocked in flock on the old file
        assert time.monotonic() < deadline, "the waiter never blocked on the lock"
        assert thread.is_alive()
        time.sleep(0.001)  # a poll of the condition above, not a wait for it
    holder.release()  # unlinks the file while holding it, then drops the lock
    thread.join(10)
    assert not thread.is_alive() and result == [True]
    # the lock it holds is the one at the path: a third comer is refused there
    assert os.path.isfile(waiter.path) and lock_is_held(waiter.path)
    assert RepoLock(str(tmp_path), DIRNAME).acquire(wait=False) is False
    waiter.release()
    assert not (tmp_path / ".locks").exists()
