"""The offered tools, and typing argument values that a format writes as plain text.

Formats such as Qwen3-Coder's XML or GLM's arg_key/arg_value write every argument value as text; the
client must receive a JSON object whose values have the types the tool's JSON schema declares. A value
is parsed as the declared type when it reads as one (a parameter declared integer gets 3, not "3"), and
stays a string otherwise: a string parameter always stays the text the model wrote.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

Schema = Mapping[str, Any]

_ORDER = ("null", "boolean", "integer", "number", "object", "array")


class Tools:
    """The tools offered with a request, by name (OpenAI's shape, or the bare function objects)."""

    def __init__(self, tools: Iterable[Mapping[str, Any]] | None = None) -> None:
        self.schemas: dict[str, Schema] = {}
        for tool in tools or ():
            function = tool.get("function", tool) if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                parameters = function.get("parameters")
                self.schemas[function["name"]] = parameters if isinstance(parameters, Mapping) else {}

    def __bool__(self) -> bool:
        return bool(self.schemas)

    def offers(self, name: str) -> bool:
        """Whether a call to `name` may be a call: any name when no tools were offered."""
        return not self.schemas or name in self.schemas

    def parameter(self, tool: str, key: str) -> Schema | None:
        properties = self.schemas.get(tool, {}).get("properties")
        if isinstance(properties, Mapping):
            schema = properties.get(key)
            if isinstance(schema, Mapping):
                return schema
        return None


def declared_types(schema: Schema | None) -> list[str]:
    """The JSON types a schema allows, from `type` (a name or a list), `anyOf`/`oneOf` or `enum`."""
    if schema is None:
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            if isinstance(option, Mapping):
                found.extend(t for t in declared_types(option) if t not in found)
    if not found and isinstance(schema.get("enum"), list):
        found = sorted({_json_type(v) for v in schema["enum"]})
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


# NaN and Infinity are not JSON, and would not survive the trip to a client
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    return _DECODER.decode(text)


def _read_as(text: str, kind: str) -> tuple[bool, Any]:
    """(True, value) when `text` reads as a value of JSON type `kind`."""
    stripped = text.strip()
    if kind == "null":
        return (True, None) if stripped in ("null", "None") else (False, None)
    if kind == "boolean":
        lowered = stripped.lower()
        return (True, lowered == "true") if lowered in ("true", "false") else (False, None)
    if kind in ("integer", "number"):
        try:
            value = _loads(stripped)
        except ValueError:
            return False, None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not jsonable(value):
            return False, None  # 1e999 reads as infinity, which JSON cannot carry back
        if kind == "integer" and isinstance(value, float):
            return (True, int(value)) if value.is_integer() else (False, None)
        return True, value
    if kind in ("object", "array"):
        wanted = dict if kind == "object" else list
        try:
            value = _loads(stripped)
        except ValueError:
            try:  # models sometimes write Python literals ({'a': True})
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return False, None
        return (True, value) if isinstance(value, wanted) and jsonable(value) else (False, None)
    return False, None


def jsonable(value: Any) -> bool:
    """Whether a value (say, from a Python literal) has a JSON text: no sets, bytes or infinities."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def type_text(text: str, schema: Schema | None) -> Any:
    """The JSON value for an argument the format wrote as plain text, typed by its parameter schema.

    Without a schema (no tools offered, or a parameter the tool does not declare), text that reads as
    JSON (a number, true/false/null, an object or array) is taken as that value; other text stays text.
    """
    kinds = declared_types(schema)
    if "string" in kinds and len(kinds) == 1:
        return text
    if not kinds:
        try:
            value = _loads(text)
        except ValueError:
            return text
        return text if isinstance(value, str) or not jsonable(value) else value
    for kind in _ORDER:
        if kind in kinds:
            ok, value = _read_as(text, kind)
            if ok:
                return value
    return text


def type_value(value: Any, schema: Schema | None) -> Any:
    """A value the format already typed (a Python or JSON literal): strings become the declared
    non-string type when they read as one; other values stay as written."""
    if isinstance(value, str) and schema is not None:
        kinds = declared_types(schema)
        if kinds and "string" not in kinds:
            return type_text(value, schema)
    return value


def dump_arguments(arguments: Mapping[str, Any]) -> str:
    """The JSON text of converted arguments (compact, non-ASCII kept as is)."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def is_json_object(text: str) -> bool:
    try:
        return isinstance(_loads(text), dict)
    except ValueError:
        return False
