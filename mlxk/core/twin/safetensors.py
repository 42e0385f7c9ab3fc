"""Strict safetensors header check, pure Python (the twin of ``_native/safetensors.pxi``).

Both implementations return the same ``(code, detail)`` for every input; codes come from
``mlxk.core.codes``. Offsets in details are byte offsets relative to the start of the header
JSON (file byte 8).

Two parsers live here. ``_Reference`` walks the header byte by byte exactly like the C code and is
the source of truth for codes and details. ``_fast_ranges`` uses the C-accelerated ``json`` module
with hooks; it only ever answers for headers it finds fully valid and returns ``None`` on any
doubt, so the reference parser decides every rejection.
"""

from __future__ import annotations

import json
import json.scanner
import os
import re
from operator import index
from typing import Any

from mlxk.core.codes import (
    BAD_DTYPE,
    BAD_ENTRY,
    BAD_METADATA,
    BAD_OFFSETS,
    BAD_SHAPE,
    DUPLICATE_KEY,
    EMPTY,
    HEADER_FIRST_READ,
    HEADER_JSON,
    HEADER_LENGTH,
    HEADER_UTF8,
    IO_ERROR,
    LAYOUT,
    LFS_POINTER,
    MAX_HEADER_LENGTH,
    NOT_AN_OBJECT,
    OK,
    SIZE_MISMATCH,
    TOO_SMALL,
    TRAILING_BYTES,
    TRUNCATED,
)
from mlxk.core.records import LFS_PREFIX

__all__ = ["DTYPE_BITS", "check_safetensors_bytes", "check_safetensors_file"]

U64_MAX = 2**64 - 1

# bits per element of every dtype safetensors knows (names are case-sensitive)
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

Range = tuple[int, int]


def check_safetensors_bytes(
    data: bytes | bytearray | memoryview, file_size: int | None = None
) -> tuple[int, int]:
    """Checks safetensors bytes (the whole file, or its leading bytes with file_size given)."""
    return _check(data, file_size, fast=True)


def check_safetensors_file(path: str) -> tuple[int, int]:
    """Checks the safetensors file at ``path``; ``(IO_ERROR, errno)`` when it cannot be read."""
    # os.open/fstat/pread rather than open(): the same system calls, so the same errnos, as C
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return IO_ERROR, exc.errno or 0
    try:
        size = os.fstat(fd).st_size
        data = _read_full(fd, min(size, HEADER_FIRST_READ), 0)
        if len(data) >= 8:
            hlen = int.from_bytes(data[:8], "little")
            # a header longer than the first read: fetch the rest (only when its length is sane)
            if 0 < hlen <= MAX_HEADER_LENGTH and 8 + hlen <= size and 8 + hlen > len(data):
                data += _read_full(fd, 8 + hlen - len(data), len(data))
    except OSError as exc:
        return IO_ERROR, exc.errno or 0
    finally:
        os.close(fd)
    return _check(data, size, fast=True)


