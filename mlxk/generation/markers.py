"""Finding format markers in streamed text, holding back only what could still become one."""

from __future__ import annotations

import re
from collections.abc import Iterable


class MarkerSet:
    """A fixed set of marker strings, searched in the unconsumed text of a stream.

    `search` finds the first whole marker, or else where a marker may be starting at the end of the
    text: everything before that point is safe to emit, the rest waits for more text (as a stop-string
    matcher does). The cost is one regex search plus a look at the last few characters, whatever the
    length of the output so far.
    """

    __slots__ = ("_firsts", "_pattern", "_prefixes", "_window", "markers")

    def __init__(self, markers: Iterable[str]) -> None:
        unique = sorted(set(markers), key=len, reverse=True)  # the longest wins at a given position
        self.markers: tuple[str, ...] = tuple(unique)
        never = re.compile(r"(?!)")
        self._pattern = re.compile("|".join(re.escape(m) for m in unique)) if unique else never
        self._prefixes = frozenset(m[:k] for m in unique for k in range(1, len(m)))
        # the characters markers start with: text without any of them needs no closer look
        firsts = sorted({m[0] for m in unique})
        self._firsts = re.compile("[" + "".join(re.escape(c) for c in firsts) + "]") if firsts else never
        self._window = max((len(m) for m in unique), default=1) - 1

    def search(self, text: str, start: int = 0) -> tuple[int, str | None]:
        """(i, marker) for the first whole marker at or after `start`; else (i, None), where text[i:] may
        still become a marker (i == len(text) when nothing needs holding back)."""
        first = self._firsts.search(text, start)
        if first is None:
            return len(text), None
        found = self._pattern.search(text, first.start())
        if found is not None:
            i = found.start()
            if text[i:] in self._prefixes:  # also the start of a longer marker: wait
                return i, None
            return i, found.group()
        return self.tail(text, first.start()), None

    def tail(self, text: str, start: int = 0) -> int:
        """Where a possible partial marker starts at the end of `text` (len(text) if none)."""
        n = len(text)
        at = self._firsts.search(text, max(start, n - self._window))
        while at is not None:
            i = at.start()
            if text[i:] in self._prefixes:
                return i
            at = self._firsts.search(text, i + 1)
        return n
