"""``health MODEL`` finishes only the killed snapshot removals of the models it checks: a journal of
another repo is left for a command that names that repo (or for the next rm)."""

from __future__ import annotations

import os
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
