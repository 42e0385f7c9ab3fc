"""Property tests (hypothesis) of the safetensors header check, on both cores and against safetensors.

- valid files, generated from a model (all 22 dtypes, zero-size and rank-0 tensors, data in any
  order, optional ``__metadata__``, members in any order, random whitespace and string escapes):
  both cores and the reference parser accept them, and safetensors reads the same tensors back;
- every single mutation of a valid file (a byte changed, a header byte inserted or removed with
  the length field adjusted, one byte cut off the end, one byte added): both cores give the same
  result, as bytes and as a file; what we accept safetensors accepts, and what safetensors
  accepts we reject only for the reasons listed in test_safetensors_check.STRICTER;
- raw bytes, length-prefixed bytes and arbitrary JSON objects as headers: both cores give the same
  ``(code, detail)`` and never raise.

Example counts keep the whole file to a few seconds; no hypothesis profile is registered.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxk.core import Core, implementation
from mlxk.core import codes as cc
from mlxk.core.twin import safetensors as py

try:  # tests/ as a package, or (pytest's default rootdir-less mode) as a sys.path entry
    from tests import safetensors_cases as sc
except ImportError:
    import safetensors_cases as sc  # type: ignore[no-redef,import-not-found]

U64_MAX = 2**64 - 1
Model = dict[str, tuple[str, list[int], bytes]]  # tensor name -> dtype, shape, data


def _native_or_none() -> Core | None:
    try:
        return implementation(native=True)
    except ImportError as exc:
        if os.environ.get("MLXK_REQUIRE_NATIVE") == "1":
            pytest.fail(
                f"mlxk.core._native is required (MLXK_REQUIRE_NATIVE=1) but cannot be imported: {exc}"
            )
        return None


@pytest.fixture(scope="module")
def cores() -> list[Core]:
    """The twin, and the native core when it is built (the properties then compare the two)."""
    native = _native_or_none()
    twin = implementation(native=False)
    return [twin] if native is None else [native, twin]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder for check_safetensors_file (module scope: hypothesis re-runs the test body)."""
    with tempfile.TemporaryDirectory(prefix="mlxk-st-props-") as path:
        yield Path(path)


def test_native_core_is_compared() -> None:
    if _native_or_none() is None:
        pytest.skip("mlxk.core._native is not built: the properties below ran on the twin alone")


def _same_result(cores: list[Core], data: bytes, file_size: int | None = None) -> tuple[int, int]:
    """The one (code, detail) that every core (and the twin's reference parser) gives."""
    results = [core.check_safetensors_bytes(data, file_size) for core in cores]
    results.append(py._check(data, file_size, fast=False))
    assert all(r == results[0] for r in results), (results, data)
    code, detail = results[0]
    assert type(code) is int and type(detail) is int
    return code, detail


# --- valid files ------------------------------------------------------------------------------

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_ws = st.text(alphabet=" \t\n\r", max_size=2)


def _u_escape(draw: st.DrawFn, code: int) -> str:
    upper = draw(st.booleans())
    return ("\\u%04X" if upper else "\\u%04x") % code


@st.composite
def json_string(draw: st.DrawFn, text: str) -> str:
    """``text`` as a JSON string literal, each character raw or escaped (at random)."""
    out = ['"']
    for ch in text:
        cp = ord(ch)
        must = ch in '"\\' or cp < 0x20
        if not must and draw(st.integers(0, 4)) != 0:  # mostly raw
            out.append(ch)
        elif ch in _SHORT_ESCAPES and draw(st.booleans()):
            out.append(_SHORT_ESCAPES[ch])
        elif cp > 0xFFFF:  # a surrogate pair
            cp -= 0x10000
            out.append(_u_escape(draw, 0xD800 + (cp >> 10)) + _u_escape(draw, 0xDC00 + (cp & 0x3FF)))
        else:
            out.append(_u_escape(draw, cp))
    out.append('"')
    return "".join(out)


_names = st.text(st.characters(codec="utf-8"), max_size=6).filter(lambda s: s != "__metadata__")


def _overflows_left_to_right(shape: list[int]) -> bool:
    """The shape rule safetensors (and both cores) apply: the running product of the dims, left
    to right, must stay within 64 bits; once it is 0 it stays 0."""
    nel = 1
    for dim in shape:
        nel *= dim
        if nel > U64_MAX:
            return True
    return False


