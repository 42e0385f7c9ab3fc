"""The strict safetensors header check: native (Cython) and pure-Python twin, same results."""

from __future__ import annotations

import errno
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mlxk.core import Core, implementation
from mlxk.core import codes as cc
from mlxk.core.twin import safetensors as py

try:  # tests/ as a package, or (pytest's default rootdir-less mode) as a sys.path entry
    from tests import safetensors_cases as sc
except ImportError:
    import safetensors_cases as sc  # type: ignore[no-redef,import-not-found]

CASES = sc.all_cases()
MALFORMED = sc.malformed_cases()


def _native_or_skip() -> Core:
    try:
        return implementation(native=True)
    except ImportError as exc:
        if os.environ.get("MLXK_REQUIRE_NATIVE") == "1":
            pytest.fail(
                f"mlxk.core._native is required (MLXK_REQUIRE_NATIVE=1) but cannot be imported: {exc}"
            )
        pytest.skip(f"mlxk.core._native is not built: {exc}")


@pytest.fixture(params=["native", "python"])
def impl(request: pytest.FixtureRequest) -> Core:
    if request.param == "native":
        return _native_or_skip()
    return implementation(native=False)


@pytest.fixture
def native() -> Core:
    return _native_or_skip()


def _mutations(seed: int, count: int) -> list[bytes]:
    """Random valid files and single-byte mutations of them (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        base = sc.random_valid_file(rng)
        out.append(base)
        out.extend(sc.mutate(rng, base) for _ in range(4))
    return out


# --- every case, both implementations --------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(impl: Core, case: sc.Case) -> None:
    code, detail = impl.check_safetensors_bytes(case.data)
    assert code == case.code, cc.describe(code, detail, len(case.data))
    if case.detail is not None:
        assert detail == case.detail
    assert type(code) is int and type(detail) is int


def test_results_are_plain_ints(impl: Core) -> None:
    assert impl.check_safetensors_bytes(b"") == (cc.EMPTY, 0)


def test_bytes_like_inputs(impl: Core) -> None:
    data = sc.accepted_cases()[0].data
    assert impl.check_safetensors_bytes(bytearray(data)) == (cc.OK, 0)
    assert impl.check_safetensors_bytes(memoryview(data)) == (cc.OK, 0)


def test_header_prefix_with_file_size(impl: Core) -> None:
    # the caller may pass only the leading bytes together with the real file size
    header = '{"t":' + sc.ent("F32", (1,), (0, 4)) + "}"
    whole = sc.st_file(header, b"\0" * 4)
    prefix = whole[: 8 + len(header)]
    assert impl.check_safetensors_bytes(prefix, len(whole)) == (cc.OK, 0)
    assert impl.check_safetensors_bytes(prefix, len(whole) + 1) == (cc.TRAILING_BYTES, len(whole))
    assert impl.check_safetensors_bytes(prefix, len(whole) - 1) == (cc.TRUNCATED, len(whole))
    assert impl.check_safetensors_bytes(whole, 0) == (cc.EMPTY, 0)
    # fewer bytes than the header: what was needed is reported
    assert impl.check_safetensors_bytes(prefix[:-1], len(whole)) == (cc.TRUNCATED, 8 + len(header))
    assert impl.check_safetensors_bytes(prefix[:5], len(whole)) == (cc.TRUNCATED, 8)
    # data longer than file_size: only file_size bytes count
    assert impl.check_safetensors_bytes(whole + b"junk", len(whole)) == (cc.OK, 0)


def test_lfs_prefix_needs_the_bytes(impl: Core) -> None:
    assert impl.check_safetensors_bytes(sc.LFS_TEXT[:23]) == (cc.LFS_POINTER, 0)
    assert impl.check_safetensors_bytes(sc.LFS_TEXT[:22])[0] == cc.HEADER_LENGTH
    assert impl.check_safetensors_bytes(sc.LFS_TEXT, 10_000) == (cc.LFS_POINTER, 0)


@pytest.mark.parametrize("size", [-1, 2**64])
def test_file_size_out_of_range(impl: Core, size: int) -> None:
    with pytest.raises(OverflowError):
        impl.check_safetensors_bytes(b"12345678", size)


def test_header_larger_than_first_read(impl: Core, tmp_path) -> None:
    names = ",".join(f'"{"n" * 200}{k}":' + sc.ent("U8", (1,), (k, k + 1)) for k in range(400))
    header = "{" + names + "}"
    assert len(header) > 65536
    data = sc.st_file(header, b"\0" * 400)
    assert impl.check_safetensors_bytes(data) == (cc.OK, 0)
    path = tmp_path / "big_header.safetensors"
    path.write_bytes(data)
    assert impl.check_safetensors_file(str(path)) == (cc.OK, 0)
    path.write_bytes(data[:-1])
    assert impl.check_safetensors_file(str(path)) == (cc.TRUNCATED, len(data))


# --- UTF-8: the C validator against Python's strict decoder -----------------------------------


def _utf8_probes() -> list[bytes]:
    probes = [bytes([a, b]) for a in range(0x80, 0x100) for b in range(0x70, 0x100, 3)]
    for lead in [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4]:
        for second in range(0x70, 0xD0):
            for rest in [b"\x80", b"\xbf", b"A", b"\x80\x80", b"\xbf\xbf", b"\x80A", b""]:
                probes.append(bytes([lead, second]) + rest)
    return probes


def test_utf8_validation_parity(native: Core) -> None:
    for probe in _utf8_probes():
        header = b'{"__metadata__":{"k":"ab' + probe + b'"}}'
        data = sc.st_file(header)
        result = native.check_safetensors_bytes(data)
        assert result == py.check_safetensors_bytes(data), probe
        try:
            header.decode("utf-8")
        except UnicodeDecodeError:
            assert result[0] == cc.HEADER_UTF8
        else:
            assert result == (cc.OK, 0)


# --- the fast path never decides differently from the reference parser ------------------------


def test_fast_path_matches_reference() -> None:
    samples = [c.data for c in CASES] + _mutations(seed=1, count=120)
    fast_answers = 0
    for data in samples:
        assert py._check(data, None, fast=True) == py._check(data, None, fast=False)
        hlen = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
        header = data[8 : 8 + hlen]
        try:
            text = header.decode("utf-8")
        except UnicodeDecodeError:
            continue
        ranges = py._fast_ranges(text, header)
        if ranges is not None:
            fast_answers += 1
            assert sorted(ranges) == sorted(py._Reference(header).parse())
    assert fast_answers > 50  # the fast path really is used on valid headers


def test_fast_path_refuses_what_json_lets_through() -> None:
    # each of these is valid for json.loads but not for the reference parser
    for text in [
        '{"__metadata__":{"k":"\\ud800"}}',
        '{"__metadata__":{"k":"a","k":"b"}}',
        '{"__metadata__":{"k":NaN}}',
        '{"t":' + sc.ent("U8", "[-0]", (0, 0)) + "}",
        '{"t":' + sc.ent("U8", "[1.0]", (0, 1)) + "}",
        '{"t":' + sc.ent("U8", "[true]", (0, 1)) + "}",
        '{"t":' + sc.ent("U8", "[18446744073709551616]", (0, 1)) + "}",
    ]:
        raw = text.encode()
        assert py._fast_ranges(text, raw) is None, text


# --- native and Python agree on random inputs --------------------------------------------------


def test_parity_random_mutations(native: Core) -> None:
    rng = random.Random(20240601)
    valid = 0
    for _ in range(150):
        base = sc.random_valid_file(rng)
        assert native.check_safetensors_bytes(base) == (cc.OK, 0)
        assert py.check_safetensors_bytes(base) == (cc.OK, 0)
        valid += 1
        for _ in range(4):
            data = sc.mutate(rng, base)
            expected = py._check(data, None, fast=False)
            assert native.check_safetensors_bytes(data) == expected, data
            assert py.check_safetensors_bytes(data) == expected, data
    assert valid == 150


def test_parity_random_layouts(native: Core) -> None:
    # well-formed JSON with random offsets and repeated names: LAYOUT, DUPLICATE_KEY, extent
    rng = random.Random(99)
    seen = set()
    for _ in range(400):
        data = sc.random_layout_file(rng)
        expected = py._check(data, None, fast=False)
        seen.add(expected[0])
        assert native.check_safetensors_bytes(data) == expected, data
        assert py.check_safetensors_bytes(data) == expected, data
    assert {cc.OK, cc.LAYOUT, cc.DUPLICATE_KEY, cc.TRUNCATED, cc.TRAILING_BYTES} <= seen


def test_parity_all_cases_with_short_file_sizes(native: Core) -> None:
    # also exercise file_size != len(data) paths
    for case in CASES[::3]:
        for size in (len(case.data) - 1, len(case.data) + 7):
            if size >= 0:
                assert native.check_safetensors_bytes(case.data, size) == py.check_safetensors_bytes(
                    case.data, size
                ), case.name


def test_native_from_threads(native: Core) -> None:
    # the wrappers release the GIL: concurrent checks must not disturb one another
    datas = [c.data for c in CASES] * 4
    expected = [native.check_safetensors_bytes(d) for d in datas]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(native.check_safetensors_bytes, datas)) == expected


# --- against the real safetensors package ------------------------------------------------------


def _safetensors() -> Any:
    return pytest.importorskip("safetensors")


# Inputs safetensors 0.8 accepts but we reject on purpose (checked: each really is accepted):
STRICTER = {
    # serde_json keeps the last of duplicate keys. A repeated tensor name or metadata key is
    # ambiguous (another reader may keep the first), so we call it corruption. (Duplicates
    # with different data ranges are rejected by safetensors too, through its layout check.)
    "duplicate_tensor_same_entry",
    "duplicate_metadata_key",
    "duplicate_with_colon_in_string",
    # serde ignores unknown members of a tensor entry; no writer produces them, so they mean damage
    "unknown_member",
    # `Option<HashMap>` lets serde read "__metadata__": null as "no metadata"; we demand an object
    "metadata_is_null",
}


def _safetensors_accepts(data: bytes) -> bool:
    try:
        _safetensors().deserialize(data)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_differential_against_safetensors(case: sc.Case) -> None:
    accepted = _safetensors_accepts(case.data)
    ours = py.check_safetensors_bytes(case.data)
    if case.name in STRICTER:
        assert accepted, "no longer accepted by safetensors: drop it from STRICTER"
        assert ours[0] != cc.OK
    elif accepted:
        assert ours == (cc.OK, 0)


def test_differential_random_mutations() -> None:
    # where safetensors accepts a mutated file, so do we (mutations that create duplicate keys
    # or unknown members are the documented exceptions)
    for data in _mutations(seed=7, count=80):
        if _safetensors_accepts(data):
            code = py.check_safetensors_bytes(data)[0]
            assert code in (cc.OK, cc.DUPLICATE_KEY, cc.BAD_ENTRY), data


def test_files_written_by_safetensors(impl: Core, tmp_path) -> None:
    np = pytest.importorskip("numpy")
    _safetensors()
    from safetensors.numpy import save, save_file

    rng = np.random.default_rng(0)
    arrays = {}
    for k, name in enumerate(
        [
            "float16",
            "float32",
            "float64",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "bool",
            "complex64",
        ]
    ):
        shape = [(3,), (2, 5), (), (0, 4), (7, 1, 3)][k % 5]
        arrays[f"layer.{k}.{name}"] = np.asarray(rng.random(shape) * 100).astype(name)
    data = save(arrays, metadata={"format": "np", "note": 'quote " and ünïcode'})
    assert impl.check_safetensors_bytes(data) == (cc.OK, 0)
    assert impl.check_safetensors_bytes(save({})) == (cc.OK, 0)
    path = tmp_path / "model.safetensors"
    save_file(arrays, str(path))
    assert impl.check_safetensors_file(str(path)) == (cc.OK, 0)
    save_file({"w": np.zeros((300, 300), dtype=np.float32)}, str(path))
    assert impl.check_safetensors_file(str(path)) == (cc.OK, 0)


# --- files on disk -------------------------------------------------------------------------


def test_file_results(impl: Core, tmp_path) -> None:
    header = '{"t":' + sc.ent("F32", (1,), (0, 4)) + "}"
    path = tmp_path / "a.safetensors"
    path.write_bytes(sc.st_file(header, b"\0" * 4))
    assert impl.check_safetensors_file(str(path)) == (cc.OK, 0)
    assert impl.check_safetensors_file(path) == (cc.OK, 0)  # os.PathLike works too
    path.write_bytes(sc.st_file(header, b"\0" * 5))
    assert impl.check_safetensors_file(str(path)) == (cc.TRAILING_BYTES, 8 + len(header) + 4)
    path.write_bytes(sc.st_file(header, b"\0" * 3))
    assert impl.check_safetensors_file(str(path)) == (cc.TRUNCATED, 8 + len(header) + 4)
    path.write_bytes(b"")
    assert impl.check_safetensors_file(str(path)) == (cc.EMPTY, 0)
    path.write_bytes(sc.LFS_TEXT)
    assert impl.check_safetensors_file(str(path)) == (cc.LFS_POINTER, 0)
    path.write_bytes(b"abc")
    assert impl.check_safetensors_file(str(path)) == (cc.TOO_SMALL, 0)
    for case in CASES[::5]:
        path.write_bytes(case.data)
        assert impl.check_safetensors_file(str(path)) == impl.check_safetensors_bytes(case.data), case.name


def test_sparse_large_file(impl: Core, tmp_path) -> None:
    nbytes = 6 * 2**30  # 6 GiB of (sparse) tensor data: only the header is ever read
    header = '{"__metadata__":{"format":"pt"},"w":' + sc.ent("BF16", (3 * 2**30,), (0, nbytes)) + "}"
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.write(sc.st_file(header))
        f.truncate(8 + len(header) + nbytes)
    assert impl.check_safetensors_file(str(path)) == (cc.OK, 0)
    with open(path, "r+b") as f:
        f.truncate(8 + len(header) + nbytes - 1)
    assert impl.check_safetensors_file(str(path)) == (cc.TRUNCATED, 8 + len(header) + nbytes)


def test_file_errors(impl: Core, tmp_path) -> None:
    assert impl.check_safetensors_file(str(tmp_path / "missing.safetensors")) == (cc.IO_ERROR, errno.ENOENT)
    code, detail = impl.check_safetensors_file(str(tmp_path))  # a directory
    if os.stat(tmp_path).st_size > 0:
        assert (code, detail) == (cc.IO_ERROR, errno.EISDIR)
    with pytest.raises(ValueError):
        impl.check_safetensors_file("bad\0name")


def test_describe_every_result_code() -> None:
    # every code the check can return has a message
    for case in CASES:
        assert "failed check" not in cc.describe(case.code, case.detail or 0, len(case.data))


def test_header_of_only_length_field_struct() -> None:
    assert struct.unpack("<Q", sc.st_file("{}")[:8]) == (2,)
