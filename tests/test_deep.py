"""``health --deep``: every byte checked against the checksum its blob name carries (both cores)."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo

pytestmark = pytest.mark.usefixtures("core")
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())
NAME = "mlx-community/Tiny-Chat-4bit"


def model(hub: Path, name: str = NAME, **kwargs: Any) -> CachedRepo:
    return gen.add_model(hub, name, gen.mlx_chat_model_files(tensors=12), real_hash=True, **kwargs)


def flip_last_byte(path: Path) -> None:
    """Same size, same mtime: only the content changed, as bit rot or a bad sync would do it."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def deep(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("health", "--deep", "--json", *args)
    envelope = result.json()
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    data: dict[str, Any] = envelope["data"]
    return data


def reasons(data: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["reason"] for e in data["healthy"] + data["unhealthy"]}


def test_an_intact_cache_is_healthy(cli: Any, hub: Path) -> None:
    model(hub)
    model(hub, "org/Other")
    data = deep(cli)
    assert data["summary"] == {"total": 2, "healthy_count": 2, "unhealthy_count": 0}


@pytest.mark.parametrize("file", ["model.safetensors", "README.md"])  # a sha256 blob and a git-sha1 blob
def test_a_flipped_byte_is_found_that_plain_health_misses(cli: Any, hub: Path, file: str) -> None:
    repo = model(hub)
    flip_last_byte(repo.blob_of(file))
    plain = cli("health", "--json").json()["data"]
    assert plain["summary"]["unhealthy_count"] == 0  # sizes and headers are all still right
    data = deep(cli)
    assert data["summary"]["unhealthy_count"] == 1
    reason = reasons(data)[NAME]
    assert reason.startswith(f"{file}: content does not match its ")
    assert ("sha256" in reason) == file.endswith(".safetensors")
    assert cli("health", "--deep", "--strict", "-q").exit_code == 1


def test_only_the_matching_models_are_hashed(cli: Any, hub: Path) -> None:
    flip_last_byte(model(hub, "org/broken").blob_of("model.safetensors"))
    model(hub)
    data = deep(cli, "tiny")
    assert [e["name"] for e in data["healthy"]] == [NAME] and data["unhealthy"] == []


def test_the_memo_spares_unchanged_files_and_catches_changed_ones(cli: Any, hub: Path) -> None:
    repo = model(hub)
    first = cli("health", "--deep")
    assert "6 files hashed" in first.stdout
    second = cli("health", "--deep")
    assert "0 files hashed" in second.stdout and "6 unchanged since verified" in second.stdout
    blob = repo.blob_of("model.safetensors")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))  # a new mtime: the memo no longer answers for it
    third = cli("health", "--deep")
    assert "1 files hashed" in third.stdout and "BAD" in third.stdout
    assert "6 files hashed" in cli("health", "--deep", "--no-memo").stdout


def test_a_remembered_mismatch_stays_a_mismatch(cli: Any, hub: Path) -> None:
    flip_last_byte(model(hub).blob_of("model.safetensors"))
    assert deep(cli)["summary"]["unhealthy_count"] == 1
    assert deep(cli)["summary"]["unhealthy_count"] == 1  # answered by the memo this time


def test_the_memo_lives_outside_the_hub_folder(cli: Any, hub: Path, tmp_path: Path) -> None:
    from huggingface_hub import scan_cache_dir

    model(hub)
    deep(cli)
    assert sorted(p.name for p in hub.iterdir()) == ["models--mlx-community--Tiny-Chat-4bit"]
    assert list((tmp_path / "xdg" / "mlxk").glob("memo-*.bin"))
    assert scan_cache_dir(hub).warnings == []


def test_copies_are_checked_against_the_tree_listing(cli: Any, hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=12)
    repo = gen.add_model(hub, NAME, files, links=False)
    no_listing = deep(cli)
    assert "6 files without a checksum not hashed" in reasons(no_listing)[NAME]
    listing = {
        path: {"size": len(content), "blob_id": gen.git_blob_sha1(content)}
        | ({"lfs_sha256": hashlib.sha256(content).hexdigest()} if path.endswith(".safetensors") else {})
        for path, content in files.items()
        if isinstance(content, bytes)
    }
    (repo.repo_dir / "trees").mkdir()
    (repo.repo_dir / "trees" / f"{repo.commit}.json").write_text(
        json.dumps({"format_version": 1, "files": listing})
    )
    assert reasons(deep(cli))[NAME] == "healthy"
    flip_last_byte(repo.snapshot / "model.safetensors")
    # size and mtime unchanged: only --no-memo reads it again (what to run after a disk problem)
    assert reasons(deep(cli))[NAME] == "healthy"
    assert reasons(deep(cli, "--no-memo"))[NAME].startswith("model.safetensors: content does not match")


