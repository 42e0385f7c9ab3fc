"""What ``verify_snapshot`` says about a downloaded snapshot that does not match the Hub's promise,
and what ``discard`` then removes (so that the next pull fetches the file again).

``mlxk pull`` runs both after huggingface_hub finishes; huggingface_hub itself writes well-formed
trees, so the damaged trees are built here by hand, one kind of damage per file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mlxk.cache.verify import ExpectedFile, discard, verify_snapshot

COMMIT = "a" * 40


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_repo(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo = tmp_path / "models--org--m"
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / COMMIT
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    return repo, blobs, snapshot


def link(snapshot: Path, name: str, target: str) -> None:
    os.symlink(target, snapshot / name)


def test_each_kind_of_damage_is_named(tmp_path: Path) -> None:
    repo, blobs, snapshot = make_repo(tmp_path)
    good, other = b'{"a": 1}\n', b"other bytes"
    (blobs / git_sha1(good)).write_bytes(good)
    (blobs / git_sha1(other)).write_bytes(other)
    outside = tmp_path / "elsewhere"
    outside.write_bytes(good)
    link(snapshot, "ok.json", f"../../blobs/{git_sha1(good)}")
    link(snapshot, "outside.json", str(outside))  # a link leaving the repo's blobs
    link(snapshot, "swapped.json", f"../../blobs/{git_sha1(other)}")  # the blob of another file
    link(snapshot, "dangling.json", f"../../blobs/{git_sha1(b'never arrived')}")
    (snapshot / "copy.json").write_bytes(good)  # a plain file (a copy, not a link): hashed as it is
    (snapshot / "short.json").write_bytes(good[:-1])
    weights = b"\x00" * 64
    (blobs / sha256(weights)).write_bytes(weights[:-1] + b"\x01")  # right size, wrong bytes
    link(snapshot, "model.safetensors", f"../../blobs/{sha256(weights)}")

    expected = [
        ExpectedFile("ok.json", len(good), git_sha1(good), False),
        ExpectedFile("missing.json", 3, git_sha1(b"abc"), False),
        ExpectedFile("outside.json", len(good), git_sha1(good), False),
        ExpectedFile("swapped.json", len(good), git_sha1(good), False),
        ExpectedFile("dangling.json", 13, git_sha1(b"never arrived"), False),
        ExpectedFile("copy.json", len(good), git_sha1(good), False),
        ExpectedFile("short.json", len(good), git_sha1(good), False),
        ExpectedFile("model.safetensors", len(weights), sha256(weights), True),
    ]
    problems = {p.path: p for p in verify_snapshot(str(repo), COMMIT, expected)}

    assert set(problems) == {
        "missing.json",
        "outside.json",
        "swapped.json",
        "dangling.json",
        "short.json",
        "model.safetensors",
    }
    assert problems["missing.json"].problem == "missing"
    assert problems["outside.json"].problem == "links outside the repo's blobs"
    assert problems["swapped.json"].problem == f"stored as blob {git_sha1(other)}, expected {git_sha1(good)}"
    assert problems["dangling.json"].problem == "missing blob"
    assert problems["short.json"].problem == f"size {len(good) - 1}, expected {len(good)}"
    assert problems["model.safetensors"].problem.startswith("sha256 ")
    # only a blob known to hold wrong bytes is named for removal; a link to another file's blob is not
    assert problems["swapped.json"].blob_path is None and problems["outside.json"].blob_path is None
    assert problems["short.json"].blob_path == str(snapshot / "short.json")

    discard(str(repo), COMMIT, list(problems.values()))

    left = sorted(p.name for p in snapshot.iterdir())
    assert left == ["copy.json", "ok.json"]
    # the other file's blob and the file outside the cache stay; the wrong-bytes blob goes
    assert (blobs / git_sha1(other)).exists() and outside.exists()
    assert not (blobs / sha256(weights)).exists()
    assert verify_snapshot(str(repo), COMMIT, [expected[0], expected[5]]) == []
