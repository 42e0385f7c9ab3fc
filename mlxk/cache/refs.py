"""Writing ``refs/<revision>``: atomically, so a reader never sees a half-written commit."""

from __future__ import annotations

import os
import uuid

from mlxk.cache.names import validate_revision


def read_ref(repo_path: str, revision: str) -> str | None:
    try:
        with open(os.path.join(repo_path, "refs", *validate_revision(revision).split("/")), "rb") as fh:
            return fh.read(256).decode("ascii", "replace").strip()
    except OSError:
        return None


def write_ref(repo_path: str, revision: str, commit: str) -> None:
    path = os.path.join(repo_path, "refs", *validate_revision(revision).split("/"))
    if read_ref(repo_path, revision) == commit:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(commit)
    os.replace(tmp, path)
