"""The trash folder rm deletes through, and the journal that lets a later command finish a killed rm.

It lives at ``<hub>/.locks/.mlxk-trash``: on the cache's filesystem (so moving there is one atomic
rename) and in a place huggingface_hub's cache scan never reads. Its entries:

- ``<repo dirname>.<pid>.<tag>``: a whole repo, renamed there in one step;
- ``snapshot.<pid>.<tag>``: one snapshot's removal. ``journal.json`` (the repo, the snapshots that
  go, the blobs to free) is written and synced before anything is touched, and the snapshot folder
  is renamed in beside it, so whatever step a kill interrupts, the next command knows what is left.

The pid says whose entry it is: a live owner's entries are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from dataclasses import dataclass

from mlxk.cache.names import REPO_PREFIX
from mlxk.cache.nofollow import Folder, opened

TRASH = ".mlxk-trash"
JOURNAL = "journal.json"
SNAPSHOT_ENTRY = "snapshot"  # the prefix of a snapshot entry's name, and the moved folder's name in it
_MAX_JOURNAL_BYTES = 64 << 20
# A blob is named by its checksum: the git blob sha1 (40 hex) or the sha256 of an LFS file (64 hex).
BLOB_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def is_blob_name(name: str) -> bool:
    return BLOB_NAME.fullmatch(name) is not None


def trash_dir(hub_root: str) -> str:
    return os.path.join(hub_root, ".locks", TRASH)


@dataclass(frozen=True, slots=True)
class Journal:
    repo: str  # the repo's folder name (models--org--name)
    commits: tuple[str, ...]  # snapshot folders that go
    blobs: tuple[str, ...]  # blobs to free, unless a remaining snapshot links to them by then


@dataclass(frozen=True, slots=True)
class TrashEntry:
    name: str
    pid: int | None

    @property
    def is_snapshot(self) -> bool:
        return self.name.startswith(SNAPSHOT_ENTRY + ".")

    @property
    def repo(self) -> str | None:
        """The repo a whole-repo entry was (None for snapshot entries and names of unknown shape)."""
        head = self.name.rsplit(".", 2)[0]
        return head if self.pid is not None and head.startswith(REPO_PREFIX) else None

    def owner_alive(self) -> bool:
        if self.pid is None or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # exists, owned by another user
        return True


def parse_entry(name: str) -> TrashEntry:
    parts = name.rsplit(".", 2)
    pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
    return TrashEntry(name, pid)


def new_entry_name(head: str) -> str:
    return f"{head}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def open_trash(hub: Folder, *, create: bool) -> Folder | None:
    """The trash folder (made when ``create``); ``LinkOnPath`` when it or ``.locks`` is a link."""
    if not create:
        locks = hub.child(".locks")
        if locks is None:
            return None
        with locks:
            return locks.child(TRASH)
    with hub.make_child(".locks") as locks:
        return locks.make_child(TRASH)


def make_entry(hub: Folder, head: str) -> tuple[Folder, str]:
    """A new, empty entry folder in the trash (open) and its name. A concurrent sweep may remove the
    empty trash folder between our mkdirs: then try again."""
    name = new_entry_name(head)
    for _attempt in range(100):
        trash = open_trash(hub, create=True)
        assert trash is not None
        with trash:
            try:
                os.mkdir(name, 0o755, dir_fd=trash.fd)
            except FileNotFoundError:
                continue
            found = trash.child(name)
            if found is not None:
                return found, name
    raise FileNotFoundError(f"the trash folder {trash_dir(hub.path)} keeps vanishing")


def list_entries(hub_root: str) -> list[TrashEntry]:
    try:
        with opened(hub_root, ".locks", TRASH) as trash:
            return [] if trash is None else [parse_entry(n) for n in sorted(trash.names())]
    except OSError:  # a link on the way (LinkOnPath) included: nothing there is ours
        return []


def write_journal(entry: Folder, journal: Journal) -> None:
    """Durable before anything is touched: written aside, synced, renamed, the folder synced."""
    body = json.dumps({"repo": journal.repo, "commits": journal.commits, "blobs": journal.blobs})
    tmp = JOURNAL + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o644, dir_fd=entry.fd)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, JOURNAL, src_dir_fd=entry.fd, dst_dir_fd=entry.fd)
    os.fsync(entry.fd)


def _one_component(text: object) -> bool:
    return isinstance(text, str) and text not in ("", ".", "..") and "/" not in text and "\0" not in text


def read_journal(entry: Folder) -> Journal | None:
    """The entry's journal; None when there is none yet (nothing was touched) or it is not ours."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(JOURNAL, flags, dir_fd=entry.fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(_MAX_JOURNAL_BYTES)
    try:
        data = json.loads(raw)
        repo, commits, blobs = data["repo"], data["commits"], data["blobs"]
    except (ValueError, KeyError, TypeError):
        return None
    if (
        _one_component(repo)
        and repo.startswith(REPO_PREFIX)
        and isinstance(commits, list)
        and all(_one_component(c) for c in commits)
        and isinstance(blobs, list)
        and all(isinstance(b, str) and is_blob_name(b) for b in blobs)
    ):
        return Journal(repo, tuple(commits), tuple(blobs))
    return None


def pending_journals(hub_root: str, repo: str) -> list[Journal]:
    """Journals of killed snapshot removals of ``repo`` (their owners are gone): work to finish."""
    found: list[Journal] = []
    for entry in list_entries(hub_root):
        if not entry.is_snapshot or entry.owner_alive():
            continue
        with contextlib.suppress(OSError), opened(hub_root, ".locks", TRASH, entry.name) as folder:
            journal = read_journal(folder) if folder is not None else None
            if journal is not None and journal.repo == repo:
                found.append(journal)
    return found
