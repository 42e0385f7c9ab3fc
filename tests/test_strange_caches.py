"""Caches no tool should meet, but users' caches do: each case ends in a clear answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from benchmarks import cachegen as gen
from mlxk.cache import memo
from mlxk.cache.detect import detect_kind
from mlxk.cache.root import mlxk_cache_dir
from tests.cachefix import healthy_model, replace_blob

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())
pytestmark = pytest.mark.usefixtures("core")


def valid(envelope: object) -> object:
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    return envelope


def test_fifo_lock_file_does_not_hang_health(hub: Path) -> None:
    repo = healthy_model(hub)
    locks = hub / ".locks" / repo.repo_dir.name
    locks.mkdir(parents=True)
    os.mkfifo(locks / "f.lock")
    proc = subprocess.run(
        [sys.executable, "-m", "mlxk", "health", "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 stale lock file" in proc.stdout


def test_non_utf8_folder_names_are_shown_not_fatal(cli, hub: Path) -> None:
    healthy_model(hub, "org/good")
    os.mkdir(os.fsencode(hub) + b"/models--org--bad\xff")
    out = valid(cli("list", "--json").json())
    names = [m["name"] for m in out["data"]["models"]]  # type: ignore[index]
    assert names == ["org/bad\ufffd", "org/good"]
    human = cli("list")
    assert human.exit_code == 0 and "org/bad\ufffd" in human.stdout


def test_bare_prefix_folder_still_has_a_name(cli, hub: Path) -> None:
    (hub / "models--").mkdir()
    out = valid(cli("list", "--json").json())
    assert out["data"]["models"][0]["name"] == "models--"  # type: ignore[index]


def test_show_metadata_keeps_contract_types(cli, hub: Path) -> None:
    repo = healthy_model(hub, "org/m")
    config = (
        b'{"model_type":["llama"],"architectures":[],"quantization":4,"vocab_size":1.5,"hidden_size":true}'
    )
    replace_blob(repo, "config.json", config)
    out = valid(cli("show", "org/m", "--json").json())
    assert out["data"]["metadata"] == {}  # type: ignore[index]


def test_available_hashes_are_hex_only(cli, hub: Path) -> None:
    repo = healthy_model(hub, "org/m")
    (repo.repo_dir / "snapshots" / "main").mkdir()
    out = valid(cli("show", "org/m@ab", "--json").json())
    assert out["error"]["available_hashes"] == [repo.commit[:8]]  # type: ignore[index]


def test_unreadable_hub_root_is_a_filesystem_error(cli, hub: Path) -> None:
    hub.rmdir()
    os.symlink(hub, hub)  # a link to itself: ELOOP
    result = cli("list", "--json")
    assert result.exit_code == 3
    assert valid(result.json())["error"]["type"] == "cache_not_found"  # type: ignore[index]


def test_health_pattern_with_revision_over_several_matches(cli, hub: Path) -> None:
    a = healthy_model(hub, "org/Qwen-A")
    healthy_model(hub, "org/Qwen-B", chat=False)
    out = valid(cli("health", f"qwen@{a.commit[:6]}", "--json").json())
    assert [e["name"] for e in out["data"]["healthy"]] == ["org/Qwen-A"]  # type: ignore[index]
    assert cli("health", "qwen@ffffff", "--json").json()["error"]["type"] == "hash_not_found"


def test_health_pattern_may_be_any_part_of_a_name(cli, hub: Path) -> None:
    healthy_model(hub, "org/Model-7B-4bit")
    assert cli("health", "7B-", "--json").json()["data"]["summary"]["total"] == 1


def test_nested_shards_follow_their_own_index(cli, hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=4)
    shard = gen.safetensors_file(gen.tensor_entries(2))
    files["text_encoder/model-00001-of-00002.safetensors"] = shard
    files["text_encoder/model-00002-of-00002.safetensors"] = shard
    files["text_encoder/model.safetensors.index.json"] = b'{"weight_map": {}}'
    repo = gen.add_model(hub, "org/diffusers-like", files)
    assert cli("health", "--json").json()["data"]["summary"]["healthy_count"] == 1
    index = repo.snapshot / "text_encoder" / "model.safetensors.index.json"
    index.unlink()
    reason = cli("health", "--json").json()["data"]["unhealthy"][0]["reason"]
    assert reason == "sharded weights text_encoder/model-*-of-00002.safetensors have no index file"
    index.write_bytes(b'{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "other.safetensors"}}')
    os.utime(index, (gen.OLD_MTIME, gen.OLD_MTIME))
    reason = cli("health", "--json").json()["data"]["unhealthy"][0]["reason"]
    assert reason == "text_encoder/model.safetensors.index.json names other.safetensors, which is missing"


def test_index_values_and_shard_numbers_are_checked(cli, hub: Path) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=2))
    replace_blob(repo, "model.safetensors.index.json", b'{"weight_map": {"a": 1, "b": 2}}')
    reason = cli("health", "--json").json()["data"]["unhealthy"][0]["reason"]
    assert reason == "model.safetensors.index.json has a weight_map value that is not a file name"
    replace_blob(repo, "model.safetensors.index.json", b'{"weight_map": {}}')
    os.symlink(
        repo.blob_of("model-00001-of-00002.safetensors"), repo.snapshot / "model-00003-of-00002.safetensors"
    )
    reason = cli("health", "--json").json()["data"]["unhealthy"][0]["reason"]
    assert reason == "sharded weights model-*-of-00002.safetensors are numbered outside 1..2"


def test_memo_never_lands_in_the_hub(hub: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    healthy_model(hub)
    monkeypatch.setenv("MLXK_CACHE_DIR", str(hub / "mlxk"))
    assert cli("list", "--json").exit_code == 0
    assert sorted(p.name for p in hub.iterdir()) == ["models--mlx-community--Tiny-Chat-4bit"]
    assert not memo.memo_allowed(mlxk_cache_dir(), str(hub))


def test_version_with_other_flags_keeps_json(cli) -> None:
    out = valid(cli("--version", "--json", "--no-ansi").json())
    assert out["command"] == "version"  # type: ignore[index]
    assert cli("--version", "--json", "-q").stdout.startswith("{")


def test_chat_name_hints_need_a_word_boundary() -> None:
    def kind(name: str) -> str:
        return detect_kind(name, {}, {}, (), set(), False).model_type

    assert kind("org/gemma-2-2b-it") == "chat"
    assert kind("org/Mistral-7B-Instruct-v0.3") == "chat"
    assert kind("org/bert-base-Italian") == "base"


SECRET = "root:x:0:0:root:/root:/bin/bash\n"


def every_output(cli: Any) -> str:
    """What list, health and show print, as text and as JSON, for every model."""
    outputs = []
    for args in (["list"], ["health"], ["health", "--deep"]):
        outputs += [cli(*args).stdout, cli(*args, "--json").stdout]
    for entry in valid(cli("list", "--json").json())["data"]["models"]:  # type: ignore[index]
        for flags in ([], ["--files", "--config"]):
            outputs += [
                cli("show", entry["name"], *flags).stdout,
                cli("show", entry["name"], *flags, "--json").stdout,
            ]
    return "\n".join(outputs)


@pytest.mark.parametrize(
    "file", ["config.json", "README.md", "tokenizer_config.json", "model.safetensors", "refs/main"]
)
def test_nothing_outside_the_cache_is_read(cli: Any, hub: Path, tmp_path: Path, file: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "secret"
    if file == "refs/main":
        target.write_text(SECRET)
    elif file == "model.safetensors":
        weights = gen.safetensors_file(gen.tensor_entries(2))
        assert isinstance(weights, bytes)
        target.write_bytes(weights)
    else:  # text that, if read, would show up as metadata or change what the model is said to be
        target.write_text(
            '---\nlibrary_name: outside-lib\n---\n{"model_type": "outside-secret", "chat_template": "x"}'
        )
    repo = healthy_model(hub, "org/m", chat=False)
    link = repo.repo_dir / file if file == "refs/main" else repo.snapshot / file
    link.unlink()
    os.symlink(target, link)
    text = every_output(cli)
    assert "root:x:0" not in text and "outside-secret" not in text and "outside-lib" not in text
    if file == "refs/main":  # never read: the newest snapshot is described, healthy
        assert valid(cli("list", "--json").json())["data"]["models"][0]["hash"] == repo.commit  # type: ignore[index]
    else:
        reason = cli("health", "--json").json()["data"]["unhealthy"][0]["reason"]
        assert reason == f"{file} links outside the cache (to {str(target)!r}); not followed"
        assert "not followed" in cli("show", "org/m").stdout


def test_a_repo_folder_leading_outside_is_not_read(cli: Any, hub: Path, tmp_path: Path) -> None:
    elsewhere = healthy_model(tmp_path / "elsewhere", "org/m")
    os.symlink(elsewhere.repo_dir, hub / "models--org--m")
    os.symlink(hub / "models--org--m", hub / "models--org--inside")  # a link that stays inside: followed
    models = {m["name"]: m for m in valid(cli("list", "--json").json())["data"]["models"]}  # type: ignore[index]
    assert models["org/m"]["health"] == "unhealthy" and models["org/m"]["hash"] is None
    assert models["org/m"]["reason"] == (
        "repo folder models--org--m (or its refs, snapshots or blobs folder) links outside the cache; not followed"
    )
    assert models["org/inside"]["reason"] == models["org/m"]["reason"].replace("org--m", "org--inside")


def test_a_stray_file_named_like_a_repo_is_listed_unhealthy_and_rm_removes_it(cli: Any, hub: Path) -> None:
    healthy_model(hub)
    (hub / "models--org--stray").write_text("not a repo")
    listed = {m["name"]: m for m in cli("list", "--all", "--json").json()["data"]["models"]}
    assert listed["org/stray"]["reason"] == "repo folder models--org--stray is not a folder"
    removed = cli("rm", "org/stray", "-f", "--json").json()["data"]
    assert (removed["action"], removed["whole_repo"], removed["freed_bytes"]) == ("deleted", True, 10)
    assert sorted(p.name for p in hub.iterdir()) == ["models--mlx-community--Tiny-Chat-4bit"]
