"""Builds safetensors files (as bytes), well-formed and malformed, for the header-check tests.

Every case names the exact code expected and, where it means something, the exact detail
(offsets count from the start of the header JSON, i.e. file byte 8).
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass

from mlxk.core import codes as cc

# Written out again on purpose: the tests' own list of the 22 dtypes is the oracle, so dropping
# one from the checker's table fails a test instead of silently agreeing with it.
DTYPE_BITS = {
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

LFS_TEXT = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 123\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    code: int
    detail: int | None = None  # None: not asserted


def st_file(header: str | bytes, data: bytes = b"", hlen: int | None = None) -> bytes:
    """8-byte little-endian length + header + data (hlen overrides the length field)."""
    raw = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if hlen is None else hlen) + raw + data


def ent(dtype: str = "F32", shape: object = (1,), offsets: object = (0, 4)) -> str:
    """A tensor entry; shape/offsets may be tuples (formatted as arrays) or raw JSON text."""
    sh = shape if isinstance(shape, str) else json.dumps(list(shape))  # type: ignore[call-overload]
    of = offsets if isinstance(offsets, str) else json.dumps(list(offsets))  # type: ignore[call-overload]
    return f'{{"dtype":"{dtype}","shape":{sh},"data_offsets":{of}}}'


def off(header: str | bytes, needle: str | bytes, nth: int = 0) -> int:
    """Byte offset of the nth occurrence of needle in the header."""
    raw = header.encode("utf-8") if isinstance(header, str) else header
    pat = needle.encode("utf-8") if isinstance(needle, str) else needle
    pos = -1
    for _ in range(nth + 1):
        pos = raw.index(pat, pos + 1)
    return pos


def hdr_case(name: str, header: str | bytes, code: int, detail: int | None, data_len: int = 4) -> Case:
    return Case(name, st_file(header, b"\0" * data_len), code, detail)


def json_case(name: str, header: str | bytes, detail: int | None, code: int = cc.HEADER_JSON) -> Case:
    return hdr_case(name, header, code, detail)


def _one(value: str) -> str:
    return '{"t":' + value + "}"


def val(header: str | bytes, member: str) -> int:
    """Offset of the first byte of a member's value (written without spaces by ent)."""
    return off(header, f'"{member}":') + len(member) + 3


