"""CPU seconds used by a process tree (a server and its workers) and by this process.

On a busy machine a process's wall-clock speed says how much of the CPU it was given; the CPU
time it used per unit of work says how much work that unit took, which other load barely moves.
Linux only (``/proc``): elsewhere ``available()`` is False.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return Path("/proc/self/task").is_dir()


def tree_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants still running (a server that
    runs its app in a worker process counts the worker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += (task / "children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # gone meanwhile
    return total + sum(tree_seconds(int(child)) for child in children)


def own_seconds() -> float:
    """User + system CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
