"""A snapshot link that starts like huggingface_hub's ``../../blobs/<name>`` but names a path below
blobs/ is no blob of the repo to either core: with nothing there, it is a broken link."""

from __future__ import annotations

import os
from pathlib import Path

from mlxk.cache.root import mlxk_cache_dir
from mlxk.cache.scan import CacheLocation
from mlxk.ops.health import check_health
from tests.cachefix import healthy_model


def test_a_link_below_blobs_is_no_blob(core: str, hub: Path) -> None:
    repo = healthy_model(hub, "org/m")
    os.symlink("../../blobs/sub/zz", repo.snapshot / "odd.json")
    (entry,) = check_health(CacheLocation(str(hub), mlxk_cache_dir())).entries
    assert not entry.model.healthy
    assert entry.model.health_reason == "odd.json is a broken link (its blob is missing)"
