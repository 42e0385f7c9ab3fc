"""Scan records -> ``CachedModel`` values: snapshot choice, integrity, kind, runtime support."""

from __future__ import annotations

import errno as errno_codes
import os
from typing import Any

from mlxk.cache.detect import detect_kind
from mlxk.cache.frontmatter import read_front_matter
from mlxk.cache.integrity import Problem, integrity_problem, read_config
from mlxk.cache.model import CachedModel, Leftovers
from mlxk.cache.names import dirname_to_name, is_commit, name_problem
from mlxk.cache.runtime import mlx_lm_support
from mlxk.core.records import FLAG_CHAT_TEMPLATE, WEIGHT_SUFFIXES, FileEntry, RepoRecord, SnapshotRecord
from mlxk.errors import AmbiguousMatch, HashNotFound


def _newest_first(snapshots: list[SnapshotRecord]) -> list[SnapshotRecord]:
    return sorted(snapshots, key=lambda s: (s.mtime_ns, s.commit), reverse=True)


def choose_snapshot(
    rec: RepoRecord, revision: str | None
) -> tuple[SnapshotRecord | None, str | None, str | None]:
    """(snapshot, commit, problem) for the revision prefix, else ``refs/main``, else the newest.

    A ``refs/main`` naming a snapshot that is not there (a download that never got far) gives
    that commit with no snapshot and a problem to report.
    """
    ordered = _newest_first(rec.snapshots)
    if revision is not None:
        hits = [s for s in ordered if s.commit.lower().startswith(revision)]
        name = dirname_to_name(rec.dirname)
        if not hits:
            raise HashNotFound(
                f"{name} has no snapshot starting with {revision}",
                available_hashes=[s.commit[:8] for s in ordered if is_commit(s.commit)],
            )
        if len(hits) > 1:
            raise AmbiguousMatch(
                f"{revision} matches several snapshots of {name}",
                matches=[f"{name}@{s.commit[:8]}" for s in hits],
            )
        return hits[0], hits[0].commit, None
    main = dict(rec.refs).get("main")
    if main:
        for snap in ordered:
            if snap.commit == main:
                return snap, main, None
        return None, main, f"refs/main points to snapshot {main[:8]}, which is missing"
    if ordered:
        return ordered[0], ordered[0].commit, None
    return None, None, "no snapshots (the download never completed)"


def _content_size(files: list[FileEntry]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for f in files:
        if f.exists and (f.dev, f.ino) not in seen:
            seen.add((f.dev, f.ino))
            total += f.size
    return total


def _unreadable(rec: RepoRecord, name: str) -> CachedModel:
    if rec.errno == errno_codes.ENOTDIR:
        what = "is not a folder"
    elif rec.errno == errno_codes.EXDEV:  # the scan's word for a link it did not follow
        what = "(or its refs, snapshots or blobs folder) links outside the cache; not followed"
    else:
        what = f"cannot be read: {os.strerror(rec.errno)}"
    return _broken_model(rec, name, None, f"repo folder {rec.dirname} {what}")


def _explained(rec: RepoRecord, name: str, problem: Problem) -> str:
    """The reason a user reads: files that are absent while partial downloads lie in blobs/ are
    an interrupted download, which ``mlxk pull`` resumes."""
    count = len(rec.incomplete)
    if not problem.missing or not count:
        return problem.text
    partial = f"{count} partial file{'s' if count != 1 else ''} in blobs/ (*.incomplete)"
    return f"incomplete download: {problem.text}, {partial}; resume it with `mlxk pull {name}`"


def _broken_model(rec: RepoRecord, name: str, commit: str | None, problem: str) -> CachedModel:
    return CachedModel(
        name=name,
        dirname=rec.dirname,
        hash=commit,
        snapshots=tuple(s.commit for s in _newest_first(rec.snapshots)),
        size_bytes=0,
        last_modified_ns=0,
        framework="Unknown",
        model_type="base",
        capabilities=(),
        healthy=False,
        health_reason=problem,
        runtime_compatible=False,
        runtime_reason=None,
        config=None,
        files=(),
        leftovers=Leftovers(tuple(rec.incomplete), tuple(rec.locks)),
    )


def _runtime_problem(framework: str, config: dict[str, Any] | None, model_type: str) -> str | None:
    if framework != "MLX":
        return f"framework {framework} is not MLX; mlx-lm runs MLX models"
    if model_type == "embedding":
        return "embedding model: mlx-lm does not generate text with it"
    support = mlx_lm_support()
    if support.version is None:
        return "mlx-lm is not installed"
    arch = (config or {}).get("model_type")
    if not isinstance(arch, str) or not arch:
        return "config.json has no model_type"
    if not support.supports(arch):
        return f"model_type {arch!r} is not supported by mlx-lm {support.version}"
    return None


def build_model(rec: RepoRecord, revision: str | None = None) -> CachedModel:
    name = dirname_to_name(rec.dirname) or rec.dirname  # "models--" alone still needs a name
    if rec.errno:
        return _unreadable(rec, name)
    if name_problem(name):
        return _broken_model(rec, name, None, f"repo folder {rec.dirname} is not a valid model name")
    snap, commit, problem = choose_snapshot(rec, revision)
    if snap is None:  # no snapshot yet, or not the one refs/main names: files are absent
        return _broken_model(
            rec, name, commit, _explained(rec, name, Problem(problem or "no snapshot", True))
        )
    if snap.errno:
        return _broken_model(
            rec, name, commit, f"snapshot {snap.commit[:8]} cannot be read: {os.strerror(snap.errno)}"
        )

    by_path = {f.path: f for f in snap.files}
    config, config_problem = read_config(by_path)
    readme = by_path.get("README.md")
    front = read_front_matter(readme.content if readme else None)
    suffixes = {os.path.splitext(f.path)[1] for f in snap.files if f.path.endswith(WEIGHT_SUFFIXES)}
    chat_flag = any(f.flags & FLAG_CHAT_TEMPLATE for f in snap.files)
    kind = detect_kind(name, config, front, by_path.keys(), suffixes, chat_flag)
    found = integrity_problem(snap.files, config_problem, side_files_required=kind.framework != "GGUF")
    health = _explained(rec, name, found) if found else None
    runtime = None if health else _runtime_problem(kind.framework, config, kind.model_type)
    last_modified = max([snap.mtime_ns, *(f.lmtime_ns for f in snap.files)])
    return CachedModel(
        name=name,
        dirname=rec.dirname,
        hash=commit,
        snapshots=tuple(s.commit for s in _newest_first(rec.snapshots)),
        size_bytes=_content_size(snap.files),
        last_modified_ns=last_modified,
        framework=kind.framework,
        model_type=kind.model_type,
        capabilities=kind.capabilities,
        healthy=health is None,
        health_reason=health,
        runtime_compatible=health is None and runtime is None,
        runtime_reason=runtime,
        config=config,
        files=tuple(snap.files),
        leftovers=Leftovers(tuple(rec.incomplete), tuple(rec.locks)),
    )
