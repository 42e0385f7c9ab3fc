"""``health --deep``: every byte of the matching repos hashed and compared with its checksum.

All files go to one ``HashJob`` (native core: C threads on every core, GIL released), biggest
first. A file whose (device, inode, size, mtime) is unchanged since it was verified against the
same checksum is answered by the verification memo instead, so a second run reads almost nothing.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from mlxk import core
from mlxk.cache.content import ContentItem, repo_content
from mlxk.cache.memo import load_memo, memo_allowed, memo_path, merge, save_memo
from mlxk.cache.scan import CacheLocation
from mlxk.core import codes
from mlxk.core.memo_format import KIND_CONTENT, unpack_records
from mlxk.core.records import CheckResult, RepoRecord

# progress(total_bytes, bytes_done) -> a context manager that shows progress while it is open
ProgressFactory = Callable[[int, Callable[[], int]], AbstractContextManager[object]]


@dataclass(frozen=True, slots=True)
class DeepOptions:
    jobs: int = 0  # hashing threads; 0: one per core
    progress: ProgressFactory | None = None


@dataclass(frozen=True, slots=True)
class DeepFindings:
    problems: dict[str, str] = field(
        default_factory=dict
    )  # dirname -> "label: what is wrong" (first bad file)
    unverifiable: dict[str, int] = field(default_factory=dict)  # dirname -> files with no checksum
    files_hashed: int = 0
    bytes_hashed: int = 0
    files_from_memo: int = 0


def _tag(checksum: str) -> int:
    """What a memo record remembers of the checksum it was verified against (its first 64 bits)."""
    return int(checksum[:16], 16)


def _memo_answers(body: bytes) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(dev, ino) -> (size, mtime_ns, code, detail) for content records."""
    return {(r[0], r[1]): (r[2], r[3], r[5], r[6]) for r in unpack_records(body) if r[4] == KIND_CONTENT}


def _describe(code_or_errno: int, item: ContentItem, mismatch: bool) -> str:
    if mismatch:
        kind = "sha256" if len(item.expected) == 64 else "git sha1"
        return f"{item.label}: content does not match its {kind} checksum {item.expected[:12]}… (changed since download)"
    if code_or_errno == errno.EAGAIN:
        return f"{item.label}: changed while it was being read"
    return f"{item.label}: cannot be read ({os.strerror(code_or_errno)})"


def _hash(
    items: list[ContentItem], total: int, options: DeepOptions
) -> list[tuple[int, str | None, int, int, int, int]]:
    job = core.impl.HashJob([i.path for i in items], [i.algo for i in items], options.jobs)
    if options.progress is None:
        return list(job.run())
    outcome: list[list[tuple[int, str | None, int, int, int, int]]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(job.run())
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="mlxk-deep", daemon=True)
    with options.progress(total, lambda: int(job.bytes_done)):
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)  # short waits: Ctrl-C is delivered between them
        except KeyboardInterrupt:
            job.cancel()
            worker.join()
            raise
    if failure:
        raise failure[0]
    return outcome[0]


def verify_content(
    location: CacheLocation, records: list[RepoRecord], described: dict[str, str | None], options: DeepOptions
) -> DeepFindings:
    findings = DeepFindings()
    items: list[ContentItem] = []
    bad: dict[str, list[tuple[str, str]]] = {}  # dirname -> [(label, problem)]
    for rec in records:
        content = repo_content(location.hub_root, rec, described.get(rec.dirname))
        items.extend(content.items)
        if content.unverifiable:
            findings.unverifiable[rec.dirname] = len(content.unverifiable)
        for label, blob in content.linked_blobs:
            problem = f"{label}: its blob {blob} is a symlink, not a file; not followed"
            bad.setdefault(rec.dirname, []).append((label, problem))
    path = None
    if location.memo_dir is not None and memo_allowed(location.memo_dir, location.hub_root):
        path = memo_path(location.memo_dir, location.hub_root)
    answers = _memo_answers(load_memo(path)) if path else {}
    to_hash: list[ContentItem] = []
    to_hash_bytes = 0
    memo_hits = 0
    for item in items:
        try:
            st = os.stat(item.path)
        except OSError as exc:
            bad.setdefault(item.dirname, []).append(
                (item.label, _describe(exc.errno or errno.EIO, item, False))
            )
            continue
        known = answers.get((st.st_dev, st.st_ino))
        if known and known[:2] == (st.st_size, st.st_mtime_ns) and known[3] == _tag(item.expected):
            memo_hits += 1
            if known[2] != codes.OK:
                bad.setdefault(item.dirname, []).append((item.label, _describe(0, item, True)))
            continue
        to_hash.append(item)
        to_hash_bytes += st.st_size
    fresh: list[CheckResult] = []
    hashed_bytes = 0
    for item, (err, digest, dev, ino, size, mtime_ns) in zip(
        to_hash, _hash(to_hash, to_hash_bytes, options), strict=True
    ):
        if err:
            bad.setdefault(item.dirname, []).append((item.label, _describe(err, item, False)))
            continue
        hashed_bytes += size
        ok = digest == item.expected
        code = codes.OK if ok else codes.CONTENT_MISMATCH
        fresh.append(CheckResult(dev, ino, size, mtime_ns, KIND_CONTENT, code, _tag(item.expected)))
        if not ok:
            bad.setdefault(item.dirname, []).append((item.label, _describe(0, item, True)))
    if path and fresh:
        merged = merge(load_memo(path), fresh)  # re-read: another run may have saved meanwhile
        if merged is not None:
            save_memo(path, merged)
    for dirname, found in bad.items():
        # the first bad file: the described snapshot's own before other snapshots' and loose blobs
        findings.problems[dirname] = min(
            found, key=lambda f: (f[0].startswith(("snapshot ", "blobs/")), f[0])
        )[1]
    return DeepFindings(findings.problems, findings.unverifiable, len(to_hash), hashed_bytes, memo_hits)