def test_blobs_of_other_snapshots_and_loose_blobs_are_checked(cli: Any, hub: Path) -> None:
    old = gen.add_model(hub, NAME, {"config.json": gen.llama_config(), "model.safetensors": gen.safetensors_file(gen.tensor_entries(2))}, commit="a" * 40, ref=None, real_hash=True)  # fmt: skip
    model(hub)
    flip_last_byte(old.blob_of("model.safetensors"))
    assert (
        reasons(deep(cli))[NAME]
        == f"snapshot {'a' * 8}/model.safetensors: " + reasons(deep(cli))[NAME].split(": ", 1)[1]
    )
    loose = old.repo_dir / "blobs" / ("f" * 64)
    loose.write_bytes(b"not what the name says")
    os.unlink(old.snapshot / "model.safetensors")  # its blob is now referenced by nothing
    assert reasons(deep(cli))[NAME].startswith(("blobs/", f"snapshot {'a' * 8}/"))


def test_a_blob_that_cannot_be_read_is_reported_not_waited_for(cli: Any, hub: Path) -> None:
    repo = model(hub)
    readme = repo.blob_of("README.md")
    readme.unlink()
    os.mkfifo(readme)  # a FIFO where a blob should be: opening it for reading would block
    reason = reasons(deep(cli))[NAME]
    assert "README.md" in reason


@pytest.mark.parametrize("jobs", ["0", "x", "2000", "-1"])
def test_jobs_must_be_a_sensible_number(cli: Any, hub: Path, jobs: str) -> None:
    model(hub)
    result = cli("health", "--deep", "--jobs", jobs, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (1, "validation_error")


def test_jobs_needs_deep(cli: Any, hub: Path) -> None:
    assert cli("health", "--jobs", "2", "--json").json()["error"]["type"] == "validation_error"


def test_jobs_one_gives_the_same_verdicts(cli: Any, hub: Path) -> None:
    flip_last_byte(model(hub).blob_of("model.safetensors"))
    model(hub, "org/Other")
    assert deep(cli, "--jobs", "1", "--no-memo") == deep(cli, "--jobs", "3", "--no-memo")


def test_progress_on_a_terminal(hub: Path) -> None:
    gen.add_model(
        hub, NAME, {**gen.mlx_chat_model_files(tensors=12), "big.bin": os.urandom(8 << 20)}, real_hash=True
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "health", "--deep", "--no-memo"], stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    seen = b""
    while True:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait() == 0
    text = seen.decode(errors="replace")
    assert "verifying" in text and "B/s" in text and "100%" in text


def test_show_fingerprint_depends_on_content_only(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fingerprint(hub: Path) -> Any:
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
        return cli("show", NAME, "--json").json()["data"]["fingerprint"]

    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    model(one)
    model(two, mtime=gen.OLD_MTIME + 12345)
    files = gen.mlx_chat_model_files(tensors=12)
    files["README.md"] = b"# another readme\n"
    gen.add_model(other, NAME, files, real_hash=True)
    assert fingerprint(one) == fingerprint(two) != fingerprint(other)
    assert len(fingerprint(one)) == 64
    copies = tmp_path / "copies"
    gen.add_model(copies, NAME, gen.mlx_chat_model_files(tensors=12), links=False)
    assert fingerprint(copies) is None  # no checksums known for copies without a tree listing


@pytest.mark.parametrize("target", ["modified copy", "unrelated file", "/dev/zero"])
@pytest.mark.parametrize("file", ["model.safetensors", "README.md"])
def test_a_blob_that_is_a_symlink_is_unhealthy_not_trusted(
    cli: Any, hub: Path, tmp_path: Path, target: str, file: str
) -> None:
    """The blob's name is its checksum; a link there vouches for bytes elsewhere, never hashed."""
    repo = model(hub)
    blob = repo.blob_of(file)
    if target == "modified copy":
        copy = blob.parent / "copy"
        copy.write_bytes(blob.read_bytes() + b"!")
        where = str(copy)
    elif target == "unrelated file":
        where = str(tmp_path / "unrelated")
        Path(where).write_bytes(b"unrelated")
    else:
        where = target
    blob.unlink()
    os.symlink(where, blob)
    result = cli("health", "--deep", "--strict", "--json")
    assert result.exit_code == 1
    reason = reasons(result.json()["data"])[NAME]
    assert reason == f"{file}: its blob {blob.name} is a symlink, not a file; not followed"
    assert cli("health", "--strict").exit_code == 1  # the scan alone sees it too


def test_a_loose_blob_that_is_a_symlink_is_found_by_deep(cli: Any, hub: Path, tmp_path: Path) -> None:
    model(hub)
    loose = repo_blobs(hub) / ("c" * 64)
    os.symlink(tmp_path, loose)  # not used by any snapshot: only --deep looks at every blob
    assert cli("health", "--strict").exit_code == 0
    result = cli("health", "--deep", "--strict", "--json")
    assert result.exit_code == 1
    assert (
        reasons(result.json()["data"])[NAME]
        == f"blobs/{loose.name}: its blob {loose.name} is a symlink, not a file; not followed"
    )


def repo_blobs(hub: Path, name: str = NAME) -> Path:
    return hub / ("models--" + name.replace("/", "--")) / "blobs"
