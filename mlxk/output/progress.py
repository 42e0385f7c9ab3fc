"""A byte progress bar on stderr (bytes, rate, ETA), fed by polling a counter from a thread.

Polling keeps the work itself free of callbacks: a download or a hashing job only has to expose
how far it got. Drawn with tqdm (a huggingface_hub dependency), imported only when a bar is shown.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from typing import Any

_TICK_S = 0.2


def _screen() -> tuple[int, int]:
    """stderr's columns and rows. A terminal that reports no size (a fresh pty, some CI runners)
    counts as 80x24: tqdm would otherwise draw nothing at all."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    fallback = shutil.get_terminal_size((80, 24))
    return size.columns or fallback.columns or 80, size.lines or fallback.lines or 24


class PolledBar:
    """Shows ``read_done()`` against ``total`` bytes while open; nothing when not ``enabled``."""

    def __init__(self, label: str, total: int, read_done: Callable[[], int], *, enabled: bool = True) -> None:
        self._label = label
        self._total = total
        self._read_done = read_done
        self._enabled = enabled and total > 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None

    def __enter__(self) -> PolledBar:
        if not self._enabled:
            return self
        from tqdm.std import tqdm  # type: ignore[import-untyped]

        columns, rows = _screen()
        self._bar = tqdm(
            total=self._total,
            desc=self._label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            ncols=columns,
            nrows=rows,
            leave=True,
        )
        self._thread = threading.Thread(target=self._poll, name="mlxk-progress", daemon=True)
        self._thread.start()
        return self

    def _advance(self) -> None:
        done = min(self._read_done(), self._total)
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
