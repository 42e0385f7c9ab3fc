"""Sizes and ages as people read them."""

from __future__ import annotations

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_size(num_bytes: int) -> str:
    """Decimal units, like the Hub shows them: 1234567 -> '1.2 MB'."""
    if num_bytes < 1000:
        return f"{int(num_bytes)} B"
    value = num_bytes / 1000
    for unit in _UNITS[1:-1]:
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} {_UNITS[-1]}"  # the largest unit takes any size


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for limit, divisor, unit in (
        (60, 1, "second"),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (86400 * 30, 86400, "day"),
        (86400 * 365, 86400 * 30, "month"),
    ):
        if seconds < limit:
            count = int(seconds // divisor)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    years = int(seconds // (86400 * 365))
    return f"{years} year{'s' if years != 1 else ''} ago"
