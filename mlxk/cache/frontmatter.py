"""The few README front-matter fields mlxk reads, without a YAML library.

Model cards put ``library_name``, ``tags`` and ``pipeline_tag`` in a YAML block between ``---``
lines. Parsing YAML for thousands of models is slow, and these fields are always plain scalars
or flat lists, so a line reader covers them.
"""

from __future__ import annotations

_WANTED = ("library_name", "pipeline_tag", "tags", "base_model")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _inline_list(value: str) -> list[str]:
    inner = value.strip()[1:-1]
    return [_unquote(item) for item in inner.split(",") if item.strip()]


def read_front_matter(readme_head: bytes | None) -> dict[str, str | list[str]]:
    """``library_name``, ``pipeline_tag`` (str), ``tags``/``base_model`` (str or list) when present."""
    if not readme_head:
        return {}
    head = readme_head.removeprefix(b"\xef\xbb\xbf")
    if not head.startswith(b"---"):
        return {}
    end = head.find(b"\n---", 3)
    text = (head if end < 0 else head[: end + 4]).decode("utf-8", "replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str | list[str]] = {}
    current: list[str] | None = None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        stripped = line.strip()
        if current is not None and stripped.startswith("- "):
            current.append(_unquote(stripped[2:]))
            continue
        current = None
        if line[:1] in (" ", "\t") or ":" not in line:
            continue  # nested mapping or continuation: not a field we read
        key, _, value = line.partition(":")
        key = key.strip()
        if key not in _WANTED:
            continue
        value = value.strip()
        if not value:
            current = []
            found[key] = current
        elif value.startswith("[") and value.endswith("]"):
            found[key] = _inline_list(value)
        else:
            found[key] = _unquote(value)
    return found


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value
