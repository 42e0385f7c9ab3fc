"""Reading request bodies for the protocol adapters (OpenAI, Responses, Messages): exact JSON types (``true`` is not
a number, ``"10"`` is not an integer), fields refused by name when a protocol's endpoint neither
implements them nor may ignore them, each refusal a 400 naming the field (``param``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from mlxk.server.errors import HTTPError, invalid

# field -> (which values have no effect here, what the field is for)
NoEffect = Mapping[str, tuple[Callable[[Any], bool], str]]


def check_known(
    body: Mapping[str, Any], implemented: frozenset[str], no_effect: NoEffect, where: str = ""
) -> None:
    """Raises HTTPError for a field that is neither implemented nor one that may be ignored (or one
    whose value would ask for an effect); ``where`` prefixes the names of nested fields."""
    for name in body:
        if name in implemented:
            continue
        param = f"{where}.{name}" if where else name
        known = no_effect.get(name)
        if known is None:
            raise HTTPError(
                400, f"'{param}' is not supported by this server", param=param, code="unsupported_field"
            )
        accepts, meaning = known
        if not accepts(body[name]):
            raise HTTPError(
                400, f"'{param}' is accepted only as {meaning}", param=param, code="unsupported_value"
            )


def number(value: Any, param: str) -> float | None:
    """A JSON number (not ``true``, not a string), or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(param, f"'{param}' must be a number")
    return float(value)


def integer(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(param, f"'{param}' must be an integer")
    return value


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid(param, f"'{param}' must be a string")
    return value


def boolean(value: Any, param: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(param, f"'{param}' must be true or false")
    return value


def obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(param, f"'{param}' must be an object")
    return value


def array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(param, f"'{param}' must be a list")
    return value


def in_range(value: float | None, param: str, low: float, high: float) -> float | None:
    """A protocol's own bound, where it is narrower than the pipeline's (Anthropic's temperature)."""
    if value is not None and not low <= value <= high:
        raise invalid(param, f"'{param}' must be in [{low:g}, {high:g}], not {value:g}")
    return value
