"""Numbers shared by the native core and its pure-Python twin: check result codes, the hash
algorithms ``HashJob`` takes, and the sizes both read with.

The check codes are part of the verification memo's on-disk format and of the records the scan
returns, so they never change meaning; new codes are appended. ``describe`` turns a code and
its detail number into the sentence a user reads.

This file is the one source of these numbers: setup.py writes them into ``_native/codes.pxi``
(``_native/generate_codes.py``; every public int here becomes ``MLXK_<NAME>``) before it compiles
the native core, and ``tests/test_native_codes.py`` checks that the committed copy is in sync.
"""

from __future__ import annotations

OK = 0
IO_ERROR = 1  # detail: errno
EMPTY = 2  # zero-byte file
TOO_SMALL = 3  # fewer than 8 bytes: no room for the header length
LFS_POINTER = 4  # a git-lfs pointer text stands where the weights should be
HEADER_LENGTH = 5  # detail: the declared header length (0, past end of file, or > 100 MB)
HEADER_UTF8 = 6  # detail: byte offset (within the header) of the first invalid byte
HEADER_JSON = 7  # detail: byte offset of the syntax error (BOM, NUL, NaN, bad escape, ...)
NOT_AN_OBJECT = 8  # the header is valid JSON-ish but not an object at top level
DUPLICATE_KEY = 9  # detail: byte offset of the repeated key
BAD_ENTRY = 10  # a tensor entry lacks/repeats dtype, shape or data_offsets, or has others; detail: offset
BAD_DTYPE = 11  # detail: byte offset of the dtype string
BAD_SHAPE = 12  # a dim that is not a non-negative integer fitting 64 bits; detail: offset
BAD_OFFSETS = 13  # data_offsets not exactly two non-negative integers with begin <= end; detail: offset
SIZE_MISMATCH = 14  # prod(shape) * dtype bits / 8 != end - begin (incl. overflow); detail: offset
LAYOUT = 15  # tensors leave a gap, overlap, or do not start at 0; detail: the offending begin
TRUNCATED = 16  # tensor data extends past the end of the file; detail: bytes the header says the file needs
TRAILING_BYTES = (
    17  # the file is longer than header + tensor data; detail: bytes the header says the file needs
)
BAD_METADATA = 18  # __metadata__ is not an object of string values; detail: offset
CONTENT_MISMATCH = 19  # the content's checksum differs from the blob's name (health --deep)
LINK_OUTSIDE = 20  # a snapshot link that resolves outside the hub root: not followed, nothing read
BLOB_IS_LINK = 21  # the blob a snapshot link names is itself a symlink: not followed, nothing read

MAX_HEADER_LENGTH = 100_000_000
HEADER_FIRST_READ = 65536  # check_safetensors_file reads this much first, a longer header after

# The hash algorithms HashJob takes, one per file
ALGO_SHA256 = 1  # LFS blobs: named by the sha256 of the content
ALGO_GIT_SHA1 = 2  # other blobs: git's blob id, sha1(b"blob <size>\0" + content)
HASH_CHUNK = 1 << 20  # bytes per read: memory stays bounded whatever the file size

_MESSAGES: dict[int, str] = {
    OK: "ok",
    IO_ERROR: "cannot be read (errno {detail})",
    EMPTY: "is empty (0 bytes)",
    TOO_SMALL: "is too small to be safetensors (< 8 bytes)",
    LFS_POINTER: "is a git-lfs pointer, not the weights (download incomplete)",
    HEADER_LENGTH: "has an invalid header length ({detail})",
    HEADER_UTF8: "has a header that is not UTF-8 (byte {detail})",
    HEADER_JSON: "has a header that is not valid JSON (byte {detail})",
    NOT_AN_OBJECT: "has a header that is not a JSON object",
    DUPLICATE_KEY: "has a duplicate key in its header (byte {detail})",
    BAD_ENTRY: "has a malformed tensor entry (byte {detail})",
    BAD_DTYPE: "has an unknown dtype (byte {detail})",
    BAD_SHAPE: "has an invalid tensor shape (byte {detail})",
    BAD_OFFSETS: "has invalid data_offsets (byte {detail})",
    SIZE_MISMATCH: "has a tensor whose shape and dtype do not match its byte range (byte {detail})",
    LAYOUT: "has tensors that overlap, leave gaps or do not start at 0 (offset {detail})",
    TRUNCATED: "is truncated: its header needs {detail} bytes, the file has {size}",
    TRAILING_BYTES: "has trailing bytes: its header needs {detail} bytes, the file has {size}",
    BAD_METADATA: "has __metadata__ that is not an object of strings (byte {detail})",
    CONTENT_MISMATCH: "does not match its checksum (the bytes changed since download)",
    LINK_OUTSIDE: "links outside the cache (not followed)",
    BLOB_IS_LINK: "is stored in a blob that is itself a symlink (not followed)",
}


def describe(code: int, detail: int, size: int) -> str:
    """The human phrase for a check result, to follow a file name."""
    template = _MESSAGES.get(code, "failed check {code}")
    return template.format(detail=detail, size=size, code=code)
