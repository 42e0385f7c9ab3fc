"""Writing ``refs/<revision>``: atomically, so a reader never sees a half-written commit."""

from __future__ import annotations

import os
import uuid

from mlxk.cache.names import validate_revision
from mlxk.cache.nofollow import read_without_links


def read_ref(repo_path: str, revision: str) -> str | None:
    """The commit ``refs/<revision>`` names; None when it is absent, unreadable or a link (a ref
    that is a link is never read: it may lead anywhere)."""
    try:
        data = read_without_links(repo_path, ["refs", *validate_revision(revision).split("/")], 256)
    except OSError:
        return None
    return data.decode("ascii", "replace").strip()


def write_ref(repo_path: str, revision: str, commit: str) -> None:
    path = os.path.join(repo_path, "refs", *validate_revision(revision).split("/"))
    if read_ref(repo_path, revision) == commit:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(commit)
    os.replace(tmp, path)