def _read_full(fd: int, want: int, pos: int) -> bytes:
    """Up to ``want`` bytes from ``pos``, fewer only at end of file (pread retries EINTR itself)."""
    parts: list[bytes] = []
    got = 0
    while got < want:
        chunk = os.pread(fd, want - got, pos + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _check(data: bytes | bytearray | memoryview, file_size: int | None, fast: bool) -> tuple[int, int]:
    """The whole check; ``fast=False`` skips the json fast path (for tests)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data) if file_size is None else index(file_size)
    if not 0 <= size <= U64_MAX:
        raise OverflowError("file_size must fit in 64 bits")
    if size == 0:
        return EMPTY, 0
    buflen = min(len(data), size)
    if data.startswith(LFS_PREFIX, 0, buflen):
        return LFS_POINTER, 0
    if size < 8:
        return TOO_SMALL, 0
    if buflen < 8:  # the caller has fewer bytes than the file: report what was needed
        return TRUNCATED, 8
    hlen = int.from_bytes(data[:8], "little")
    if hlen == 0 or hlen > MAX_HEADER_LENGTH or 8 + hlen > size:
        return HEADER_LENGTH, hlen
    if buflen - 8 < hlen:
        return TRUNCATED, 8 + hlen
    header = data[8 : 8 + hlen]
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        return HEADER_UTF8, exc.start  # strict decoder: start is the first invalid sequence
    ranges = _fast_ranges(text, header) if fast else None
    if ranges is None:
        try:
            ranges = _Reference(header).parse()
        except _Reject as rej:
            return rej.code, rej.detail
    return _layout(ranges, hlen, size)


def _layout(ranges: list[Range], hlen: int, size: int) -> tuple[int, int]:
    """Tensors sorted by (begin, end) must tile [0, last end); the file must end right there."""
    expect = 0
    for begin, end in sorted(ranges):
        if begin != expect:
            return LAYOUT, begin
        expect = end
    need = 8 + hlen + expect
    if need > size:
        return TRUNCATED, min(need, U64_MAX)  # C saturates a need beyond 64 bits
    if need < size:
        return TRAILING_BYTES, need
    return OK, 0


def _nbits_ok(shape: list[int], bits: int, nbytes: int) -> bool:
    """prod(shape) * bits == 8 * nbytes, where a product beyond 64 bits never matches."""
    # left to right, as the safetensors package does: an overflow before a zero dim is an error,
    # a zero dim before a huge one is not (the running product is 0 from there on)
    nel = 1
    for dim in shape:
        nel *= dim
        if nel > U64_MAX:  # stop early: no huge integers
            return False
    nbits = nel * bits
    return nbits <= U64_MAX and nbits % 8 == 0 and nbits // 8 == nbytes


# ---------------------------------------------------------------------------------------------
# fast path: the C json scanner, then the semantic checks; None whenever anything is unusual
#
# Most headers (no backslash, no "-0") go through a hook-free decoder, all in C. There every
# string token is exactly its raw bytes, so a colon count settles duplicates: each key is followed
# by one structural colon, so the header has at least as many colons as keys in the decoded dicts,
# and exactly as many only if no key repeated and no string holds a colon. Other headers, and
# those where the count differs, go through a decoder whose hooks refuse duplicate keys and
# negative numbers; lone surrogates (possible only through \u escapes) are looked for after.
# Without hooks, negative numbers other than "-0" fail the range checks below, and NaN and
# Infinity decode to floats, which no check accepts.


class _Doubt(Exception):
    """Raised by the json hooks: leave this header to the reference parser."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # duplicate key
        raise _Doubt
    return obj


def _constant_hook(name: str) -> Any:
    raise _Doubt  # NaN, Infinity, -Infinity: fail early


def _int_hook(text: str) -> int:
    if text[0] == "-":  # negative, "-0" included (int() would make it a valid 0)
        raise _Doubt
    return int(text)


_PLAIN_DECODER = json.JSONDecoder()
_HOOKED_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_hook, parse_constant=_constant_hook, parse_int=_int_hook
)
# The pure-Python json scanner is laxer (\d matches non-ASCII digits, int() takes " 1" in \u
# escapes): only trust the C scanner (which also decodes strings in C).
_C_SCANNER: Any = getattr(json.scanner, "c_make_scanner", None)
_FAST_OK = _C_SCANNER is not None and all(
    isinstance(getattr(decoder, "scan_once", None), _C_SCANNER)
    for decoder in (_PLAIN_DECODER, _HOOKED_DECODER)
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _fast_ranges(text: str, raw: bytes) -> list[Range] | None:
    """The tensors' data_offsets if the header is fully valid, else None (no verdict)."""
    if not _FAST_OK:
        return None
    if b"\\" not in raw and b"-0" not in raw:
        try:
            obj = _PLAIN_DECODER.decode(text)  # same whitespace set; refuses control chars, BOM
        except Exception:  # ValueError, RecursionError, ...: all mean "ask the reference"
            return None
        checked = _validate(obj, surrogates=False)
        if checked is None:
            return None
        if raw.count(b":") == checked[1]:
            return checked[0]
        # a colon inside a string, or a repeated key: let the hooked decoder tell which
    try:
        obj = _HOOKED_DECODER.decode(text)
    except Exception:  # _Doubt, ValueError, RecursionError, ...
        return None
    checked = _validate(obj, surrogates=b"\\u" in raw)
    return None if checked is None else checked[0]


def _validate(obj: Any, surrogates: bool) -> tuple[list[Range], int] | None:
    """(data_offsets of every tensor, number of keys in all dicts) if obj is a valid header."""
    if type(obj) is not dict:
        return None
    ranges: list[Range] = []
    nkeys = len(obj)
    bits_of = DTYPE_BITS.get
    for name, entry in obj.items():
        if type(entry) is not dict:
            return None
        if surrogates and _SURROGATE.search(name):
            return None
        if name == "__metadata__":
            nkeys += len(entry)
            for key, value in entry.items():
                if type(value) is not str:
                    return None
                if surrogates and (_SURROGATE.search(key) or _SURROGATE.search(value)):
                    return None
            continue
        if len(entry) != 3:
            return None
        nkeys += 3
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if (
            type(dtype) is not str
            or type(shape) is not list
            or type(offsets) is not list
            or len(offsets) != 2
        ):
            return None
        bits = bits_of(dtype)
        if bits is None:
            return None
        begin, end = offsets
        # type() is int, not isinstance: bool is an int too
        if type(begin) is not int or type(end) is not int or not 0 <= begin <= end <= U64_MAX:
            return None
        nel = 1
        for dim in shape:
            if type(dim) is not int or not 0 <= dim <= U64_MAX:
                return None
            if nel <= U64_MAX:  # stop growing past 64 bits: no huge integers
                nel *= dim
        if nel > U64_MAX:
            return None  # overflowed before any zero dim: the careful path rejects it
        nbits = nel * bits
        if nbits > U64_MAX or nbits != 8 * (end - begin):
            return None
        ranges.append((begin, end))
    return ranges, nkeys


# ---------------------------------------------------------------------------------------------
# reference parser: the byte-level grammar of the C code, same order, same offsets


class _Reject(Exception):
    def __init__(self, code: int, detail: int) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


_WS = re.compile(rb"[ \t\n\r]*")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')  # string bytes that need no attention
_DIGITS = re.compile(rb"[0-9]*")
_HEX = b"0123456789abcdefABCDEF"
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_VALUE_START = frozenset(b'{["-0123456789tfn')  # bytes that can begin a JSON value
_NUMBER_START = frozenset(b"-0123456789")
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = ord("{"), ord("}"), ord("["), ord("]")
_QUOTE, _BACKSLASH, _COMMA, _COLON = ord('"'), ord("\\"), ord(","), ord(":")
_MEMBERS = {"dtype", "shape", "data_offsets"}


class _Reference:
    """One pass over the header in document order; the first error raises ``_Reject``."""

    def __init__(self, header: bytes) -> None:
        self.h = header
        self.n = len(header)
        self.i = 0
        self.dup_offsets: list[int] = []  # offsets of keys that repeat an earlier key
        self.top_keys: set[str] = set()
        self.meta_keys: set[str] = set()  # all __metadata__ objects share one set, as in C
        self.ranges: list[Range] = []

    def skip_ws(self) -> None:
        match = _WS.match(self.h, self.i)
        assert match is not None  # a '*' pattern always matches
        self.i = match.end()

    def peek(self) -> int:
        """The byte at the read position, or -1 at the end."""
        return self.h[self.i] if self.i < self.n else -1

    def wrong_type(self, code: int) -> _Reject:
        """A value is due here but has the wrong type: ``code`` if one starts here, else syntax."""
        if self.i >= self.n:
            return _Reject(HEADER_JSON, self.n)
        if self.h[self.i] in _VALUE_START:
            return _Reject(code, self.i)
        return _Reject(HEADER_JSON, self.i)

    def syntax(self) -> _Reject:
        return _Reject(HEADER_JSON, min(self.i, self.n))

    def key_start(self) -> None:
        if self.peek() != _QUOTE:
            raise self.syntax()

    def colon(self) -> None:
        self.skip_ws()
        if self.peek() != _COLON:
            raise self.syntax()
        self.i += 1
        self.skip_ws()

    def after_value(self, close: int) -> bool:
        """True after a ',' (and whitespace), False after the closing byte."""
        self.skip_ws()
        c = self.peek()
        if c == _COMMA:
            self.i += 1
            self.skip_ws()
            return True
        if c == close:
            self.i += 1
            return False
        raise self.syntax()

    def hex4(self, j: int) -> int:
        """The \\u digits at h[j:j+4]: value, -1 for a bad digit, -2 for the end (first wins)."""
        value = 0
        for k in range(j, j + 4):
            if k >= self.n:
                return -2
            c = self.h[k]
            if c not in _HEX:
                return -1
            value = value * 16 + int(chr(c), 16)
        return value

    def string(self) -> str:
        """The string whose quote is at the read position, decoded; leaves i after its end."""
        h, n = self.h, self.n
        i = self.i + 1
        parts: list[str] = []
        while True:
            match = _PLAIN.match(h, i)
            assert match is not None
            j = match.end()
            if j > i:
                # runs stop only at ASCII bytes, so they never split a UTF-8 sequence
                parts.append(h[i:j].decode("utf-8"))
            i = j
            if i >= n:
                raise _Reject(HEADER_JSON, n)
            c = h[i]
            if c == _QUOTE:
                break
            if c != _BACKSLASH:  # a control character
                raise _Reject(HEADER_JSON, i)
            if i + 1 >= n:
                raise _Reject(HEADER_JSON, n)
            e = h[i + 1]
            simple = _SIMPLE_ESCAPES.get(e)
            if simple is not None:
                parts.append(simple)
                i += 2
                continue
            if e != ord("u"):
                raise _Reject(HEADER_JSON, i)
            v = self.hex4(i + 2)
            if v == -2:
                raise _Reject(HEADER_JSON, n)
            if v < 0:
                raise _Reject(HEADER_JSON, i)
            if 0xDC00 <= v <= 0xDFFF:  # low surrogate with no high one before it
                raise _Reject(HEADER_JSON, i)
            if 0xD800 <= v <= 0xDBFF:  # high surrogate: a \u low surrogate must follow at once
                if i + 7 < n and h[i + 6] == _BACKSLASH and h[i + 7] == ord("u"):
                    w = self.hex4(i + 8)
                    if w == -2:
                        raise _Reject(HEADER_JSON, n)
                    if w < 0:
                        raise _Reject(HEADER_JSON, i + 6)
                    if not 0xDC00 <= w <= 0xDFFF:
                        raise _Reject(HEADER_JSON, i)
                    parts.append(chr(0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00)))
                    i += 12
                else:
                    raise _Reject(HEADER_JSON, i)
            else:
                parts.append(chr(v))
                i += 6
        self.i = i + 1
        return "".join(parts)

    def _required_digits(self, i: int) -> int:
        """The end of the run of digits that must start at ``i`` (after '.', 'e', 'e+'...)."""
        if i >= self.n:
            raise _Reject(HEADER_JSON, self.n)
        match = _DIGITS.match(self.h, i)
        assert match is not None
        if match.end() == i:
            raise _Reject(HEADER_JSON, i)
        return match.end()

    def number(self) -> int | None:
        """Scans the number at i (a '-' or a digit): its value if a plain u64, else None."""
        h, n = self.h, self.n
        i = self.i
        ok = True
        if h[i] == ord("-"):
            ok = False  # negative, also "-0"
            i += 1
        if i >= n:
            raise _Reject(HEADER_JSON, n)
        start = i
        if h[i] == ord("0"):
            i += 1  # a leading zero stands alone; a digit after it fails in after_value
        elif 0x31 <= h[i] <= 0x39:  # 1-9
            match = _DIGITS.match(h, i)
            assert match is not None
            i = match.end()
        else:
            raise _Reject(HEADER_JSON, i)
        digits = h[start:i]
        if i < n and h[i] == ord("."):
            ok = False
            i = self._required_digits(i + 1)
        if i < n and h[i] in b"eE":
            ok = False
            i += 1
            if i < n and h[i] in b"+-":
                i += 1
            i = self._required_digits(i)
        self.i = i
        # more than 20 digits never fits 64 bits (and int() of 5000 digits would be refused)
        if not ok or len(digits) > 20:
            return None
        value = int(digits)
        return value if value <= U64_MAX else None

    def parse(self) -> list[Range]:
        self.skip_ws()
        c = self.peek()
        if c != _LBRACE:
            if c in _VALUE_START:
                raise _Reject(NOT_AN_OBJECT, self.i)
            raise self.syntax()
        self.i += 1
        self.skip_ws()
        if self.peek() == _RBRACE:
            self.i += 1
        else:
            while True:
                self.key_start()
                key_off = self.i
                key = self.string()
                if key in self.top_keys:
                    self.dup_offsets.append(key_off)
                self.top_keys.add(key)
                self.colon()
                if key == "__metadata__":
                    self.metadata()
                else:
                    self.entry(key_off)
                if not self.after_value(_RBRACE):
                    break
        self.skip_ws()
        if self.i < self.n:  # e.g. NUL padding after the object
            raise _Reject(HEADER_JSON, self.i)
        if self.dup_offsets:
            raise _Reject(DUPLICATE_KEY, min(self.dup_offsets))
        return self.ranges

    def metadata(self) -> None:
        if self.peek() != _LBRACE:
            raise self.wrong_type(BAD_METADATA)
        self.i += 1
        self.skip_ws()
        if self.peek() == _RBRACE:
            self.i += 1
            return
        while True:
            self.key_start()
            key_off = self.i
            key = self.string()
            if key in self.meta_keys:
                self.dup_offsets.append(key_off)
            self.meta_keys.add(key)
            self.colon()
            if self.peek() != _QUOTE:
                raise self.wrong_type(BAD_METADATA)
            self.string()
            if not self.after_value(_RBRACE):
                return

    def entry(self, name_off: int) -> None:
        if self.peek() != _LBRACE:
            raise self.wrong_type(BAD_ENTRY)
        obj_off = self.i
        self.i += 1
        self.skip_ws()
        if self.peek() == _RBRACE:
            self.i += 1
            raise _Reject(BAD_ENTRY, obj_off)
        seen: set[str] = set()
        bits = 0
        shape: list[int] = []
        begin = end = 0
        while True:
            self.key_start()
            key_off = self.i
            member = self.string()
            if member not in _MEMBERS or member in seen:
                raise _Reject(BAD_ENTRY, key_off)
            seen.add(member)
            self.colon()
            val_off = self.i
            if member == "dtype":
                if self.peek() != _QUOTE:
                    raise self.wrong_type(BAD_DTYPE)
                bits = DTYPE_BITS.get(self.string(), 0)
                if bits == 0:
                    raise _Reject(BAD_DTYPE, val_off)
            elif member == "shape":
                shape = self.shape()
            else:
                begin, end = self.offsets(val_off)
            if not self.after_value(_RBRACE):
                break
        if len(seen) != 3:
            raise _Reject(BAD_ENTRY, obj_off)
        if not _nbits_ok(shape, bits, end - begin):
            raise _Reject(SIZE_MISMATCH, name_off)
        self.ranges.append((begin, end))

    def shape(self) -> list[int]:
        if self.peek() != _LBRACKET:
            raise self.wrong_type(BAD_SHAPE)
        self.i += 1
        self.skip_ws()
        dims: list[int] = []
        if self.peek() == _RBRACKET:
            self.i += 1  # rank 0: one element
            return dims
        while True:
            if self.i >= self.n:
                raise _Reject(HEADER_JSON, self.n)
            if self.h[self.i] not in _NUMBER_START:
                raise self.wrong_type(BAD_SHAPE)
            el_off = self.i
            dim = self.number()
            if dim is None:
                raise _Reject(BAD_SHAPE, el_off)
            dims.append(dim)
            if not self.after_value(_RBRACKET):
                return dims

    def offsets(self, val_off: int) -> Range:
        if self.peek() != _LBRACKET:
            raise self.wrong_type(BAD_OFFSETS)
        self.i += 1
        self.skip_ws()
        values: list[int] = []
        if self.peek() == _RBRACKET:
            self.i += 1
        else:
            while True:
                if self.i >= self.n:
                    raise _Reject(HEADER_JSON, self.n)
                c = self.h[self.i]
                if c not in _VALUE_START:
                    raise _Reject(HEADER_JSON, self.i)
                if len(values) == 2 or c not in _NUMBER_START:
                    raise _Reject(BAD_OFFSETS, val_off)
                value = self.number()
                if value is None:
                    raise _Reject(BAD_OFFSETS, val_off)
                values.append(value)
                if not self.after_value(_RBRACKET):
                    break
        if len(values) != 2 or values[0] > values[1]:
            raise _Reject(BAD_OFFSETS, val_off)
        return values[0], values[1]
