"""Stop strings on a stream of text pieces: a stop string may span several pieces (tokens), so a
tail that could still become one is held back until the next piece settles it. Nothing of a stop
string is ever emitted."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> str:
        """The text that is safe to emit now; sets ``stopped`` when a stop string completed."""
        if not self._stops:
            return text
        buffer = self._held + text
        # the match that ends first (then starts first): what feeding piece by piece would meet first,
        # so the result does not depend on how the text was split into tokens
        found = [(i + len(s), i, s) for s in self._stops if (i := buffer.find(s)) >= 0]
        if found:
            _end, cut, self.matched = min(found)
            self._held = ""
            self.stopped = True
            return buffer[:cut]
        keep = self._partial_tail(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """At the end of the stream: what was held back was no stop string after all."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that is the start of some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
