"""Where the native ``HashJob`` (``mlxk.core._native``) finds OpenSSL's libcrypto, loaded at run time.

The first choice is the very library Python's own ``_hashlib`` has loaded: dlopen() of it just
returns the handle that is already there (same code, same SHA-NI / ARMv8 paths, no second
OpenSSL initialised). Then whatever ``ctypes.util.find_library("crypto")`` names. With none that
loads, the native ``HashJob`` runs the pure-Python twin (``mlxk.core.twin.hashing``) instead.

``MLXK_LIBCRYPTO`` overrides the search: a path (or soname) to load, or empty for none.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import os
import sys

ENV = "MLXK_LIBCRYPTO"


def libcrypto_candidates() -> list[str]:
    """Libraries to try, best first (the caller dlopens them and keeps the first that works)."""
    override = os.environ.get(ENV)
    if override is not None:
        return [override] if override else []
    with contextlib.suppress(ImportError):
        importlib.import_module("_hashlib")  # maps Python's libcrypto, if it links one
    found: list[str] = []
    if sys.platform.startswith("linux"):
        found += _mapped_linux()
    elif sys.platform == "darwin":  # pragma: no cover - macOS
        found += _loaded_darwin()
    name = ctypes.util.find_library("crypto")
    if name:
        found.append(name)
    if sys.platform == "darwin":  # pragma: no cover - macOS
        # /usr/lib/libcrypto*.dylib is Apple's private LibreSSL: loading it unversioned aborts
        found = [p for p in found if not p.startswith("/usr/lib/") and "/" in p]
    return list(dict.fromkeys(found))


def _is_libcrypto(path: str) -> bool:
    return os.path.basename(path).startswith("libcrypto")


def _mapped_linux() -> list[str]:
    """Files named libcrypto* mapped into this process, in map order."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(maxsplit=5)
                path = fields[5] if len(fields) == 6 else ""
                if path.startswith("/") and _is_libcrypto(path) and not path.endswith(" (deleted)"):
                    paths.append(path)
    except OSError:
        pass
    return paths


def _loaded_darwin() -> list[str]:  # pragma: no cover - macOS only (dyld); CI's coverage runs on Linux
    """Images named libcrypto* that dyld has loaded into this process."""
    paths: list[str] = []
    try:
        libc = ctypes.CDLL(None)
        count = libc["_dyld_image_count"]
        count.restype = ctypes.c_uint32
        count.argtypes = []
        image_name = libc["_dyld_get_image_name"]
        image_name.restype = ctypes.c_char_p
        image_name.argtypes = [ctypes.c_uint32]
        for i in range(count()):
            raw = image_name(i)
            if raw:
                path = os.fsdecode(raw)
                if _is_libcrypto(path):
                    paths.append(path)
    except (OSError, AttributeError):
        pass
    return paths