def malformed_cases() -> list[Case]:
    c: list[Case] = []
    h: str | bytes
    E = ent()
    good = '{"t":' + E + "}"

    # sizes and the length field
    c.append(Case("empty", b"", cc.EMPTY, 0))
    c.append(Case("3_bytes", b"\x01\x02\x03", cc.TOO_SMALL, 0))
    c.append(Case("7_bytes", b"\x02\0\0\0\0\0\0", cc.TOO_SMALL, 0))
    c.append(Case("hlen_0", st_file("{}", hlen=0), cc.HEADER_LENGTH, 0))
    c.append(Case("hlen_past_file", st_file("{}", hlen=100), cc.HEADER_LENGTH, 100))
    c.append(Case("hlen_one_past_file", st_file("{}", hlen=3), cc.HEADER_LENGTH, 3))
    c.append(Case("hlen_over_100MB", st_file("{}", hlen=100_000_001), cc.HEADER_LENGTH, 100_000_001))
    c.append(Case("hlen_u64_max", st_file("{}", hlen=2**64 - 1), cc.HEADER_LENGTH, 2**64 - 1))
    c.append(Case("only_length_field", struct.pack("<Q", 2), cc.HEADER_LENGTH, 2))
    c.append(Case("lfs_pointer", LFS_TEXT, cc.LFS_POINTER, 0))

    # UTF-8
    for label, bad in [
        ("stray_continuation", b"\x80"),
        ("overlong_2", b"\xc0\x80"),
        ("overlong_2_c1", b"\xc1\xbf"),
        ("overlong_3", b"\xe0\x80\x80"),
        ("overlong_4", b"\xf0\x80\x80\x80"),
        ("surrogate_d800", b"\xed\xa0\x80"),
        ("surrogate_dfff", b"\xed\xbf\xbf"),
        ("above_10ffff", b"\xf4\x90\x80\x80"),
        ("f5", b"\xf5\x80\x80\x80"),
        ("ff", b"\xff"),
        ("truncated_3", b"\xe2\x82"),
        ("truncated_4", b"\xf0\x9f\x98"),
        ("bad_continuation", b"\xc3\x41"),
    ]:
        h = b'{"__metadata__":{"k":"ab' + bad + b'"}}'
        c.append(hdr_case(f"utf8_{label}", h, cc.HEADER_UTF8, off(h, bad), data_len=0))
    h = b'{"t\xc3\xa9":' + ent().encode() + b',"u":"\xff"}'
    c.append(hdr_case("utf8_after_valid_multibyte", h, cc.HEADER_UTF8, off(h, b"\xff")))
    h = b'{"t":' + ent().encode() + b"}" + b" " * 20 + b"\xe2"
    c.append(hdr_case("utf8_truncated_at_header_end", h, cc.HEADER_UTF8, len(h) - 1))

    # not an object / not JSON at the top
    for text in ["[]", '"x"', "1", "-1", "0", "true", "false", "null", "[[[", '"unterminated', "nul"]:
        c.append(json_case(f"not_object_{text}", text, 0, code=cc.NOT_AN_OBJECT))
    c.append(json_case("not_object_after_spaces", "  \n[]", 3, code=cc.NOT_AN_OBJECT))
    c.append(json_case("bom", "\ufeff{}", 0))
    c.append(json_case("nul_first", "\0{}", 0))
    c.append(json_case("only_spaces", "    ", 4))
    c.append(json_case("nan_top", "NaN", 0))
    c.append(json_case("infinity_top", "Infinity", 0))
    c.append(json_case("neg_infinity_top", "-Infinity", 0, code=cc.NOT_AN_OBJECT))
    c.append(json_case("x_top", "x", 0))
    c.append(json_case("nul_padding", good + "\0\0\0", len(good)))
    c.append(json_case("nul_padding_after_spaces", good + "  \0", len(good) + 2))
    c.append(json_case("second_object", good + "{}", len(good)))
    c.append(json_case("truncated_json", good[:-1], len(good) - 1))
    c.append(json_case("truncated_in_string", '{"t":{"dty', 10))
    c.append(json_case("truncated_after_brace", "{", 1))
    c.append(json_case("brace_brace", "{{", 1))
    c.append(json_case("unquoted_key", "{t:1}", 1))
    c.append(json_case("single_quoted_key", "{'t':1}", 1))
    h = '{"t" ' + E + "}"
    c.append(json_case("missing_colon", h, off(h, "{", 1)))
    h = '{"a":' + E + ' "b":' + E + "}"
    c.append(json_case("missing_comma", h, off(h, '"b"')))
    h = '{"t":' + E + ",}"
    c.append(json_case("trailing_comma_top", h, len(h) - 1))
    h = _one('{"dtype":"F32","shape":[1],"data_offsets":[0,4],}')
    c.append(json_case("trailing_comma_entry", h, off(h, "}")))
    h = _one(ent(shape="[1,]"))
    c.append(json_case("trailing_comma_shape", h, off(h, "]")))
    h = _one(ent(offsets="[0,4,]"))
    c.append(hdr_case("trailing_comma_offsets_third", h, cc.HEADER_JSON, off(h, "]", 1)))
    h = '{"t":' + E + "}}"
    c.append(json_case("extra_close", h, len(h) - 1))

    # strings
    h = _one(ent()).replace('"t"', '"a\tb"')
    c.append(json_case("raw_tab_in_key", h, off(h, "\t")))
    h = '{"__metadata__":{"k":"line\nbreak"}}'
    c.append(json_case("raw_newline_in_value", h, off(h, "\n")))
    h = '{"__metadata__":{"k":"a\x1fb"}}'
    c.append(json_case("raw_unit_separator", h, off(h, "\x1f")))
    h = '{"__metadata__":{"k":"a\\xb"}}'
    c.append(json_case("bad_escape_x", h, off(h, "\\")))
    h = '{"__metadata__":{"k":"a\\\'b"}}'
    c.append(json_case("bad_escape_quote", h, off(h, "\\")))
    h = '{"__metadata__":{"k":"a\\u12G4"}}'
    c.append(json_case("bad_u_escape_hex", h, off(h, "\\")))
    h = '{"__metadata__":{"k":"a\\u12"}}'
    c.append(json_case("short_u_escape", h, off(h, "\\")))
    h = '{"__metadata__":{"k":"a\\U0041"}}'
    c.append(json_case("capital_U_escape", h, off(h, "\\")))
    c.append(json_case("backslash_at_end", '{"k\\', 4))
    c.append(json_case("u_escape_at_end", '{"k\\u00', 7))

    # lone surrogates: the offset of the unpaired escape's backslash
    for label, text, which in [
        ("high_alone", "a\\ud800b", 0),
        ("high_at_end", "a\\uD800", 0),
        ("low_alone", "\\udc00", 0),
        ("high_high", "\\ud800\\ud800", 0),
        ("high_then_bmp", "\\ud83d\\u0041", 0),
        ("high_then_newline_escape", "\\ud83d\\n", 0),
        ("pair_then_low", "\\ud83d\\ude00\\ude00", 2),
        ("high_then_bad_hex", "\\ud83d\\uZZZZ", 1),
    ]:
        h = '{"__metadata__":{"k":"' + text + '"}}'
        c.append(json_case(f"surrogate_{label}_in_value", h, off(h, "\\", which)))
        h = '{"' + text + '":' + E + "}"
        c.append(json_case(f"surrogate_{label}_in_name", h, off(h, "\\", which)))

    # NaN / Infinity where numbers go
    h = _one(ent(shape="[NaN]"))
    c.append(json_case("nan_dim", h, off(h, "NaN")))
    h = _one(ent(offsets="[0,Infinity]"))
    c.append(json_case("infinity_offset", h, off(h, "Infinity")))
    h = _one(ent(shape="[-Infinity]"))
    c.append(json_case("neg_infinity_dim", h, off(h, "Infinity")))
    h = '{"__metadata__":{"k":NaN}}'
    c.append(json_case("nan_metadata", h, off(h, "NaN")))
    h = _one("NaN")
    c.append(json_case("nan_tensor", h, off(h, "NaN")))

    # number syntax (HEADER_JSON) versus valid-but-not-an-integer (BAD_SHAPE / BAD_OFFSETS)
    for text, at in [
        ("[01]", 2),
        ("[+1]", 1),
        ("[-]", 2),
        ("[1.]", 3),
        ("[1e]", 3),
        ("[1e+]", 4),
        ("[.5]", 1),
        ("[1 2]", 3),
        ("[0x10]", 2),
        ("[-a]", 2),
        ("[1,,2]", 3),
    ]:
        h = _one(ent(shape=text))
        c.append(json_case(f"bad_number_dim_{text}", h, val(h, "shape") + at))
    h = _one(ent(offsets="[00,4]"))
    c.append(json_case("bad_number_offset_leading_zero", h, off(h, "0,4")))
    h = _one(ent(offsets="[0,4.]"))
    c.append(json_case("bad_number_offset_dot", h, off(h, "]", 1)))

    # 5000-digit numbers, and u64 limits
    big = "9" * 5000
    h = _one(ent(shape=f"[{big}]"))
    c.append(hdr_case("dim_5000_digits", h, cc.BAD_SHAPE, off(h, big)))
    h = _one(ent(offsets=f"[0,{big}]"))
    c.append(hdr_case("offset_5000_digits", h, cc.BAD_OFFSETS, off(h, "[", 1)))
    h = _one(ent(shape=f"[1{'0' * 4999}.5]"))
    c.append(hdr_case("dim_5000_digit_float", h, cc.BAD_SHAPE, val(h, "shape") + 1))
    h = _one(ent(shape="[18446744073709551616]"))
    c.append(hdr_case("dim_2_pow_64", h, cc.BAD_SHAPE, off(h, "18446744073709551616")))
    h = _one(ent(offsets="[0,18446744073709551616]"))
    c.append(hdr_case("offset_2_pow_64", h, cc.BAD_OFFSETS, off(h, "[", 1)))
    h = _one(ent(shape="[18446744073709551615]", offsets="[0,4]"))
    c.append(hdr_case("dim_u64_max_size_mismatch", h, cc.SIZE_MISMATCH, off(h, '"t"')))

    # 10,000-deep nesting, rejected at once without recursion
    deep = "[" * 10000 + "]" * 10000
    c.append(json_case("deep_root_array", deep, 0, code=cc.NOT_AN_OBJECT))
    c.append(json_case("deep_root_object", "{" * 10000 + "}" * 10000, 1))
    h = _one(deep)
    c.append(hdr_case("deep_tensor_value", h, cc.BAD_ENTRY, off(h, "[")))
    h = _one(ent(shape=deep))
    c.append(hdr_case("deep_in_shape", h, cc.BAD_SHAPE, off(h, "[[") + 1))
    h = _one(ent(offsets=deep))
    c.append(hdr_case("deep_in_offsets", h, cc.BAD_OFFSETS, off(h, "[[")))
    h = '{"__metadata__":{"k":' + deep + "}}"
    c.append(hdr_case("deep_in_metadata", h, cc.BAD_METADATA, off(h, "["), data_len=0))
    h = '{"__metadata__":' + deep + "}"
    c.append(hdr_case("deep_as_metadata", h, cc.BAD_METADATA, off(h, "["), data_len=0))
    h = _one('{"a":' * 10000 + "1" + "}" * 10000)
    c.append(hdr_case("deep_objects_in_entry", h, cc.BAD_ENTRY, off(h, '"a"')))
    h = _one("{" * 10000)
    c.append(json_case("deep_braces_in_entry", h, off(h, "{", 2)))

    # entry members
    for missing in ["dtype", "shape", "data_offsets"]:
        members = {"dtype": '"dtype":"F32"', "shape": '"shape":[1]', "data_offsets": '"data_offsets":[0,4]'}
        del members[missing]
        h = _one("{" + ",".join(members.values()) + "}")
        c.append(hdr_case(f"missing_{missing}", h, cc.BAD_ENTRY, off(h, "{", 1)))
    h = _one("{}")
    c.append(hdr_case("empty_entry", h, cc.BAD_ENTRY, off(h, "{", 1)))
    h = _one('{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}')
    c.append(hdr_case("unknown_member", h, cc.BAD_ENTRY, off(h, '"extra"')))
    h = _one('{"Dtype":"F32","shape":[1],"data_offsets":[0,4]}')
    c.append(hdr_case("capitalised_member", h, cc.BAD_ENTRY, off(h, '"Dtype"')))
    h = _one('{"dtype":"F32","shape":[1],"dtype":"F32","data_offsets":[0,4]}')
    c.append(hdr_case("repeated_member", h, cc.BAD_ENTRY, off(h, '"dtype"', 1)))
    h = _one('{"dtype":"F32","shape":[1],"\\u0064type":"F32","data_offsets":[0,4]}')
    c.append(hdr_case("repeated_member_escaped", h, cc.BAD_ENTRY, off(h, '"\\u0064')))
    for label, value in [
        ("number", "1"),
        ("string", '"x"'),
        ("array", "[0,4]"),
        ("true", "true"),
        ("null", "null"),
    ]:
        h = _one(value)
        c.append(hdr_case(f"tensor_value_{label}", h, cc.BAD_ENTRY, off(h, value)))
    h = _one("x")
    c.append(json_case("tensor_value_garbage", h, off(h, "x")))
    h = '{"t":}'
    c.append(json_case("tensor_value_missing", h, off(h, "}")))

    # dtype
    for label, value in [
        ("lower", '"f32"'),
        ("unknown", '"F128"'),
        ("empty", '""'),
        ("spaced", '" F32"'),
        ("number", "32"),
        ("null", "null"),
        ("array", '["F32"]'),
        ("object", "{}"),
    ]:
        h = _one('{"dtype":' + value + ',"shape":[1],"data_offsets":[0,4]}')
        c.append(hdr_case(f"dtype_{label}", h, cc.BAD_DTYPE, off(h, value)))
    h = _one('{"dtype":F32,"shape":[1],"data_offsets":[0,4]}')
    c.append(json_case("dtype_unquoted", h, off(h, "F32")))

    # shape
    for label, value, at in [
        ("negative", "[-1]", 1),
        ("neg_zero", "[-0]", 1),
        ("float", "[1.0]", 1),
        ("exponent", "[1e3]", 1),
        ("exp_negative", "[2,1E-3]", 3),
        ("true", "[true]", 1),
        ("null", "[2,null]", 3),
        ("string", '["2"]', 1),
        ("nested", "[[2]]", 1),
        ("object", "[{}]", 1),
        ("not_array", "3", 0),
        ("string_value", '"[1]"', 0),
        ("obj_value", "{}", 0),
        ("false_value", "false", 0),
    ]:
        h = _one(ent(shape=value))
        c.append(hdr_case(f"shape_{label}", h, cc.BAD_SHAPE, val(h, "shape") + at))

    # data_offsets
    for label, value in [
        ("three", "[0,4,8]"),
        ("one", "[0]"),
        ("empty", "[]"),
        ("negative", "[-1,3]"),
        ("float", "[0.0,4]"),
        ("exponent", "[0,4e0]"),
        ("true", "[true,4]"),
        ("string", '["0",4]'),
        ("end_lt_begin", "[4,0]"),
        ("nested", "[[0,4]]"),
        ("not_array", "4"),
        ("object", "{}"),
        ("null", "null"),
    ]:
        h = _one(ent(offsets=value))
        c.append(hdr_case(f"offsets_{label}", h, cc.BAD_OFFSETS, val(h, "data_offsets")))

    # size = prod(shape) * bits / 8
    h = _one(ent("F32", (2,), (0, 4)))
    c.append(hdr_case("size_too_small_range", h, cc.SIZE_MISMATCH, 1))
    h = _one(ent("F16", (1,), (0, 4)))
    c.append(hdr_case("size_wrong_dtype", h, cc.SIZE_MISMATCH, 1))
    h = _one(ent("U8", (2**32, 2**32, 2), (0, 0)))
    c.append(hdr_case("size_overflow_wraps_to_zero", h, cc.SIZE_MISMATCH, 1, data_len=0))
    h = _one(ent("F32", (2**32, 2**30), (0, 0)))
    c.append(hdr_case("size_overflow_times_bits", h, cc.SIZE_MISMATCH, 1, data_len=0))
    h = _one(ent("U8", (2, 2**63, 0), (0, 0)))  # overflows before the 0 is reached: safetensors refuses it
    c.append(hdr_case("size_overflow_before_zero_dim", h, cc.SIZE_MISMATCH, 1, data_len=0))
    h = _one(ent("F6_E2M3", (1,), (0, 1)))
    c.append(hdr_case("size_f6_not_whole_bytes", h, cc.SIZE_MISMATCH, 1, data_len=1))
    h = _one(ent("F4", (3,), (0, 2)))
    c.append(hdr_case("size_f4_odd", h, cc.SIZE_MISMATCH, 1, data_len=2))
    h = '{"a":' + ent("U8", (1,), (0, 1)) + ',"b":' + ent("F32", (), (1, 2)) + "}"
    c.append(hdr_case("size_scalar_mismatch", h, cc.SIZE_MISMATCH, off(h, '"b"'), data_len=2))

    # layout
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"b":' + ent("F32", (1,), (8, 12)) + "}"
    c.append(hdr_case("layout_gap", h, cc.LAYOUT, 8, data_len=12))
    h = '{"a":' + ent("F32", (2,), (0, 8)) + ',"b":' + ent("F32", (2,), (4, 12)) + "}"
    c.append(hdr_case("layout_overlap", h, cc.LAYOUT, 4, data_len=12))
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"b":' + ent("F32", (1,), (0, 4)) + "}"
    c.append(hdr_case("layout_same_range", h, cc.LAYOUT, 0, data_len=4))
    h = _one(ent("F32", (1,), (4, 8)))
    c.append(hdr_case("layout_not_at_zero", h, cc.LAYOUT, 4, data_len=8))
    h = '{"a":' + ent("F32", (2,), (0, 8)) + ',"z":' + ent("F32", (0,), (4, 4)) + "}"
    c.append(hdr_case("layout_empty_inside_other", h, cc.LAYOUT, 4, data_len=8))

    # extent
    h = _one(E)
    n = len(h)
    c.append(hdr_case("data_one_byte_short", h, cc.TRUNCATED, 8 + n + 4, data_len=3))
    c.append(hdr_case("data_one_byte_long", h, cc.TRAILING_BYTES, 8 + n + 4, data_len=5))
    c.append(hdr_case("data_missing", h, cc.TRUNCATED, 8 + n + 4, data_len=0))
    c.append(hdr_case("empty_header_with_data", "{}", cc.TRAILING_BYTES, 10, data_len=1))
    # tensor sizes that each fit, but header + data needs more than 2**64-1 bytes: saturated
    big_n = 2**61 - 1
    h = "{" + ",".join(f'"t{k}":' + ent("U8", (big_n,), (k * big_n, (k + 1) * big_n)) for k in range(8)) + "}"
    c.append(hdr_case("need_beyond_u64", h, cc.TRUNCATED, 2**64 - 1, data_len=0))

    # __metadata__
    for label, body, needle in [
        ("int", '{"k":1}', "1"),
        ("null", '{"k":null}', "null"),
        ("true", '{"a":"x","k":true}', "true"),
        ("array", '{"k":["x"]}', "["),
        ("object", '{"k":{}}', "{}"),
    ]:
        h = '{"__metadata__":' + body + "}"
        c.append(hdr_case(f"metadata_value_{label}", h, cc.BAD_METADATA, off(h, needle), 0))
    for label, value in [("array", "[]"), ("string", '"x"'), ("null", "null"), ("number", "0")]:
        h = '{"__metadata__":' + value + "}"
        c.append(hdr_case(f"metadata_is_{label}", h, cc.BAD_METADATA, off(h, value), 0))
    h = '{"__metadata__":{"k":"v",}}'
    c.append(json_case("metadata_trailing_comma", h, off(h, "}")))
    h = '{"__metadata__":{"k":v}}'
    c.append(json_case("metadata_unquoted_value", h, off(h, "v}")))

    # duplicate keys (checked after the parse); detail = smallest offset of a repeating key
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"a":' + ent("F32", (1,), (4, 8)) + "}"
    c.append(hdr_case("duplicate_tensor", h, cc.DUPLICATE_KEY, off(h, '"a"', 1), data_len=8))
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"a":' + ent("F32", (1,), (0, 4)) + "}"
    c.append(hdr_case("duplicate_tensor_same_entry", h, cc.DUPLICATE_KEY, off(h, '"a"', 1), data_len=4))
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"\\u0061":' + ent("F32", (1,), (4, 8)) + "}"
    c.append(hdr_case("duplicate_tensor_escaped", h, cc.DUPLICATE_KEY, off(h, '"\\u0061"'), data_len=8))
    h = '{"\\ud83d\\ude00":' + ent("F32", (1,), (0, 4)) + ',"😀":' + ent("F32", (1,), (4, 8)) + "}"
    c.append(hdr_case("duplicate_tensor_surrogate_pair", h, cc.DUPLICATE_KEY, off(h, '"😀"'), data_len=8))
    h = '{"__metadata__":{"k":"1","j":"2","k":"3"}}'
    c.append(hdr_case("duplicate_metadata_key", h, cc.DUPLICATE_KEY, off(h, '"k"', 1), data_len=0))
    h = '{"__metadata__":{"k":"1"},"__metadata__":{"j":"2"}}'
    c.append(hdr_case("duplicate_metadata_object", h, cc.DUPLICATE_KEY, off(h, '"__metadata__"', 1), 0))
    h = '{"__metadata__":{"k":"1"},"\\u005f_metadata__":{"k":"2"}}'
    c.append(hdr_case("duplicate_metadata_escaped", h, cc.DUPLICATE_KEY, off(h, '"\\u005f'), 0))
    # the metadata repeat comes first in the file, the tensor repeat later: the smaller wins
    h = (
        '{"__metadata__":{"k":"1","k":"2"},"a":'
        + ent("F32", (1,), (0, 4))
        + ',"a":'
        + ent("F32", (1,), (4, 8))
        + "}"
    )
    c.append(hdr_case("duplicate_both_objects", h, cc.DUPLICATE_KEY, off(h, '"k"', 1), data_len=8))
    h = (
        '{"k":'
        + ent("F32", (1,), (0, 4))
        + ',"__metadata__":{"k":"1"},"a":'
        + ent("F32", (1,), (4, 8))
        + ',"a":'
        + ent("F32", (1,), (8, 12))
        + "}"
    )
    c.append(
        hdr_case("metadata_key_may_equal_tensor_name", h, cc.DUPLICATE_KEY, off(h, '"a"', 1), data_len=12)
    )
    # a colon inside a string must not hide a repeated key from the fast path's colon count
    h = (
        '{"__metadata__":{"t":"1:2"},"a":'
        + ent("F32", (1,), (0, 4))
        + ',"a":'
        + ent("F32", (1,), (0, 4))
        + "}"
    )
    c.append(hdr_case("duplicate_with_colon_in_string", h, cc.DUPLICATE_KEY, off(h, '"a"', 1), data_len=4))
    h = '{"a":{},"a":' + ent("F32", (1,), (0, 4)) + "}"
    c.append(hdr_case("duplicate_first_value_invalid", h, cc.BAD_ENTRY, off(h, "{}"), data_len=4))
    # a duplicate does not hide an earlier-found semantic error (those are found during the parse)
    h = '{"a":' + ent("F32", (1,), (0, 4)) + ',"a":' + ent("F32", (2,), (4, 8)) + "}"
    c.append(hdr_case("duplicate_after_size_error", h, cc.SIZE_MISMATCH, off(h, '"a"', 1), data_len=8))
    return c


