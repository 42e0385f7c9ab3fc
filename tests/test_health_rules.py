"""Every integrity rule, on a real cache layout, against both core implementations."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from benchmarks import cachegen as gen
from mlxk.cache.root import mlxk_cache_dir
from mlxk.cache.scan import CacheLocation
from mlxk.ops.health import check_health
from mlxk.ops.list import list_models
from tests.cachefix import healthy_model, replace_blob, truncate_blob

pytestmark = pytest.mark.usefixtures("core")


def location(hub: Path) -> CacheLocation:
    return CacheLocation(str(hub), mlxk_cache_dir())


def only_reason(hub: Path) -> str | None:
    result = check_health(location(hub))
    assert len(result.entries) == 1
    model = result.entries[0].model
    listed = list_models(location(hub)).models[0]
    assert listed.healthy == model.healthy and listed.reason == model.reason  # list carries the same health
    return model.health_reason


def test_healthy_model(hub: Path) -> None:
    healthy_model(hub)
    assert only_reason(hub) is None


def test_missing_config(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.snapshot / "config.json").unlink()
    assert only_reason(hub) == "config.json is missing"


def test_invalid_config(hub: Path) -> None:
    repo = healthy_model(hub)
    replace_blob(repo, "config.json", b'{"model_type": "llama",')
    assert only_reason(hub) == "config.json is not valid JSON"


def test_config_not_an_object(hub: Path) -> None:
    repo = healthy_model(hub)
    replace_blob(repo, "config.json", b"[1, 2]")
    assert only_reason(hub) == "config.json is not a JSON object"


def test_missing_weights(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.snapshot / "model.safetensors").unlink()
    assert only_reason(hub) == "no weight files"


def test_empty_weights(hub: Path) -> None:
    repo = healthy_model(hub)
    replace_blob(repo, "model.safetensors", b"")
    assert only_reason(hub) == "model.safetensors is empty (0 bytes)"


def test_truncated_weights(hub: Path) -> None:
    repo = healthy_model(hub)
    size = repo.blob_of("model.safetensors").stat().st_size
    truncate_blob(repo, "model.safetensors", -1)
    assert (
        only_reason(hub)
        == f"model.safetensors is truncated: its header needs {size} bytes, the file has {size - 1}"
    )


def test_weights_with_trailing_bytes(hub: Path) -> None:
    repo = healthy_model(hub)
    truncate_blob(repo, "model.safetensors", 1)
    reason = only_reason(hub)
    assert reason is not None and reason.startswith("model.safetensors has trailing bytes")


def test_lfs_pointer_weights(hub: Path) -> None:
    repo = healthy_model(hub)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 1234\n"
    replace_blob(repo, "model.safetensors", pointer)
    assert only_reason(hub) == "model.safetensors is a git-lfs pointer, not the weights (download incomplete)"


def test_lfs_pointer_in_other_weight_format(hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=4)
    files["pytorch_model.bin"] = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n"
    gen.add_model(hub, "org/mixed", files)
    assert only_reason(hub) == "pytorch_model.bin is a git-lfs pointer, not the weights (download incomplete)"


def test_invalid_safetensors_header(hub: Path) -> None:
    repo = healthy_model(hub)
    header = b'{"a" {}}     '
    replace_blob(repo, "model.safetensors", struct.pack("<Q", len(header)) + header)
    assert only_reason(hub) == "model.safetensors has a header that is not valid JSON (byte 5)"


def test_index_names_missing_shard(hub: Path) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=3))
    (repo.snapshot / "model-00002-of-00003.safetensors").unlink()
    assert (
        only_reason(hub)
        == "model.safetensors.index.json names model-00002-of-00003.safetensors, which is missing"
    )


def test_shards_without_index(hub: Path) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=2))
    (repo.snapshot / "model.safetensors.index.json").unlink()
    assert only_reason(hub) == "sharded weights model-*-of-00002.safetensors have no index file"


def test_shard_missing_from_sequence_not_in_index(hub: Path) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=3))
    replace_blob(
        repo, "model.safetensors.index.json", b'{"weight_map": {"a": "model-00001-of-00003.safetensors"}}'
    )
    (repo.snapshot / "model-00003-of-00003.safetensors").unlink()
    assert only_reason(hub) == "shard model-00003-of-00003.safetensors is missing"


def test_index_not_json(hub: Path) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=2))
    replace_blob(repo, "model.safetensors.index.json", b"{oops")
    assert only_reason(hub) == "model.safetensors.index.json is not valid JSON"


def test_dangling_snapshot_link(hub: Path) -> None:
    repo = healthy_model(hub)
    repo.blob_of("tokenizer.json").unlink()
    assert only_reason(hub) == "tokenizer.json is a broken link (its blob is missing)"


def test_refs_main_points_to_missing_snapshot(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.repo_dir / "refs" / "main").write_text("f" * 40)
    result = check_health(location(hub))
    model = result.entries[0].model
    assert model.hash == "f" * 40
    assert model.health_reason == "refs/main points to snapshot ffffffff, which is missing"


def test_repo_without_snapshots(hub: Path) -> None:
    (hub / "models--org--empty" / "blobs").mkdir(parents=True)
    assert only_reason(hub) == "no snapshots (the download never completed)"


def test_tokenizer_config_without_a_tokenizer(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.snapshot / "tokenizer.json").unlink()  # what a pull that failed on tokenizer.json leaves
    assert only_reason(hub) == (
        "no tokenizer file beside tokenizer_config.json (tokenizer.json, tokenizer.model, vocab.*, *.tiktoken)"
    )


@pytest.mark.parametrize(
    "vocabulary", ["tokenizer.model", "vocab.txt", "vocab.json", "qwen.tiktoken", "tekken.json"]
)
def test_any_tokenizer_vocabulary_will_do(hub: Path, vocabulary: str) -> None:
    repo = healthy_model(hub)
    os.rename(repo.snapshot / "tokenizer.json", repo.snapshot / vocabulary)
    assert only_reason(hub) is None


def test_no_tokenizer_config_needs_no_tokenizer(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.snapshot / "tokenizer.json").unlink()
    (repo.snapshot / "tokenizer_config.json").unlink()
    assert only_reason(hub) is None


INCOMPLETE = "; resume it with `mlxk pull mlx-community/Tiny-Chat-4bit`"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("model.safetensors", "no weight files"),
        ("config.json", "config.json is missing"),
        (
            "tokenizer.json",
            "no tokenizer file beside tokenizer_config.json (tokenizer.json, tokenizer.model, vocab.*, *.tiktoken)",
        ),
        ("blob of README.md", "README.md is a broken link (its blob is missing)"),
        ("snapshot", "no snapshots (the download never completed)"),
    ],
)
def test_absent_files_beside_partial_downloads_are_an_incomplete_download(
    hub: Path, damage: str, problem: str
) -> None:
    repo = healthy_model(hub)
    if damage == "snapshot":
        shutil.rmtree(repo.repo_dir / "snapshots")
        (repo.repo_dir / "refs" / "main").unlink()
    elif damage.startswith("blob of "):
        repo.blob_of(damage.removeprefix("blob of ")).unlink()
    else:
        (repo.snapshot / damage).unlink()
    for n in range(2):
        (repo.repo_dir / "blobs" / f"{'e' * 64}.{n}.incomplete").write_bytes(b"partial")
    assert (
        only_reason(hub)
        == f"incomplete download: {problem}, 2 partial files in blobs/ (*.incomplete){INCOMPLETE}"
    )


def test_damaged_files_beside_partial_downloads_are_not_an_incomplete_download(hub: Path) -> None:
    repo = healthy_model(hub)
    truncate_blob(repo, "model.safetensors", -3)
    (repo.repo_dir / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"partial")
    reason = only_reason(hub)
    assert reason is not None and reason.startswith("model.safetensors is truncated")


def test_incomplete_blobs_and_stale_locks_are_not_unhealthy(hub: Path) -> None:
    repo = healthy_model(hub)
    (repo.repo_dir / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"partial")
    locks = hub / ".locks" / repo.repo_dir.name
    locks.mkdir(parents=True)
    (locks / ("e" * 64 + ".lock")).write_bytes(b"")
    result = check_health(location(hub))
    entry = result.entries[0]
    assert entry.model.healthy
    assert entry.model.leftovers.incomplete_blobs == (("e" * 64 + ".incomplete", 7),)
    assert entry.stale_locks == ("e" * 64 + ".lock",)
    assert entry.held_locks == ()


def test_held_lock_is_reported_as_held(hub: Path) -> None:
    import fcntl

    repo = healthy_model(hub)
    locks = hub / ".locks" / repo.repo_dir.name
    locks.mkdir(parents=True)
    lock = locks / "x.lock"
    lock.write_bytes(b"")
    with open(lock, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # probe from another process, as a real downloader would be
            os._exit(0 if check_health(location(hub)).entries[0].held_locks == ("x.lock",) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_copy_mode_snapshot(hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=12)
    repo = gen.add_model(hub, "org/copied", files, links=False)
    assert not (repo.snapshot / "model.safetensors").is_symlink()
    assert only_reason(hub) is None
    truncate_blob(repo, "model.safetensors", -3)
    assert "truncated" in (only_reason(hub) or "")


def test_gguf_repo_needs_no_config(hub: Path) -> None:
    gen.add_model(
        hub, "org/Model-GGUF", {"model.Q4_K_M.gguf": b"GGUF" + b"\0" * 60, "README.md": gen.readme(None, ())}
    )
    result = list_models(location(hub))
    model = result.models[0]
    assert model.healthy and model.framework == "GGUF"
    assert not model.runtime_compatible and model.reason is not None and "GGUF" in model.reason


def test_broken_repos_do_not_stop_the_scan(hub: Path) -> None:
    healthy_model(hub, "org/good")
    (hub / "models--org--garbage").write_bytes(b"not a folder")
    os.symlink(hub / "nowhere", hub / "models--org--dangling")
    (hub / "models--a--b--c").mkdir()
    (hub / "datasets--org--data").mkdir()
    (hub / "version.txt").write_text("1")
    result = check_health(location(hub))
    reasons = {e.model.name: e.model.health_reason for e in result.entries}
    assert reasons == {
        "org/good": None,
        "org/garbage": "repo folder models--org--garbage is not a folder",
        "org/dangling": "repo folder models--org--dangling cannot be read: No such file or directory",
        "a/b/c": "repo folder models--a--b--c is not a valid model name",
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders anyway")
def test_unreadable_repo(hub: Path) -> None:  # pragma: no cover - CI runs as root here
    repo = healthy_model(hub)
    os.chmod(repo.repo_dir, 0)
    try:
        assert "cannot be read" in (only_reason(hub) or "")
    finally:
        os.chmod(repo.repo_dir, 0o755)


def test_a_config_too_large_to_be_one(hub: Path) -> None:
    repo = healthy_model(hub)
    replace_blob(repo, "config.json", b'{"model_type": "llama"' + b" " * (4 * 2**20) + b"}")
    assert only_reason(hub) == "config.json is too large to be a model config"


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (b'{"metadata": {"total_size": 1}}', "has no weight_map"),
        (b"[1, 2]", "has no weight_map"),
        (b'{"weight_map": {"a": ["model-00001-of-00002.safetensors"]}}', "has a weight_map value that is not a file name"),
        (b'{"weight_map": {"a": 5}}', "has a weight_map value that is not a file name"),
        (b'{"weight_map": {"a": ""}}', "has a weight_map value that is not a file name"),
    ],
)  # fmt: skip
def test_an_index_that_maps_no_weights_to_files(hub: Path, index: bytes, reason: str) -> None:
    repo = gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=2))
    replace_blob(repo, "model.safetensors.index.json", index)
    assert only_reason(hub) == f"model.safetensors.index.json {reason}"
