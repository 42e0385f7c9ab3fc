"""Writing results: JSON envelopes (orjson, one line) and text, to stdout; messages to stderr."""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson

from mlxk.cache.names import display_text
from mlxk.errors import MlxkError
from mlxk.output.escape import escape_controls


def envelope(command: str, data: Any, error: MlxkError | None = None) -> bytes:
    body = {
        "status": "error" if error else "success",
        "command": command,
        "data": data,
        "error": error.to_json() if error else None,
    }
    try:
        return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        # a file or folder name that is not UTF-8 (surrogate escapes): print it with U+FFFD
        return orjson.dumps(_displayable(body), option=orjson.OPT_APPEND_NEWLINE)


def _displayable(value: Any) -> Any:
    if isinstance(value, str):
        return display_text(value)
    if isinstance(value, dict):
        return {display_text(k): _displayable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_displayable(v) for v in value]
    return value


def write_json(command: str, data: Any, error: MlxkError | None = None) -> None:
    out = sys.stdout
    out.flush()
    out.buffer.write(envelope(command, data, error))
    out.buffer.flush()


def write_text(text: str) -> None:
    sys.stdout.write(display_text(text))
    sys.stdout.flush()


def write_error(message: str) -> None:
    """``message`` on stderr; control characters that names brought into it are escaped (line
    feeds stay: some messages have several lines)."""
    sys.stderr.write(f"Error: {escape_controls(display_text(message), keep_newlines=True)}\n")
    sys.stderr.flush()


def color_enabled() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
