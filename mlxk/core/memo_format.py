"""The binary layout of verification-memo records, shared by the native core and the twin.

A memo body is a run of fixed-size little-endian records sorted by (dev, ino, kind), so the
native scan can binary-search it without building Python objects:
``dev u64, ino u64, size u64, mtime_ns i64, kind u32, code u32, detail u64`` (48 bytes).
A record answers for a file only while its size and mtime are unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

RECORD = struct.Struct("<QQQqIIQ")
KIND_SAFETENSORS = 1  # safetensors header + extent check
KIND_WEIGHT_HEAD = 2  # other weight files: empty / git-lfs pointer check
KIND_CONTENT = 3  # health --deep: the content hashed and compared; detail: the checksum's first 64 bits

MemoRecord = tuple[int, int, int, int, int, int, int]


def unpack_records(body: bytes) -> Iterator[MemoRecord]:
    usable = len(body) - len(body) % RECORD.size
    return RECORD.iter_unpack(memoryview(body)[:usable])


def pack_records(records: Iterable[MemoRecord]) -> bytes:
    """Sorted, de-duplicated body (a later record for the same file and kind wins)."""
    latest: dict[tuple[int, int, int], MemoRecord] = {}
    for rec in records:
        latest[(rec[0], rec[1], rec[4])] = rec
    return b"".join(RECORD.pack(*latest[key]) for key in sorted(latest))
