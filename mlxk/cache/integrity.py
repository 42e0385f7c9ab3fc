"""Health (file integrity) rules over one snapshot's scan records.

Each rule returns the first problem it finds, or None. The order of the rules is the order of
the checks a user would want reported first: links, config, weights, how shards fit together,
then the tokenizer. A problem says whether files are absent (what an unfinished download
leaves) or present and wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mlxk.core import codes
from mlxk.core.records import WEIGHT_SUFFIXES, FileEntry

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.(?P<ext>safetensors|bin)$")
CONFIG_MISSING = "config.json is missing"


@dataclass(frozen=True, slots=True)
class Problem:
    text: str
    missing: bool = False  # files are absent (an unfinished download), rather than damaged


def _is_vocabulary(name: str) -> bool:
    """A file a tokenizer loads its vocabulary from: tokenizer.json, tokenizer.model, vocab.json,
    vocab.txt, a sentencepiece or tiktoken model, Mistral's tekken.json."""
    return (
        name.startswith(("tokenizer.", "vocab."))
        or name.endswith((".model", ".tiktoken"))
        or name == "tekken.json"
    )


def read_config(files_by_path: dict[str, FileEntry]) -> tuple[dict[str, Any] | None, str | None]:
    """(config, problem): the parsed config.json, or why it is missing or unusable."""
    entry = files_by_path.get("config.json")
    if entry is None:
        return None, CONFIG_MISSING
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


def _broken_link(files: Sequence[FileEntry]) -> Problem | None:
    """A link not followed (it leads outside the cache, or to a blob that is a link) or one
    that leads nowhere."""
    for f in files:
        if not f.exists:
            target = f.target or ""
            if f.check == codes.LINK_OUTSIDE:
                return Problem(f"{f.path} links outside the cache (to {target!r}); not followed")
            if f.check == codes.BLOB_IS_LINK:
                blob = target.rpartition("/")[2]
                return Problem(f"{f.path}: its blob {blob} is a symlink, not a file; not followed")
            if "blobs/" in target:
                return Problem(f"{f.path} is a broken link (its blob is missing)", missing=True)
            return Problem(f"{f.path} is a broken link (target {target!r} does not resolve)")
    return None


def _bad_weights(weights: Sequence[FileEntry]) -> Problem | None:
    if not weights:
        return Problem("no weight files", missing=True)
    for f in weights:
        if f.check not in (-1, codes.OK):
            return Problem(f"{f.path} {codes.describe(f.check, f.detail, f.size)}")
    return None


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


def _index_problem(files: Sequence[FileEntry], paths: set[str]) -> Problem | None:
    """An index naming a shard that is not beside it (in its own folder)."""
    for f in files:
        if not f.path.endswith(".index.json") or not f.exists:
            continue
        if f.content is None:
            if f.check == codes.IO_ERROR:
                return Problem(f"{f.path} cannot be read")
            continue
        try:
            index = orjson.loads(f.content)
        except orjson.JSONDecodeError:
            return Problem(f"{f.path} is not valid JSON")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            return Problem(f"{f.path} has no weight_map")
        try:
            shards = set(weight_map.values())
        except TypeError:  # a list or object where a file name belongs
            shards = {None}
        if not all(isinstance(s, str) and s for s in shards):
            return Problem(f"{f.path} has a weight_map value that is not a file name")
        folder = _folder(f.path)
        for shard in sorted(shards):
            if (f"{folder}/{shard}" if folder else shard) not in paths:
                return Problem(f"{f.path} names {shard}, which is missing", missing=True)
    return None


def _shard_problem(weights: Sequence[FileEntry], index_folders: set[str]) -> Problem | None:
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
            return Problem(
                f"sharded weights {where}{stem}-*-of-{total:05d}.{ext} have no index file", missing=True
            )
        if total == 0 or max(present) > total or min(present) == 0:
            return Problem(
                f"sharded weights {where}{stem}-*-of-{total:05d}.{ext} are numbered outside 1..{total}"
            )
        for number in range(1, total + 1):
            if number not in present:
                return Problem(
                    f"shard {where}{stem}-{number:05d}-of-{total:05d}.{ext} is missing", missing=True
                )
    return None


def _tokenizer_problem(paths: set[str]) -> Problem | None:
    """A tokenizer_config.json says the model has a tokenizer: its vocabulary must be beside it.
    (A download that failed on tokenizer.json leaves exactly this, and loading fails on it.)"""
    if "tokenizer_config.json" not in paths or "tokenizer.json" in paths:  # the common cases, first
        return None
    if any(_is_vocabulary(p) for p in paths if "/" not in p):
        return None
    return Problem(
        "no tokenizer file beside tokenizer_config.json (tokenizer.json, tokenizer.model, vocab.*, *.tiktoken)",
        missing=True,
    )


def integrity_problem(
    files: Sequence[FileEntry], config_problem: str | None, side_files_required: bool
) -> Problem | None:
    """The first integrity problem of a snapshot, or None when it is healthy.
    ``side_files_required``: config.json and the tokenizer files count (not for GGUF, which
    carries both inside the weights file)."""
    problem = _broken_link(files)
    if problem:
        return problem
    if config_problem and side_files_required:
        return Problem(config_problem, missing=config_problem == CONFIG_MISSING)
    weights = [f for f in files if f.path.endswith(WEIGHT_SUFFIXES)]
    problem = _bad_weights(weights)
    if problem:
        return problem
    paths = {f.path for f in files}
    problem = _index_problem(files, paths)
    if problem:
        return problem
    index_folders = {_folder(f.path) for f in files if f.path.endswith(".index.json")}
    problem = _shard_problem(weights, index_folders)
    if problem or not side_files_required:
        return problem
    return _tokenizer_problem(paths)