def accepted_cases() -> list[Case]:
    c: list[Case] = []
    E = ent()

    def ok(name: str, header: str | bytes, data_len: int) -> None:
        c.append(Case(name, st_file(header, b"\0" * data_len), cc.OK, 0))

    ok("one_tensor", '{"t":' + E + "}", 4)
    ok("empty_header", "{}", 0)
    ok("empty_header_spaced", " { } ", 0)
    ok(
        "whitespace_everywhere",
        ' \t\r\n{ "t" :\n{ "dtype" : "F32" ,\t"shape" : [ 1 ] , "data_offsets" : [ 0 , 4 ] } }\r\n ',
        4,
    )
    h = '{"t":' + E + "}"
    ok("writer_padding", h + " " * (-(len(h)) % 8), 4)
    ok("trailing_spaces", h + " " * 13, 4)
    ok("leading_spaces", "   " + h, 4)
    ok("members_any_order", '{"t":{"data_offsets":[0,4],"shape":[1],"dtype":"F32"}}', 4)
    ok(
        "escaped_member_names",
        '{"t":{"\\u0064type":"F\\u0033\\u0032","shape":[1],"data\\u005foffsets":[0,4]}}',
        4,
    )
    ok("zero_size_tensor", '{"t":' + ent("F32", (0,), (0, 0)) + "}", 0)
    ok("zero_dim_among_others", '{"t":' + ent("F32", (3, 0, 5), (0, 0)) + "}", 0)
    ok("zero_dim_with_huge_dims", '{"t":' + ent("U8", (2**63, 0, 2**63), (0, 0)) + "}", 0)
    ok(
        "zero_size_tensors_around",
        '{"z0":'
        + ent("F32", (0,), (0, 0))
        + ',"t":'
        + E
        + ',"z4":'
        + ent("U8", (0, 7), (4, 4))
        + ',"z4b":'
        + ent("BOOL", (0,), (4, 4))
        + "}",
        4,
    )
    ok("rank0_scalar", '{"s":' + ent("F64", (), (0, 8)) + "}", 8)
    ok("scalar_shape_with_spaces", '{"s":' + ent("U8", "[ ]", (0, 1)) + "}", 1)
    ok("f4_two_elements", '{"t":' + ent("F4", (2,), (0, 1)) + "}", 1)
    ok("f6_e2m3_four", '{"t":' + ent("F6_E2M3", (4,), (0, 3)) + "}", 3)
    ok("f6_e3m2_2x4", '{"t":' + ent("F6_E3M2", (2, 4), (0, 6)) + "}", 6)
    ok(
        "unicode_names",
        '{"ünïcødé":'
        + ent("F32", (1,), (0, 4))
        + ',"名前.weight":'
        + ent("F32", (1,), (4, 8))
        + ',"😀":'
        + ent("U8", (1,), (8, 9))
        + ',"\\ud83d\\ude01\\n\\"q\\"":'
        + ent("U8", (1,), (9, 10))
        + "}",
        10,
    )
    ok(
        "metadata",
        '{"__metadata__":{"format":"pt","note":"a \\"quoted\\" \\u00e9 \\ud83d\\ude00 \\\\ \\/"},"t":'
        + E
        + "}",
        4,
    )
    ok("metadata_only", '{"__metadata__":{}}', 0)
    ok("colons_in_strings", '{"__metadata__":{"time":"12:00"},"a:b":' + E + "}", 4)
    ok("metadata_last", '{"t":' + E + ',"__metadata__":{"k":""}}', 4)
    ok("u64_max_dim_zero_size", '{"t":' + ent("U8", (2**64 - 1, 0), (0, 0)) + "}", 0)
    ok(
        "tensors_out_of_order",
        '{"b":' + ent("F32", (1,), (4, 8)) + ',"a":' + ent("F32", (1,), (0, 4)) + "}",
        8,
    )
    ok("del_char_in_name", '{"a\x7fb":' + E + "}", 4)
    # every dtype in one file
    parts = []
    pos = 0
    for name, bits in DTYPE_BITS.items():
        count = 8 // bits if bits < 8 and 8 % bits == 0 else (4 if bits == 6 else 3)
        nbytes = count * bits // 8
        parts.append(f'"{name.lower()}_t":' + ent(name, (count,), (pos, pos + nbytes)))
        pos += nbytes
    ok("all_22_dtypes", "{" + ",".join(parts) + "}", pos)
    for name, bits in DTYPE_BITS.items():
        nbytes = 2 * 4 * bits // 8
        ok(f"dtype_{name}", '{"t":' + ent(name, (2, 4), (0, nbytes)) + "}", nbytes)
    return c


