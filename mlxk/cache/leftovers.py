"""What interrupted downloads leave behind, and removing it once nobody is using it.

huggingface_hub 2.x downloads each blob to ``blobs/<etag>.<id>.incomplete`` while holding
``.locks/<repo>/<etag>.lock``. A lock nobody holds is stale, and so is an ``.incomplete`` whose
blob's lock nobody holds: the process that wrote it is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlxk.cache.locks import REPO_LOCK_NAME, lock_dir, lock_is_held


@dataclass(frozen=True, slots=True)
class Cleaned:
    incomplete_blobs: int
    lock_files: int


def _etag_of(incomplete: str) -> str:
    # "<etag>.<id>.incomplete" (2.x) or "<etag>.incomplete" (older clients)
    return incomplete.split(".", 1)[0]


def clean_stale_leftovers(hub_root: str, dirname: str) -> Cleaned:
    blobs = os.path.join(hub_root, dirname, "blobs")
    locks = lock_dir(hub_root, dirname)
    removed_blobs = 0
    try:
        names = os.listdir(blobs)
    except FileNotFoundError:
        names = []
    for name in names:
        if name.endswith(".incomplete") and not lock_is_held(os.path.join(locks, _etag_of(name) + ".lock")):
            try:
                os.unlink(os.path.join(blobs, name))
                removed_blobs += 1
            except FileNotFoundError:
                pass
    removed_locks = 0
    try:
        lock_names = os.listdir(locks)
    except FileNotFoundError:
        lock_names = []
    for name in lock_names:
        path = os.path.join(locks, name)
        if name == REPO_LOCK_NAME or not name.endswith(".lock") or not os.path.isfile(path):
            continue
        if not lock_is_held(path):
            try:
                os.unlink(path)
                removed_locks += 1
            except FileNotFoundError:
                pass
    return Cleaned(removed_blobs, removed_locks)
