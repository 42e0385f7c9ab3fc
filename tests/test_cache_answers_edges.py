"""Answers mlxk gives from the cache alone, in cases the main tests do not set up: a bare name
that two cached repos share (pull), an offline pull of a damaged model, ``health --deep`` through
the library without a progress display, and README front matter that is not quite front matter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
from mlxk.cache.frontmatter import read_front_matter
from mlxk.cache.root import mlxk_cache_dir
from mlxk.cache.scan import CacheLocation
from mlxk.core.records import READ_WHOLE_LIMIT
from mlxk.ops.deep import DeepOptions
from mlxk.ops.health import check_health
from tests.cachefix import healthy_model, truncate_blob


def test_pull_of_a_bare_name_two_cached_repos_share(cli: Any, hub: Path) -> None:
    healthy_model(hub, "org-a/Tiny")
    healthy_model(hub, "org-b/tiny")  # the same name in another org and case
    before = sorted(p.name for p in hub.iterdir())
    out = cli("pull", "tiny", "--json").json()
    assert out["error"]["type"] == "ambiguous_match"
    assert out["error"]["matches"] == ["org-a/Tiny", "org-b/tiny"]
    assert sorted(p.name for p in hub.iterdir()) == before  # nothing fetched, nothing made


def test_offline_pull_of_a_damaged_model_says_it_is_not_complete(
    cli: Any, hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = healthy_model(hub, "org/broken")
    truncate_blob(repo, "model.safetensors", -10)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("pull", "org/broken", "--json")
    assert result.exit_code != 0
    assert result.json()["error"] == {
        "type": "network_error",
        "message": "offline mode is on (HF_HUB_OFFLINE) and org/broken is not complete in the cache",
    }
    healthy_model(hub, "org/fine")
    assert cli("pull", "org/fine", "--json").json()["data"]["download_status"] == "already_exists"


def test_deep_check_without_a_progress_display(core: str, hub: Path) -> None:
    good = gen.add_model(hub, "org/good", gen.mlx_chat_model_files(tensors=12), real_hash=True)
    bad = gen.add_model(hub, "org/bad", gen.mlx_chat_model_files(tensors=12), real_hash=True)
    blob = bad.blob_of("model.safetensors")
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))

    result = check_health(CacheLocation(str(hub), mlxk_cache_dir()), None, DeepOptions())  # no progress
    verdicts = {e.model.name: (e.model.healthy, e.model.health_reason) for e in result.entries}
    assert verdicts["org/good"] == (True, None)
    healthy, reason = verdicts["org/bad"]
    assert not healthy and reason is not None and "model.safetensors" in reason and "checksum" in reason
    assert good.repo_dir.is_dir()


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (b"-----\nlibrary_name: mlx\n-----\n# a rule, not front matter\n", {}),
        (b"---title: x\nlibrary_name: mlx\n---\n", {}),
        # cut off before its closing line (only the head of a README is read): what is there counts
        (b"---\nlibrary_name: mlx\ntags:\n- mlx\n- chat\npipeline_tag: text-generation\n", None),
    ],
    ids=["dashes rule", "text after the opening dashes", "no closing line"],
)
def test_front_matter_edges(head: bytes, found: dict[str, Any] | None) -> None:
    expected = (
        found
        if found is not None
        else {"library_name": "mlx", "tags": ["mlx", "chat"], "pipeline_tag": "text-generation"}
    )
    assert read_front_matter(head) == expected


def test_an_index_too_big_to_read_is_not_held_against_the_model(core: str, hub: Path) -> None:
    # index files over READ_WHOLE_LIMIT are not read: the shards are judged by their sequence alone
    files = gen.mlx_chat_model_files(tensors=12, shards=3)
    index = files["model.safetensors.index.json"]
    assert isinstance(index, bytes)
    files["model.safetensors.index.json"] = index + b" " * (READ_WHOLE_LIMIT + 1)
    repo = gen.add_model(hub, "org/sharded", files)
    location = CacheLocation(str(hub), mlxk_cache_dir())
    (model,) = (e.model for e in check_health(location).entries)
    assert (model.healthy, model.health_reason) == (True, None)
    (repo.snapshot / "model-00002-of-00003.safetensors").unlink()
    (model,) = (e.model for e in check_health(location).entries)
    assert model.health_reason == "shard model-00002-of-00003.safetensors is missing"
