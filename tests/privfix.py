"""Running the CLI as a user would, without root's power over files, where the tests run as root.

Root ignores file permissions (the capabilities CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and
CAP_FOWNER), so a folder made read-only or unreadable means nothing to it. As root, the child is
started by util-linux's ``setpriv`` without those capabilities: it is still uid 0 (it can run the
interpreter under /root) but meets permissions as any user does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache

import pytest

DROPPED = "-dac_override,-dac_read_search,-fowner"


def as_a_user() -> list[str]:
    """The prefix of a command that runs it without root's power over files ([] when the tests do
    not run as root). Skips the test where that cannot be had."""
    return without(DROPPED)


def without(capabilities: str) -> list[str]:
    """The prefix of a command that runs it, as root, without ``capabilities`` (setpriv's
    ``-cap,-cap`` list); [] when the tests do not run as root. Skips where that cannot be had."""
    if os.geteuid() != 0:
        return []
    prefix = _setpriv_prefix(capabilities)
    if prefix is None:
        pytest.skip("as root, dropping a capability needs util-linux's setpriv, which is missing")
    if not prefix:
        pytest.skip("as root without CAP_SETPCAP (a restricted container): setpriv cannot drop capabilities")
    return prefix


@cache
def _setpriv_prefix(capabilities: str) -> list[str] | None:
    """setpriv's prefix; [] where it cannot drop capabilities here (tried once); None without it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", capabilities, "--inh-caps", capabilities]
    tried = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    return prefix if tried.returncode == 0 else []


def mlxk_as_a_user(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mlxk ARGS`` in this environment (the cache and core of the test), as a user."""
    return subprocess.run(
        [*as_a_user(), sys.executable, "-m", "mlxk", *args], capture_output=True, text=True, timeout=120
    )
