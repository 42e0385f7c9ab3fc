"""How far a download got, for the progress bar (drawn by ``mlxk.output.progress``): it watches
the repo's blob folder rather than hooking huggingface_hub's internal progress bars, whose names
and shapes change between releases. Every new blob and every growing ``*.incomplete`` file counts;
the total is known from the Hub's file list before the first byte.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping


def _downloaded(blobs_dir: str, before: frozenset[str], expected: Mapping[str, int]) -> int:
    total = 0
    try:
        with os.scandir(blobs_dir) as entries:
            for entry in entries:
                if entry.name in before:
                    continue
                if entry.name in expected:
                    total += expected[entry.name]
                elif entry.name.endswith(".incomplete"):
                    with contextlib.suppress(OSError):  # renamed into place between listing and stat
                        total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return total


def download_meter(blobs_dir: str, expected: Mapping[str, int]) -> tuple[int, Callable[[], int]]:
    """For fetching ``expected`` (blob name -> size) into ``blobs_dir``: the bytes to fetch, and a
    function that says how many of them are there now."""
    try:
        before = frozenset(os.listdir(blobs_dir))
    except FileNotFoundError:
        before = frozenset()
    wanted = dict(expected)
    return sum(wanted.values()), lambda: _downloaded(blobs_dir, before, wanted)
