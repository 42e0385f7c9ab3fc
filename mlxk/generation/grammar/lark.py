"""Pieces of llguidance's Lark dialect: literal text split at the model's added tokens, and JSON
values of a schema.

A format marker such as ``<tool_call>`` or ``[TOOL_CALLS]`` is one added token in the model's
vocabulary; the grammar must ask for that token (``<[id]>``), since llguidance never lets text
spell a special token. Where the vocabulary has no such token, the marker is plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# How JSON is written: as json.dumps writes it (", " and ": "), no other whitespace. Weak models
# fill any whitespace a grammar allows with runs of newlines and tabs.
JSON_STYLE: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def styled(schema: Mapping[str, Any] | bool) -> dict[str, Any] | bool:
    """A schema with our JSON style (a schema's own ``x-guidance`` options are replaced: they
    could ask llguidance to ignore what it cannot enforce)."""
    if isinstance(schema, bool):
        return schema
    return {**schema, "x-guidance": JSON_STYLE}


class Lark:
    """Writes grammar text for one model's vocabulary (``added``: added token text -> id)."""

    def __init__(self, added: Mapping[str, int]) -> None:
        self.added = added
        markers = sorted((t for t in added if t), key=len, reverse=True)
        self._markers = re.compile("|".join(re.escape(m) for m in markers)) if markers else None

    def lit(self, text: str) -> str:
        """``text`` as grammar: added tokens as themselves, the rest as quoted text."""
        if not text:
            return '""'
        parts: list[str] = []
        at = 0
        for found in self._markers.finditer(text) if self._markers is not None else ():
            if found.start() > at:
                parts.append(quoted(text[at : found.start()]))
            parts.append(f"<[{self.added[found.group()]}]>")
            at = found.end()
        if at < len(text):
            parts.append(quoted(text[at:]))
        return " ".join(parts)

    def has(self, marker: str) -> bool:
        return marker in self.added


def quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def json_value(schema: Mapping[str, Any] | bool) -> str:
    """One JSON value of ``schema``."""
    return "%json " + json.dumps(styled(schema), ensure_ascii=False)


def parameters(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A tool's parameters; none given means a function without parameters (OpenAI's reading)."""
    return schema if schema is not None else NO_PARAMETERS


def call_object(
    name: str, arguments: Mapping[str, Any], key: str = "arguments", **extra: Any
) -> dict[str, Any]:
    """The schema of ``{"name": NAME, key: {...}}``, the call object of the JSON formats."""
    properties: dict[str, Any] = {"name": {"const": name}, key: dict(arguments), **extra}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
