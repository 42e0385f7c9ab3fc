"""Model specs -> repo folders: exact name, then ``name@<hex>``, then case-insensitive substring."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.cache.names import dirname_to_name, split_revision, validate_name, validate_pattern
from mlxk.errors import AmbiguousMatch, ModelNotFound, ValidationError


@dataclass(frozen=True, slots=True)
class Resolved:
    dirnames: list[str]
    revision: str | None  # a snapshot hash prefix from ``name@<hex>``


def is_local_path(spec: str) -> bool:
    return spec.startswith(("./", "../", "/", "~")) or spec in (".", "..")


def local_path_error(spec: str) -> ValidationError:
    """A folder where a cache model is expected (MLX-Knife 2.0's workspaces): say what works instead."""
    return ValidationError(
        f"{spec!r} is a local path; mlxk works on models in the HF cache (local model folders are not "
        "supported: `mlxk pull ORG/NAME` puts a model there; see docs/migration.md)"
    )


def matching_dirnames(dirnames: list[str], pattern: str) -> list[str]:
    """Exact name (case-sensitive, then -insensitive) wins; else every substring match."""
    names = {d: dirname_to_name(d) for d in dirnames}
    exact = [d for d, n in names.items() if n == pattern]
    if exact:
        return exact
    lowered = pattern.lower()
    exact = [d for d, n in names.items() if n.lower() == lowered]
    if exact:
        return exact
    return [d for d, n in names.items() if lowered in n.lower()]


def resolve(dirnames: list[str], spec: str, *, single: bool) -> Resolved:
    """Resolve ``spec`` against the cache's repo folders.

    ``single`` asks for exactly one model (show, run, rm); otherwise the spec is a pattern and
    every match is returned (health). Raises ``ModelNotFound`` or ``AmbiguousMatch``.
    """
    if is_local_path(spec):
        raise local_path_error(spec)
    name, revision = split_revision(spec)
    if single:
        validate_name(name)
    else:
        validate_pattern(name)
    found = matching_dirnames(dirnames, name)
    if not found:
        raise ModelNotFound(f"no model in the cache matches {name!r}")
    if single and len(found) > 1:
        matches = [dirname_to_name(d) for d in found]
        raise AmbiguousMatch(f"{name!r} matches {len(matches)} models; name one exactly", matches=matches)
    return Resolved(found, revision)
