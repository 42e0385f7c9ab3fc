"""``health MODEL`` finishes only the killed snapshot removals of the models it checks: a journal of
another repo is left for a command that names that repo (or for the next rm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlxk.cache.trash import pending_journals
from tests.cachefix import healthy_model
from tests.test_rm import NAME, OTHER, TwoRevisions, trash
from tests.test_trash_journals import entry_with_journal, journal_of_old, old_untouched


def test_health_of_one_model_leaves_another_repos_journal(cli: Any, hub: Path) -> None:
    two = TwoRevisions(hub)
    healthy_model(hub, OTHER)
    entry_with_journal(hub, journal_of_old(two))  # a removal of NAME's old snapshot, killed

    other = cli("health", OTHER, "--json")
    assert other.exit_code == 0 and other.json()["data"]["summary"]["total"] == 1
    assert old_untouched(two)  # not NAME's checker: its pending removal stays as it was
    assert pending_journals(str(hub), two.repo_dir.name) == [journal_of_old(two)]

    assert cli("health", NAME, "--json").exit_code == 0  # the repo's own check finishes it
    assert not two.old.snapshot.exists() and two.new.snapshot.is_dir()
    assert pending_journals(str(hub), two.repo_dir.name) == []
    assert not os.path.lexists(trash(hub))


def test_a_killed_whole_repo_entry_whose_lock_folder_went_is_swept(cli: Any, hub: Path) -> None:
    """An rm killed after it removed the repo's lock folder and before the trash entry: the next rm
    removes the entry and makes no lock folder for the repo that is gone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = "models--org--gone"
    entry = trash(hub) / f"{gone}.{dead.pid}.abcd1234"
    (entry / "blobs").mkdir(parents=True)
    (entry / "blobs" / ("ab" * 32)).write_bytes(b"weights")
    kept = healthy_model(hub, OTHER)

    assert cli("rm", "org/gone", "-f", "--json").json()["error"]["type"] == "model_not_found"
    assert not os.path.lexists(trash(hub))
    assert not os.path.lexists(hub / ".locks" / gone)
    assert kept.snapshot.is_dir()
