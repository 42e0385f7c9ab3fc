"""Picks the compiled core or its pure-Python twin, once, at import.

``MLXK_NO_EXTENSIONS=1`` forces the twin (for debugging, and for the twin's half of the test
suite). Everything else imports the implementations from here, never from the modules directly.
"""

from __future__ import annotations

import os
from types import ModuleType

NATIVE: bool
impl: ModuleType

if os.environ.get("MLXK_NO_EXTENSIONS") == "1":
    NATIVE = False
else:
    try:
        from mlxk import _native as _compiled
    except ImportError:
        NATIVE = False
    else:
        NATIVE = True

if NATIVE:
    impl = _compiled
else:
    from mlxk import _twin as _python

    impl = _python


def implementation(native: bool) -> ModuleType:
    """The requested implementation, for tests and benchmarks that compare the two."""
    if native:
        from mlxk import _native

        return _native
    from mlxk import _twin

    return _twin
