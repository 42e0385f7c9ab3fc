"""How many connections the server holds, and how long an idle or slow one may stay.

Every open connection holds a file descriptor and a place under the connection limit until it
closes, so connections that send nothing (idle keep-alive, headers or a body that trickle in) are
closed after a while, and the limit stays below the descriptor limit so that a flood of them never
leaves the process without descriptors for its own files (a model to load, the cache to scan).
"""

from __future__ import annotations

import contextlib

IDLE_TIMEOUT_S = 10  # an idle keep-alive connection, or request headers still incomplete
BODY_TIMEOUT_S = 30  # a request body, from its first byte to its last
MAX_CONNECTIONS = 4096
SPARE_DESCRIPTORS = 256  # kept for the process's own files whatever the clients do
WANTED_DESCRIPTORS = 65536


def raise_descriptor_limit(wanted: int = WANTED_DESCRIPTORS, hard_before: int | None = None) -> int:
    """Raise the soft limit on open files toward ``wanted`` (never above the hard limit); returns
    the soft limit in force. Many systems start processes at 1,024 or 256. ``hard_before``: a hard
    limit that something lowered since (given back where the process may raise it: as root)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system (Windows)
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard_before is not None and hard != hard_before:
        with contextlib.suppress(ValueError, OSError):  # not allowed: the lower one stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard_before))
            hard = hard_before
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # macOS refuses values above kern.maxfilesperproc
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return wanted if soft == resource.RLIM_INFINITY else int(soft)


def connection_limit(descriptors: int) -> int:
    """Connections served at once: below the descriptor limit, with room for the process's files."""
    return max(16, min(MAX_CONNECTIONS, descriptors - SPARE_DESCRIPTORS))
