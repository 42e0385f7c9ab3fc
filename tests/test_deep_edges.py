"""``health --deep`` and ``show``'s fingerprint (mlxk.cache.content) on the caches the main tests of
tests/test_deep.py leave: tree listings with odd entries, copies without a blobs folder, partial
downloads beside the blobs, repos that cannot be read, repos without a snapshot (both cores)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
from tests.test_deep import NAME, deep, flip_last_byte, model, reasons

pytestmark = pytest.mark.usefixtures("core")


def _listing(files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        path: {"size": len(content), "blob_id": gen.git_blob_sha1(content)}
        | ({"lfs_sha256": hashlib.sha256(content).hexdigest()} if path.endswith(".safetensors") else {})
        for path, content in files.items()
        if isinstance(content, bytes)
    }


def _copies(hub: Path, listing_files: Any) -> gen.CachedRepo:
    repo = gen.add_model(hub, NAME, gen.mlx_chat_model_files(tensors=12), links=False)
    (repo.repo_dir / "trees").mkdir()
    (repo.repo_dir / "trees" / f"{repo.commit}.json").write_text(
        json.dumps({"format_version": 1, "files": listing_files})
    )
    return repo


def test_listing_entries_without_a_usable_checksum_leave_those_files_unverified(cli: Any, hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=12)
    listing: dict[str, Any] = _listing(files)
    listing["README.md"] = "not an object"
    listing["config.json"] = {"size": 1, "blob_id": "not-hex"}
    listing["model.safetensors"]["lfs_sha256"] = "ABC"  # not 64 hex digits: no checksum
    repo = _copies(hub, listing)
    reason = reasons(deep(cli))[NAME]
    assert "3 files without a checksum not hashed" in reason
    # upper-case checksums in the listing count as theirs: every file verified, all healthy
    upper = {
        p: {k: v.upper() if isinstance(v, str) else v for k, v in e.items()}
        for p, e in _listing(files).items()
    }
    (repo.repo_dir / "trees" / f"{repo.commit}.json").write_text(json.dumps({"files": upper}))
    assert reasons(deep(cli, "--no-memo"))[NAME] == "healthy"


def test_a_listing_whose_files_are_not_an_object_is_no_listing(cli: Any, hub: Path) -> None:
    _copies(hub, ["model.safetensors"])
    assert "6 files without a checksum not hashed" in reasons(deep(cli))[NAME]


def test_copies_without_a_blobs_folder_are_checked_against_the_listing(cli: Any, hub: Path) -> None:
    files = gen.mlx_chat_model_files(tensors=12)
    repo = _copies(hub, _listing(files))
    (repo.repo_dir / "blobs").rmdir()
    assert reasons(deep(cli))[NAME] == "healthy"
    flip_last_byte(repo.snapshot / "README.md")  # still valid text: only deep sees it
    assert reasons(deep(cli, "--no-memo"))[NAME].startswith("README.md: content does not match its ")


def test_a_partial_download_beside_the_blobs_is_not_hashed(cli: Any, hub: Path) -> None:
    repo = model(hub)
    partial = repo.repo_dir / "blobs" / ("e" * 64 + ".incomplete")
    partial.write_bytes(b"half of a file")  # its name is no checksum of these bytes
    plain = reasons(cli("health", "--json").json()["data"])[NAME]
    assert reasons(deep(cli))[NAME] == plain  # deep adds no content verdict for it
    assert "content does not match" not in plain


def test_a_repo_that_cannot_be_read_gets_the_scans_verdict(cli: Any, hub: Path, tmp_path: Path) -> None:
    model(hub)
    outside = tmp_path / "outside"
    gen.add_model(outside, "org/Linked", gen.mlx_chat_model_files(tensors=12), real_hash=True)
    os.symlink(outside / "models--org--Linked", hub / "models--org--Linked")
    plain = cli("health", "--json").json()["data"]
    data = deep(cli)
    assert reasons(data) == reasons(plain)
    assert reasons(data)[NAME] == "healthy" and reasons(data)["org/Linked"] != "healthy"
    assert data["summary"]["unhealthy_count"] == 1


def test_a_repo_without_a_snapshot_has_no_fingerprint(cli: Any, hub: Path) -> None:
    repo = model(hub)
    result = cli("show", NAME, "--json")
    assert len(result.json()["data"]["fingerprint"]) == 64
    (repo.repo_dir / "refs" / "main").unlink()
    for link in repo.snapshot.iterdir():
        link.unlink()
    repo.snapshot.rmdir()
    result = cli("show", NAME, "--json")
    data = result.json()
    assert result.exit_code == 0, data
    assert data["data"]["fingerprint"] is None


def test_a_snapshot_link_that_names_no_blob_leaves_no_fingerprint(cli: Any, hub: Path) -> None:
    """A link to a sibling file (not ``../../blobs/<checksum>``) carries no checksum of its own."""
    repo = model(hub)
    assert len(cli("show", NAME, "--json").json()["data"]["fingerprint"]) == 64
    os.symlink("config.json", repo.snapshot / "alias.json")
    data = cli("show", NAME, "--json").json()["data"]
    assert data["fingerprint"] is None
    assert reasons(deep(cli))[NAME] == "healthy"  # the blob behind config.json is still hashed once
