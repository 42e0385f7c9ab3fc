"""Picks the compiled core or its pure-Python twin, once, at import.

``MLXK_NO_EXTENSIONS=1`` forces the twin (for debugging, and for the twin's half of the test
suite). Everything else reaches the implementation through ``impl``, never by importing
``mlxk._native`` or ``mlxk._twin`` directly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def implementation(native: bool) -> ModuleType:
    """The requested implementation (ImportError when the native core is not built)."""
    return importlib.import_module("mlxk._native" if native else "mlxk._twin")


def _select() -> tuple[ModuleType, bool]:
    if os.environ.get("MLXK_NO_EXTENSIONS") != "1":
        try:
            return implementation(True), True
        except ImportError:
            pass
    return implementation(False), False


impl, NATIVE = _select()
