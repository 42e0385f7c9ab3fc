"""What ``mlxk list`` keeps and in which order: ``--filter KEY OP VALUE`` tests and ``--sort``.

Filters work on the scanned models (the values ``list`` already holds), never on the disk again.
The syntax follows ``hf cache ls --filter``, so its users can type what they know: ``size>1GB``,
``modified>30d`` (modified more than 30 days ago: the value is an age), plus mlxk's own keys
``framework``, ``type``, ``health``, ``runnable`` and ``capability``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlxk.cache.model import CachedModel
from mlxk.errors import ValidationError

# Decimal units, as the sizes in the list are printed; binary ones for those who think in GiB.
SIZE_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
AGE_UNITS = {
    "s": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
FRAMEWORKS = ("mlx", "gguf", "pytorch", "unknown")
SORT_KEYS = {"name": "asc", "size": "desc", "modified": "desc"}  # like hf: biggest and newest first

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_EXPRESSION = re.compile(r"\s*([A-Za-z_]+)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*")
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_YES, _NO = ("yes", "true", "1"), ("no", "false", "0")
FILTER_HELP = (
    "size, modified (an age), framework, type, health, runnable, capability; "
    "e.g. 'size>1GB', 'modified>30d', 'framework=mlx', 'runnable=yes'"
)


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """One ``--filter`` expression, ready to test models against."""

    text: str  # as typed, for messages
    key: str
    op: str
    number: float = 0.0  # size in bytes or age in seconds
    words: tuple[str, ...] = ()  # the accepted values of a text key (any of them)

    def keeps(self, model: CachedModel, now_ns: int) -> bool:
        if self.key == "size":
            return _COMPARE[self.op](model.size_bytes, self.number)
        if self.key == "modified":
            age = (now_ns - model.last_modified_ns) / 1e9
            return _COMPARE[self.op](age, self.number)
        found = self.words_of(model) & set(self.words)
        return bool(found) == (self.op != "!=")

    def words_of(self, model: CachedModel) -> set[str]:
        if self.key == "framework":
            return {model.framework.lower()}
        if self.key == "type":
            return {model.model_type.lower()}
        if self.key == "health":
            return {"healthy" if model.healthy else "unhealthy"}
        if self.key == "runnable":
            return {"yes" if model.runtime_compatible else "no"}
        return {c.lower() for c in model.capabilities}  # capability


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Which models ``list`` keeps (every filter must hold) and their order (name by default)."""

    filters: tuple[ModelFilter, ...] = ()
    sort: str = "name"
    descending: bool = False

    def apply(self, models: Sequence[CachedModel], now_ns: int) -> list[CachedModel]:
        kept = [m for m in models if all(f.keeps(m, now_ns) for f in self.filters)]
        kept.sort(key=lambda m: m.name)  # ties of size or time stay in name order
        if self.sort == "size":
            kept.sort(key=lambda m: m.size_bytes, reverse=self.descending)
        elif self.sort == "modified":
            kept.sort(key=lambda m: m.last_modified_ns, reverse=self.descending)
        elif self.descending:
            kept.reverse()
        return kept


def _quantity(expr: str, raw: str, units: dict[str, int], what: str) -> float:
    match = _QUANTITY.fullmatch(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in units) or (not unit and what == "an age"):
        examples = "'1GB', '500MB', '2GiB'" if what == "a size" else "'30d', '12h', '2w', '6mo', '1y'"
        raise ValidationError(f"--filter {expr!r}: {raw!r} is not {what} (e.g. {examples})")
    return float(match.group(1)) * units.get(unit, 1)


def parse_filter(expr: str) -> ModelFilter:
    """``KEY OP VALUE`` -> a filter; anything else is a ``ValidationError`` that says what is accepted."""
    match = _EXPRESSION.fullmatch(expr)
    if match is None or not match.group(3):
        raise ValidationError(f"--filter takes KEY OP VALUE, not {expr!r}; keys: {FILTER_HELP}")
    key, op, raw = match.group(1).lower(), match.group(2), match.group(3)
    if key in ("size", "modified"):
        if key == "size":
            number = _quantity(expr, raw, SIZE_UNITS, "a size")
        else:
            number = _quantity(expr, raw, AGE_UNITS, "an age")
        return ModelFilter(expr, key, op, number=number)
    if key not in ("framework", "type", "health", "runnable", "capability"):
        raise ValidationError(f"--filter {expr!r}: unknown key {key!r}; keys: {FILTER_HELP}")
    if op not in ("=", "==", "!="):
        raise ValidationError(f"--filter {expr!r}: {key} takes = or != (a list of values: a,b)")
    words = tuple(w.strip().lower() for w in raw.split(",") if w.strip())
    allowed = {
        "framework": FRAMEWORKS,
        "health": ("healthy", "unhealthy"),
        "runnable": (*_YES, *_NO),
    }.get(key)
    wrong = [w for w in words if allowed is not None and w not in allowed]
    if wrong or not words:
        choices = ", ".join(("yes", "no") if key == "runnable" else allowed or ("a value",))
        raise ValidationError(f"--filter {expr!r}: {key} is one of {choices}, not {raw!r}")
    if key == "runnable":
        words = tuple("yes" if w in _YES else "no" for w in words)
    return ModelFilter(expr, key, op, words=words)


def parse_sort(text: str, reverse: bool) -> tuple[str, bool]:
    """``--sort KEY[:asc|:desc]`` (and ``--reverse``) -> (key, descending)."""
    key, _, order = text.strip().lower().partition(":")
    if key not in SORT_KEYS or order not in ("", "asc", "desc"):
        raise ValidationError(f"--sort takes name, size or modified (optionally :asc or :desc), not {text!r}")
    descending = (order or SORT_KEYS[key]) == "desc"
    return key, descending != reverse


def build_query(filters: Sequence[str], sort: str | None, reverse: bool) -> ListQuery:
    key, descending = parse_sort(sort or "name", reverse)
    return ListQuery(tuple(parse_filter(f) for f in filters), key, descending)
