"""The download progress bar: bytes, rate and ETA on stderr.

It watches the repo's blob folder rather than hooking huggingface_hub's internal progress bars,
whose names and shapes change between releases: every new blob and every growing
``*.incomplete`` file counts. The total is known from the Hub's file list before the first byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Mapping
from typing import Any

_TICK_S = 0.2


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


def _screen() -> tuple[int, int]:
    """stderr's columns and rows. A terminal that reports no size (a fresh pty, some CI runners)
    counts as 80x24: tqdm would otherwise draw nothing at all."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    fallback = shutil.get_terminal_size((80, 24))
    return size.columns or fallback.columns or 80, size.lines or fallback.lines or 24


class DownloadProgress:
    """A tqdm bar fed by a polling thread; a no-op when not ``enabled``."""

    def __init__(self, label: str, blobs_dir: str, expected: Mapping[str, int], *, enabled: bool) -> None:
        self._blobs_dir = blobs_dir
        self._expected = dict(expected)  # blob name -> size, for blobs this pull must fetch
        self._enabled = enabled and bool(expected)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._label = label
        self._before: frozenset[str] = frozenset()

    def __enter__(self) -> DownloadProgress:
        if not self._enabled:
            return self
        from tqdm.std import tqdm  # type: ignore[import-untyped]

        try:
            self._before = frozenset(os.listdir(self._blobs_dir))
        except FileNotFoundError:
            self._before = frozenset()
        self._bar = tqdm(
            total=sum(self._expected.values()),
            desc=self._label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            ncols=_screen()[0],
            nrows=_screen()[1],
            leave=True,
        )
        self._thread = threading.Thread(target=self._poll, name="mlxk-progress", daemon=True)
        self._thread.start()
        return self

    def _advance(self) -> None:
        done = min(_downloaded(self._blobs_dir, self._before, self._expected), self._bar.total)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def _poll(self) -> None:
        while not self._stop.wait(_TICK_S):
            self._advance()

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._advance()
        self._bar.close()
