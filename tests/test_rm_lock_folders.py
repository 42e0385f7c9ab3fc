"""``mlxk rm`` and the repo's lock folder when it is not a plain folder of lock files
(mlxk.cache.delete_plan): a lock folder, or ``.locks`` itself, that is a symbolic link is never
entered (the plan counts nothing there, and rm refuses to lock through it); inside a real lock folder only regular files
are locks, and a link or FIFO there is neither counted nor followed (both cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cachefix import healthy_model
from tests.test_rm import NAME, Cli, envelope, listed, tree

pytestmark = pytest.mark.usefixtures("core")
DIRNAME = "models--" + NAME.replace("/", "--")


@pytest.mark.parametrize("linked", [".locks", f".locks/{DIRNAME}"])
def test_a_lock_folder_that_is_a_link_is_never_entered(
    cli: Cli, hub: Path, tmp_path: Path, linked: str
) -> None:
    repo = healthy_model(hub, NAME)
    outside = tmp_path / "outside"
    (outside / DIRNAME).mkdir(parents=True)
    (outside / DIRNAME / "download.lock").touch()
    (outside / "keep.lock").touch()
    (hub / linked).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside if linked == ".locks" else outside / DIRNAME, hub / linked)
    before = tree(outside)

    plan = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)["data"]
    assert plan["stale_lock_files"] == 0 and plan["held_locks"] == []
    repo_before = tree(repo.repo_dir)
    # rm takes mlxk's repo lock there, which it will not make through a link: it refuses
    error = envelope(cli("rm", NAME, "-f", "--json"), 3)["error"]
    assert error == {
        "type": "deletion_failed",
        "message": f"cannot lock {NAME}: lock folder is a symbolic link",
    }
    assert tree(repo.repo_dir) == repo_before and listed(cli) == [NAME]
    assert tree(outside) == before  # nothing made or deleted through the link
    assert os.path.islink(hub / linked)


def test_only_regular_files_in_the_lock_folder_are_locks(cli: Cli, hub: Path, tmp_path: Path) -> None:
    healthy_model(hub, NAME)
    locks = hub / ".locks" / DIRNAME
    locks.mkdir(parents=True)
    (locks / "a.lock").touch()
    os.mkfifo(locks / "fifo.lock")  # opening it to probe would block a careless reader
    target = tmp_path / "elsewhere.lock"
    target.write_bytes(b"not ours")
    os.symlink(target, locks / "link.lock")

    plan = envelope(cli("rm", NAME, "--dry-run", "--json"), 0)["data"]
    assert plan["stale_lock_files"] == 1 and plan["held_locks"] == []
    data = envelope(cli("rm", NAME, "-f", "--json"), 0)["data"]
    assert data["action"] == "deleted" and data["lock_files_cleaned"] == 1
    assert not (locks / "a.lock").exists()
    assert target.read_bytes() == b"not ours"  # the link's target is untouched