@st.composite
def shapes(draw: st.DrawFn, bits: int) -> list[int]:
    """A shape whose byte size is whole: small dims, rank 0 to 4; sometimes huge dims beside a 0."""
    shape = draw(st.lists(st.integers(0, 4), max_size=4))
    if 0 in shape and draw(st.booleans()):
        shape = [d if d == 0 else draw(st.sampled_from([d, 2**32, 2**63, U64_MAX])) for d in shape]
        if _overflows_left_to_right(shape):
            # valid only when a 0 comes before the overflow: one dim alone never overflows, so a
            # 0 first or second does it (the file still has huge dims after the 0)
            shape.remove(0)
            shape.insert(draw(st.integers(0, 1)), 0)
    nel = 1
    for d in shape:
        nel *= d
    if nel * bits % 8:
        shape.append(8 // _gcd(bits, 8) * draw(st.integers(1, 2)))
    return shape


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _nbytes(shape: list[int], bits: int) -> int:
    nel = 1
    for d in shape:
        nel *= d
    return nel * bits // 8


@st.composite
def valid_files(draw: st.DrawFn) -> tuple[bytes, Model]:
    """A valid safetensors file and the tensors it holds."""
    names = draw(st.lists(_names, max_size=6, unique=True))
    specs = []
    for name in names:
        dtype = draw(st.sampled_from(sorted(sc.DTYPE_BITS)))
        specs.append((name, dtype, draw(shapes(sc.DTYPE_BITS[dtype]))))
    order = draw(st.permutations(range(len(specs))))  # data order independent of header order
    begins: dict[int, int] = {}
    pos = 0
    for k in order:
        begins[k] = pos
        pos += _nbytes(specs[k][2], sc.DTYPE_BITS[specs[k][1]])
    payload = bytes((7 * k + 3) % 256 for k in range(pos))
    model: Model = {}

    def member(key: str, value: str) -> str:
        return draw(_ws) + draw(json_string(key)) + draw(_ws) + ":" + draw(_ws) + value + draw(_ws)

    def array(values: list[int]) -> str:
        return "[" + draw(_ws) + ",".join(draw(_ws) + str(v) + draw(_ws) for v in values) + draw(_ws) + "]"

    members = []
    for k, (name, dtype, shape) in enumerate(specs):
        begin, end = begins[k], begins[k] + _nbytes(shape, sc.DTYPE_BITS[dtype])
        fields = [
            member("dtype", draw(json_string(dtype))),
            member("shape", array(shape)),
            member("data_offsets", array([begin, end])),
        ]
        members.append(member(name, "{" + ",".join(draw(st.permutations(fields))) + "}"))
        model[name] = (dtype, shape, payload[begin:end])
    metadata = draw(st.none() | st.dictionaries(_names | st.just("__metadata__"), _names, max_size=3))
    if metadata is not None:
        body = ",".join(member(k, draw(json_string(v))) for k, v in metadata.items())
        members.append(member("__metadata__", "{" + (body or draw(_ws)) + "}"))
    members = draw(st.permutations(members))
    header = draw(_ws) + "{" + (",".join(members) or draw(_ws)) + "}" + draw(_ws)
    return sc.st_file(header, payload), model


def _safetensors_read(data: bytes) -> Model | None:
    """What safetensors reads from the file: its tensors, or None if it refuses it."""
    safetensors = pytest.importorskip("safetensors")
    try:
        tensors = safetensors.deserialize(data)
    except Exception:
        return None
    return {name: (t["dtype"], list(t["shape"]), bytes(t["data"])) for name, t in tensors}


def _examples(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@_examples(150)
@given(valid_files())
def test_valid_files_are_accepted(cores: list[Core], file: tuple[bytes, Model]) -> None:
    data, model = file
    assert _same_result(cores, data) == (cc.OK, 0)
    assert _safetensors_read(data) == model


def test_zero_size_with_overflowing_leading_dims_is_refused(cores: list[Core]) -> None:
    # [2, 2**63, 0]: 2 * 2**63 overflows before the 0, and safetensors says "overflow computing
    # buffer size"; [2**63, 0, 2**63] (0 reached first) it accepts, as we do.
    data = sc.st_file('{"t":' + sc.ent("U8", (2, 2**63, 0), (0, 0)) + "}")
    assert _safetensors_read(data) is None
    assert _same_result(cores, data)[0] == cc.SIZE_MISMATCH


# --- single mutations of valid files ----------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    """(what was done, the file) for one mutation of a valid file."""
    data, _ = draw(valid_files())
    hlen = int.from_bytes(data[:8], "little")
    kind = draw(st.sampled_from(["replace", "insert", "remove", "cut_last", "add_last"]))
    if kind == "replace":  # mostly in the header; sometimes in the length field or the data
        region = draw(st.sampled_from(["header"] * 6 + ["length", "data"]))
        if region == "length":
            pos = draw(st.integers(0, 7))
        elif region == "data" and len(data) > 8 + hlen:
            pos = draw(st.integers(8 + hlen, len(data) - 1))
        else:
            pos = draw(st.integers(8, 8 + hlen - 1))
        byte = draw(st.integers(0, 255).filter(lambda b: b != data[pos]) | st.sampled_from(sc._INTERESTING))
        return f"{kind} {pos}", data[:pos] + bytes([byte]) + data[pos + 1 :]
    if kind == "insert":  # in the header, the length field following
        pos = draw(st.integers(8, 8 + hlen))
        byte = draw(st.integers(0, 255) | st.sampled_from(sc._INTERESTING))
        return f"{kind} {pos}", struct.pack("<Q", hlen + 1) + data[8:pos] + bytes([byte]) + data[pos:]
    if kind == "remove":
        pos = draw(st.integers(8, 8 + hlen - 1))
        return f"{kind} {pos}", struct.pack("<Q", hlen - 1) + data[8:pos] + data[pos + 1 :]
    if kind == "cut_last":  # into the data, or (when there is none) into the header
        return kind + ("_data" if len(data) > 8 + hlen else "_header"), data[:-1]
    return kind, data + draw(st.binary(min_size=1, max_size=1))


# what safetensors accepts but we reject on purpose (see test_safetensors_check.STRICTER): a
# repeated key, an unknown member of a tensor entry, "__metadata__": null
_STRICTER_CODES = {cc.DUPLICATE_KEY, cc.BAD_ENTRY, cc.BAD_METADATA}


@_examples(300)
@given(mutations())
def test_single_mutations(cores: list[Core], scratch: Path, mutation: tuple[str, bytes]) -> None:
    what, data = mutation
    code, detail = _same_result(cores, data)
    path = scratch / "mutated.safetensors"
    path.write_bytes(data)
    for core in cores:
        assert core.check_safetensors_file(str(path)) == (code, detail), what
    theirs = _safetensors_read(data)
    if code == cc.OK:
        assert theirs is not None, f"{what}: safetensors refuses it"
    elif theirs is not None:
        assert code in _STRICTER_CODES, (
            f"{what}: safetensors accepts it, we say {cc.describe(code, detail, 0)}"
        )
    expected = {
        "cut_last_data": cc.TRUNCATED,
        "cut_last_header": cc.HEADER_LENGTH,
        "add_last": cc.TRAILING_BYTES,
    }
    if what in expected:
        assert code == expected[what]


# --- raw bytes ---------------------------------------------------------------------------------

_json_bytes = st.binary(max_size=120) | st.lists(st.sampled_from(sc._INTERESTING), max_size=120).map(bytes)


@st.composite
def length_prefixed(draw: st.DrawFn) -> bytes:
    """A plausible 8-byte header length (mostly the body's own length) before random bytes."""
    body = draw(_json_bytes)
    hlen = draw(
        st.just(len(body))
        | st.integers(0, len(body) + 2)
        | st.sampled_from([0, len(body) + 1, cc.MAX_HEADER_LENGTH, cc.MAX_HEADER_LENGTH + 1, U64_MAX])
    )
    return struct.pack("<Q", hlen) + body


_file_sizes = st.none() | st.integers(0, 300) | st.sampled_from([U64_MAX, 2**63, cc.MAX_HEADER_LENGTH + 8])


@_examples(500)
@given(st.binary(max_size=64) | length_prefixed(), _file_sizes)
def test_raw_bytes(cores: list[Core], data: bytes, file_size: int | None) -> None:
    _same_result(cores, data, file_size)
    if file_size is None:
        code, _ = _same_result(cores, data, len(data))
        assert code != cc.OK or len(data) >= 10  # the smallest valid file is 8 + "{}"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_entryish = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(sorted(sc.DTYPE_BITS)) | _json_values,
        "shape": st.lists(st.integers(0, 4), max_size=3) | _json_values,
        "data_offsets": st.lists(st.integers(0, 16), min_size=2, max_size=2) | _json_values,
    },
)


@_examples(300)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "__metadata__"]) | st.text(max_size=3), _entryish | _json_values
    ),
    st.integers(0, 20),
)
def test_json_headers(cores: list[Core], header: dict[str, Any], data_len: int) -> None:
    # valid JSON of about the right shape reaches the semantic checks (types, sizes, layout)
    text = json.dumps(header, allow_nan=True)
    _same_result(cores, sc.st_file(text, b"\0" * data_len))
