"""Which bytes of a repo can be checked against a known checksum, and against which.

In the hub cache a blob's name is its checksum: 64 hex digits are the sha256 of the content (LFS
files), 40 are git's blob sha1 (``sha1(b"blob <size>\\0" + content)``). Snapshot files stored as
copies (no symlinks, e.g. on Windows) carry no checksum in their name; huggingface_hub 2.x keeps
the Hub's listing in ``trees/<commit>.json``, which has it. A file with neither is unverifiable.

A blob that is itself a symlink is not a blob: its name vouches for bytes that live elsewhere (or
nowhere), so it is reported as such and never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from mlxk.cache.nofollow import read_without_links
from mlxk.core.codes import ALGO_GIT_SHA1, ALGO_SHA256
from mlxk.core.records import FileEntry, RepoRecord

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ContentItem:
    dirname: str
    path: str  # the file to hash (a blob, or a copy inside a snapshot)
    algo: int  # ALGO_SHA256 or ALGO_GIT_SHA1
    expected: str  # lower-case hex
    label: str  # how a person finds it: "model.safetensors" or "snapshot 1a2b3c4d/model.safetensors"


@dataclass(frozen=True, slots=True)
class RepoContent:
    items: tuple[ContentItem, ...]
    unverifiable: tuple[str, ...]  # labels of files with no checksum to compare with
    linked_blobs: tuple[tuple[str, str], ...] = ()  # (label, blob name) of blobs that are symlinks


def checksum_algo(name: str) -> int | None:
    """The algorithm a blob name implies, or None when the name is not a checksum."""
    if len(name) == 64 and _HEX.issuperset(name):
        return ALGO_SHA256
    if len(name) == 40 and _HEX.issuperset(name):
        return ALGO_GIT_SHA1
    return None


def tree_listing(repo_path: str, commit: str) -> dict[str, str]:
    """path -> checksum from huggingface_hub's ``trees/<commit>.json`` (empty when absent, odd,
    or reached through a link)."""
    try:
        files = json.loads(read_without_links(repo_path, ["trees", f"{commit}.json"], 64 << 20)).get(
            "files", {}
        )
    except (OSError, ValueError, AttributeError):
        return {}
    listing: dict[str, str] = {}
    if isinstance(files, dict):
        for path, entry in files.items():
            if isinstance(entry, dict):
                checksum = entry.get("lfs_sha256") or entry.get("blob_id")
                if isinstance(checksum, str) and checksum_algo(checksum.lower()) is not None:
                    listing[path] = checksum.lower()
    return listing


def _blob_of(target: str | None, depth: int) -> str | None:
    """The blob a snapshot link names (``../../blobs/<name>`` at the right depth), else None."""
    if not target:
        return None
    parts = target.split("/")
    if len(parts) == depth + 4 and parts[: depth + 2] == [".."] * (depth + 2) and parts[-2] == "blobs":
        return parts[-1]
    return None


def repo_content(hub_root: str, rec: RepoRecord, described: str | None) -> RepoContent:
    """Every blob of the repo once (referenced or not), and every copied snapshot file.

    Labels use the described snapshot's paths where it has the file, so a reason reads like the
    files a user knows; other snapshots' files are prefixed with their commit.
    """
    repo = os.path.join(hub_root, rec.dirname)
    labels: dict[str, str] = {}
    items: list[ContentItem] = []
    unverifiable: list[str] = []
    linked: list[tuple[str, str]] = []
    if rec.errno:  # not read (a link leading outside the cache, not a folder, ...): nothing to hash
        return RepoContent((), ())
    snapshots = sorted(rec.snapshots, key=lambda s: s.commit != described)
    for snap in snapshots:
        prefix = "" if snap.commit == described else f"snapshot {snap.commit[:8]}/"
        listing: dict[str, str] | None = None
        for f in snap.files:
            label = prefix + f.path
            if f.is_link:
                blob = _blob_of(f.target, f.path.count("/"))
                if blob is not None:
                    labels.setdefault(blob, label)
                continue
            if not f.exists:
                continue
            if listing is None:
                listing = tree_listing(repo, snap.commit)
            expected = listing.get(f.path)
            algo = checksum_algo(expected) if expected else None
            if expected is None or algo is None:
                unverifiable.append(label)
                continue
            path = os.path.join(repo, "snapshots", snap.commit, *f.path.split("/"))
            items.append(ContentItem(rec.dirname, path, algo, expected, label))
    blobs_dir = os.path.join(repo, "blobs")
    try:
        with os.scandir(blobs_dir) as entries:
            # anything but folders: a FIFO or device where a blob belongs is reported, not skipped
            blobs = sorted((e.name, e.is_symlink()) for e in entries if not e.is_dir(follow_symlinks=False))
    except OSError:
        blobs = []
    for name, is_link in blobs:
        if name.endswith(".incomplete"):
            continue
        label = labels.get(name, f"blobs/{name}")
        if is_link:  # its name vouches for bytes elsewhere: not followed, not a blob
            linked.append((label, name))
            continue
        algo = checksum_algo(name)
        if algo is None:
            unverifiable.append(label)
            continue
        items.append(ContentItem(rec.dirname, os.path.join(blobs_dir, name), algo, name, label))
    return RepoContent(tuple(items), tuple(unverifiable), tuple(linked))


def snapshot_fingerprint(files: list[tuple[str, str | None]]) -> str | None:
    """A stable fingerprint of a snapshot: sha256 over its sorted ``path<TAB>checksum`` lines.

    Equal for two caches holding the same files, whatever their mtimes or paths on disk; None
    when some file has no known checksum."""
    if not files or any(checksum is None for _path, checksum in files):
        return None
    digest = hashlib.sha256()
    for path, checksum in sorted(files):
        digest.update(f"{path}\t{checksum}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def model_fingerprint(
    hub_root: str, dirname: str, commit: str | None, files: tuple[FileEntry, ...]
) -> str | None:
    """The fingerprint of one snapshot: blob names for linked files, the tree listing for copies."""
    if commit is None:
        return None
    listing: dict[str, str] | None = None
    pairs: list[tuple[str, str | None]] = []
    for f in files:
        checksum = _blob_of(f.target, f.path.count("/")) if f.is_link else None
        if not f.is_link:
            if listing is None:
                listing = tree_listing(os.path.join(hub_root, dirname), commit)
            checksum = listing.get(f.path)
        pairs.append((f.path, checksum if checksum and checksum_algo(checksum) else None))
    return snapshot_fingerprint(pairs)
