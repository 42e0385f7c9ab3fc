"""Model names: validation like the Hub does it, and the ``org/name`` <-> folder mapping."""

from __future__ import annotations

import re

from mlxk.errors import ValidationError

REPO_PREFIX = "models--"
MAX_NAME_LENGTH = 96
_PART = re.compile(r"[A-Za-z0-9_.\-]+")
HASH_PREFIX = re.compile(r"[0-9a-fA-F]{1,40}")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid ``[org/]name`` repo id, or None when it is."""
    if not name:
        return "the model name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the model name is longer than {MAX_NAME_LENGTH} characters"
    if any(c in name for c in "*?["):
        # MLX-Knife scripts did `rm "test-model-*"`: no command ever took wildcards
        return "wildcards are not names: give the name, or a unique part of it (`mlxk list PART` shows the matches)"
    parts = name.split("/")
    if len(parts) > 2:
        return "a model name has at most one '/' (org/name)"
    for part in parts:
        if not part:
            return "a model name has an empty part around '/'"
        if not _PART.fullmatch(part):
            return "a model name may only contain ASCII letters, digits, '-', '_' and '.'"
        if "--" in part or ".." in part:
            return "a model name may not contain '--' or '..'"
        if part[0] in "-." or part[-1] in "-.":
            return "a model name may not start or end with '-' or '.'"
    return None


_PATTERN = re.compile(r"[A-Za-z0-9_.\-/]+")


def validate_pattern(pattern: str) -> str:
    """A search pattern (part of a name) may have any of a name's characters anywhere."""
    if not pattern or len(pattern) > MAX_NAME_LENGTH or not _PATTERN.fullmatch(pattern):
        raise ValidationError(
            f"invalid model pattern {pattern!r}: use ASCII letters, digits, '-', '_', '.' and '/'"
        )
    return pattern


def validate_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise ValidationError(f"invalid model name {name!r}: {problem}")
    return name


def split_revision(spec: str) -> tuple[str, str | None]:
    """``name@abc123`` -> (``name``, ``abc123``); the part after ``@`` must be a hex prefix."""
    if "@" not in spec:
        return spec, None
    name, _, revision = spec.rpartition("@")
    if not HASH_PREFIX.fullmatch(revision):
        raise ValidationError(f"invalid revision {revision!r}: expected a commit hash prefix (hex)")
    return name, revision.lower()


def dirname_to_name(dirname: str) -> str:
    """``models--org--name`` -> ``org/name`` (every ``--`` is a ``/``)."""
    return dirname[len(REPO_PREFIX) :].replace("--", "/")


def display_text(text: str) -> str:
    """``text`` with undecodable bytes (surrogate escapes from the filesystem) as U+FFFD, so a
    stray non-UTF-8 file name can be printed and JSON-encoded instead of failing the command."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


_HEX = frozenset("0123456789abcdef")


def is_commit(text: str | None) -> bool:
    """A full 40-hex commit hash (lower case, as the cache stores them)."""
    return text is not None and len(text) == 40 and _HEX.issuperset(text)


def name_to_dirname(name: str) -> str:
    return REPO_PREFIX + name.replace("/", "--")


_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
MAX_REVISION_LENGTH = 255


def validate_revision(revision: str) -> str:
    """A branch, tag or commit as the Hub names them. The revision becomes a path under
    ``refs/``, so anything that could climb out of it (``..``, a leading ``/``) is refused."""
    parts = revision.split("/")
    if (
        len(revision) > MAX_REVISION_LENGTH
        or not _REVISION.fullmatch(revision)
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        raise ValidationError(
            f"invalid revision {revision!r}: use a branch, tag or commit name "
            "(ASCII letters, digits, '-', '_', '.', '/'; no '..' or empty parts)"
        )
    return revision


def split_remote_spec(spec: str) -> tuple[str, str | None]:
    """``org/name@revision`` for the Hub: the revision may be a branch, tag or commit."""
    name, sep, revision = spec.partition("@")
    if not sep:
        return spec, None
    return name, validate_revision(revision)
