"""Health (file integrity) rules over one snapshot's scan records.

Each rule returns the first problem it finds as a sentence, or None. The order of the rules
is the order of the checks a user would want reported first: broken links, config, weights,
then how shards fit together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from mlxk.core import codes
from mlxk.core.records import WEIGHT_SUFFIXES, FileEntry

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.(?P<ext>safetensors|bin)$")


def read_config(files_by_path: dict[str, FileEntry]) -> tuple[dict[str, Any] | None, str | None]:
    """(config, problem): the parsed config.json, or why it is missing or unusable."""
    entry = files_by_path.get("config.json")
    if entry is None:
        return None, "config.json is missing"
    if not entry.exists:
        return None, "config.json is a broken link"
    if entry.check == codes.IO_ERROR:
        return None, f"config.json cannot be read (errno {entry.detail})"
    if entry.content is None:
        return None, "config.json is too large to be a model config"
    try:
        config = orjson.loads(entry.content)
    except orjson.JSONDecodeError:
        return None, "config.json is not valid JSON"
    if not isinstance(config, dict):
        return None, "config.json is not a JSON object"
    return config, None


def _broken_link(files: Sequence[FileEntry]) -> str | None:
    for f in files:
        if not f.exists:
            target = f.target or ""
            if "blobs/" in target:
                return f"{f.path} is a broken link (its blob is missing)"
            return f"{f.path} is a broken link (target {target!r} does not resolve)"
    return None


def _bad_weights(weights: Sequence[FileEntry]) -> str | None:
    if not weights:
        return "no weight files"
    for f in weights:
        if f.check not in (-1, codes.OK):
            return f"{f.path} {codes.describe(f.check, f.detail, f.size)}"
    return None


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


def _index_problem(files: Sequence[FileEntry], paths: set[str]) -> str | None:
    """An index naming a shard that is not beside it (in its own folder)."""
    for f in files:
        if not f.path.endswith(".index.json") or not f.exists:
            continue
        if f.content is None:
            if f.check == codes.IO_ERROR:
                return f"{f.path} cannot be read"
            continue
        try:
            index = orjson.loads(f.content)
        except orjson.JSONDecodeError:
            return f"{f.path} is not valid JSON"
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            return f"{f.path} has no weight_map"
        try:
            shards = set(weight_map.values())
        except TypeError:  # a list or object where a file name belongs
            shards = {None}
        if not all(isinstance(s, str) and s for s in shards):
            return f"{f.path} has a weight_map value that is not a file name"
        folder = _folder(f.path)
        for shard in sorted(shards):
            if (f"{folder}/{shard}" if folder else shard) not in paths:
                return f"{f.path} names {shard}, which is missing"
    return None


def _shard_problem(weights: Sequence[FileEntry], index_folders: set[str]) -> str | None:
    """Numbered shards (``x-00001-of-00003``) need an index in their folder and no gaps."""
    groups: dict[tuple[str, str, str, int], set[int]] = {}
    for f in weights:
        folder, _, name = f.path.rpartition("/")
        match = _SHARD.match(name)
        if match:
            key = (folder, match["stem"], match["ext"], int(match["total"]))
            groups.setdefault(key, set()).add(int(match["index"]))
    for (folder, stem, ext, total), present in sorted(groups.items()):
        where = f"{folder}/" if folder else ""
        if folder not in index_folders:
            return f"sharded weights {where}{stem}-*-of-{total:05d}.{ext} have no index file"
        if total == 0 or max(present) > total or min(present) == 0:
            return f"sharded weights {where}{stem}-*-of-{total:05d}.{ext} are numbered outside 1..{total}"
        for number in range(1, total + 1):
            if number not in present:
                return f"shard {where}{stem}-{number:05d}-of-{total:05d}.{ext} is missing"
    return None


def integrity_problem(
    files: Sequence[FileEntry], config_problem: str | None, config_required: bool
) -> str | None:
    """The first integrity problem of a snapshot, or None when it is healthy."""
    problem = _broken_link(files)
    if problem:
        return problem
    if config_problem and config_required:
        return config_problem
    weights = [f for f in files if f.path.endswith(WEIGHT_SUFFIXES)]
    problem = _bad_weights(weights)
    if problem:
        return problem
    paths = {f.path for f in files}
    problem = _index_problem(files, paths)
    if problem:
        return problem
    index_folders = {_folder(f.path) for f in files if f.path.endswith(".index.json")}
    return _shard_problem(weights, index_folders)
