"""An incremental, structural JSON scanner: where a value ends, without parsing it.

Calls whose arguments are JSON stream those arguments as the model writes them. To know where the
arguments end (and that a closing marker inside a string argument is text, not a marker), the scanner
follows strings, escapes and nesting over each new piece of text only. It does not validate: the
finished value is checked once with a real JSON parser.
"""

from __future__ import annotations

import re

_STRING_STOP = re.compile(r'["\\]')
_STRUCTURE = re.compile(r'["{}\[\]:,]')
_NON_SPACE = re.compile(r"\S")

MORE = -1  # the value goes on
INVALID = -2  # the text cannot start a JSON object, array or string


class JsonScanner:
    """Follows one top-level JSON object, array or string through successive pieces of one text.

    `scan(text, start)` is given the whole text seen so far and the index where new text begins; it
    returns the index just past the end of the value, MORE or INVALID. `marks` collects the positions
    of ':' and ',' at nesting depth 1 (the members of a top-level object), for callers that need them:
    each an index into the text of the scan() call that met it.
    """

    __slots__ = ("depth", "escaped", "in_string", "marks", "started")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False
        self.marks: list[int] = []

    def scan(self, text: str, start: int = 0) -> int:
        i = start
        n = len(text)
        if not self.started:
            first = _NON_SPACE.search(text, i)
            if first is None:
                return MORE
            i = first.start()
            if text[i] not in '{["':
                return INVALID
            self.started = True
        while i < n:
            if self.escaped:
                self.escaped = False
                i += 1
                continue
            if self.in_string:
                stop = _STRING_STOP.search(text, i)
                if stop is None:
                    return MORE
                i = stop.start()
                if text[i] == "\\":
                    self.escaped = True
                    i += 1
                    continue
                self.in_string = False
                i += 1
                if self.depth == 0:
                    return i
                continue
            found = _STRUCTURE.search(text, i)
            if found is None:
                return MORE
            i = found.start()
            char = text[i]
            i += 1
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return i
            elif self.depth == 1:
                self.marks.append(i - 1)
        return MORE