def all_cases() -> list[Case]:
    return malformed_cases() + accepted_cases()


# ---------------------------------------------------------------------------------------------
# random valid files and single-byte mutations, for the parity tests

_NAME_CHARS = [
    "a",
    "b",
    "z",
    "0",
    ".",
    "_",
    "é",
    "名",
    "😀",
    "\\n",
    "\\u0041",
    "\\ud83d\\ude00",
    '\\"',
    "\\\\",
]
_INTERESTING = b'{}[]",:\\u0123456789-+.eE tfnN \t\r\n\x00\x1f\x7f\x80\xbf\xc3\xe2\xed\xf0\xf4\xffaAdDxX/'


def _ws(rng: random.Random) -> str:
    return rng.choice(["", "", "", " ", "\n", " \t ", "\r\n"])


def random_valid_file(rng: random.Random) -> bytes:
    """A well-formed safetensors file with random tensors, names, metadata and whitespace."""
    ntensors = rng.randint(0, 6)
    used: set[str] = set()
    tensors = []
    for _ in range(ntensors):
        while True:
            name = "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 4)))
            decoded = json.loads('"' + name + '"')
            if decoded not in used and decoded != "__metadata__":
                used.add(decoded)
                break
        dtype = rng.choice(list(DTYPE_BITS))
        bits = DTYPE_BITS[dtype]
        shape = [rng.choice([0, 1, 2, 3, 4, 8]) for _ in range(rng.randint(0, 3))]
        nel = 1
        for d in shape:
            nel *= d
        if nel * bits % 8:
            shape.append(8)  # makes any bit width whole bytes
            nel *= 8
        tensors.append((name, dtype, shape, nel * bits // 8))
    order = list(range(ntensors))
    rng.shuffle(order)  # data order differs from header order
    begins = {}
    pos = 0
    for k in order:
        begins[k] = pos
        pos += tensors[k][3]
    w = _ws
    members = []
    if rng.random() < 0.5:
        meta = ",".join(
            f'{w(rng)}"m{k}{rng.choice(_NAME_CHARS)}"{w(rng)}:{w(rng)}"{rng.choice(_NAME_CHARS)}v"'
            for k in range(rng.randint(0, 3))
        )
        members.append(f'{w(rng)}"__metadata__"{w(rng)}:{w(rng)}{{{meta}{w(rng)}}}')
    for k, (name, dtype, shape, nbytes) in enumerate(tensors):
        fields = [
            f'"dtype"{w(rng)}:{w(rng)}"{dtype}"',
            f'"shape"{w(rng)}:{w(rng)}[{w(rng)}{("," + w(rng)).join(str(d) for d in shape)}{w(rng)}]',
            f'"data_offsets"{w(rng)}:{w(rng)}[{begins[k]},{w(rng)}{begins[k] + nbytes}]',
        ]
        rng.shuffle(fields)
        body = ",".join(w(rng) + f + w(rng) for f in fields)
        members.append(f'{w(rng)}"{name}"{w(rng)}:{w(rng)}{{{body}}}{w(rng)}')
    rng.shuffle(members)
    header = w(rng) + "{" + ",".join(members) + w(rng) + "}" + " " * rng.randint(0, 7)
    return st_file(header, bytes(rng.randrange(256) for _ in range(min(pos, 64))) + b"\0" * max(0, pos - 64))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random single-byte change: mostly in the header, sometimes in the length or data."""
    buf = bytearray(data)
    hlen = int.from_bytes(data[:8], "little")
    if len(buf) <= 8 or not 0 < hlen <= len(buf) - 8:  # an earlier mutation broke the length
        hlen = len(buf)
        pos = rng.randrange(len(buf)) if buf else 0
        if not buf:
            return bytes([rng.randrange(256)])
    else:
        roll = rng.random()
        if roll < 0.05:
            pos = rng.randrange(8)  # the length field
        elif roll < 0.1 and len(buf) > 8 + hlen:
            pos = rng.randrange(8 + hlen, len(buf))
        else:
            pos = 8 + rng.randrange(hlen)
    byte = rng.choice(_INTERESTING) if rng.random() < 0.8 else rng.randrange(256)
    kind = rng.random()
    if kind < 0.7 or pos < 8:
        buf[pos] = byte
    elif kind < 0.85:
        buf.insert(pos, byte)
        buf[:8] = struct.pack("<Q", hlen + 1) if pos < 8 + hlen else buf[:8]
    else:
        del buf[pos]
        if pos < 8 + hlen:
            buf[:8] = struct.pack("<Q", hlen - 1)
    return bytes(buf)


def random_layout_file(rng: random.Random) -> bytes:
    """Well-formed JSON with random (often wrong) offsets, names that may repeat, random length."""
    members = []
    total = 0
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(["a", "b", "c", "\\u0061", "__metadata__"])
        if name == "__metadata__":
            members.append(f'"{name}":{{"{rng.choice("kj")}":"v","{rng.choice("kj")}":"w"}}')
            continue
        nbytes = rng.choice([0, 0, 1, 2, 4])
        begin = rng.choice([0, total, total, total + 1, max(0, total - 1), rng.randrange(12)])
        total = max(total, begin + nbytes)
        members.append(f'"{name}":' + ent("U8", (nbytes,), (begin, begin + nbytes)))
    header = "{" + ",".join(members) + "}"
    return st_file(header, b"\0" * max(0, total + rng.choice([-1, 0, 0, 0, 1])))
