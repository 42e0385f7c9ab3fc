"""Picks the compiled core or its pure-Python twin, once, at import.

``MLXK_NO_EXTENSIONS=1`` forces the twin (for debugging, and for the twin's half of the test
suite). Everything else reaches the implementation through ``impl``, never by importing
``mlxk.core._native`` or ``mlxk.core.twin`` directly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def implementation(native: bool) -> ModuleType:
    """The requested implementation (ImportError when the native core is not built)."""
    return importlib.import_module("mlxk.core._native" if native else "mlxk.core.twin")


def _select() -> tuple[ModuleType, bool]:
    if os.environ.get("MLXK_NO_EXTENSIONS") != "1":
        try:
            return implementation(True), True
        except ImportError:
            pass
    return implementation(False), False


impl, NATIVE = _select()
