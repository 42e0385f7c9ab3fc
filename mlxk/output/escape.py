"""Names from the filesystem, made safe to print on a terminal.

Folder and file names in a cache (and text read from its files) may hold control characters:
an ESC or OSC sequence retitles, recolours or clears the terminal, a newline fakes a line of
output, a bidirectional override reorders what is shown. Human output passes every such value
through ``escape_controls`` before it reaches text; JSON output keeps the exact value (orjson
escapes control characters itself).
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, the Unicode line/paragraph separators and the bidirectional
# marks, embeddings, overrides and isolates
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_KEEP_NEWLINES = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``, ``\\n``,
    ``\\u202e``). ``keep_newlines`` leaves line feeds alone, for messages made of several lines
    whose names were escaped before they were joined."""
    pattern = _KEEP_NEWLINES if keep_newlines else _CONTROLS
    if pattern.search(text) is None:  # the common case: nothing to do, no copy
        return text
    return pattern.sub(_escaped, text)
