"""The accelerated core behind one face: the compiled module or its pure-Python twin, picked once,
at import.

``MLXK_NO_EXTENSIONS=1`` forces the twin (for debugging, and for the twin's half of the test
suite). Everything else reaches the implementation through ``impl`` (and shares the vocabulary of
``codes``, ``records`` and ``memo_format``), never by importing ``mlxk.core._native`` or
``mlxk.core.twin`` directly. ``Core`` is what both offer: mypy checks the twin and the compiled
module's stub (``_native.pyi``) against it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from mlxk.core.records import CheckResult, HashResult, RepoRecord


class HashJob(Protocol):
    """Hashes files on all cores; ``bytes_done`` and ``cancel()`` may be used from other threads."""

    @property
    def bytes_done(self) -> int: ...

    def cancel(self) -> None: ...

    def run(self) -> list[HashResult]: ...


class Core(Protocol):
    """The functions the compiled core and its twin both have, with the same results."""

    def scan_cache(
        self, root: str, repos: Iterable[str] | None = None, memo: bytes = b"", threads: int = 0
    ) -> tuple[list[RepoRecord], list[CheckResult]]: ...

    def check_safetensors_bytes(
        self, data: bytes | bytearray | memoryview, file_size: int | None = None
    ) -> tuple[int, int]: ...

    def check_safetensors_file(self, path: str) -> tuple[int, int]: ...

    def HashJob(self, paths: list[str], algos: list[int], jobs: int = 0) -> HashJob: ...  # a class in both


def implementation(native: bool) -> Core:
    """The requested implementation (ImportError when the native core is not built)."""
    if native:
        from mlxk.core import _native

        return _native
    from mlxk.core import twin

    return twin


def _select() -> tuple[Core, bool]:
    if os.environ.get("MLXK_NO_EXTENSIONS") != "1":
        try:
            return implementation(True), True
        except ImportError:
            pass
    return implementation(False), False


impl, NATIVE = _select()
