"""A safetensors header cut off in the middle of a value (the 8-byte length says less than the JSON
needs): both cores refuse it as not valid JSON, and name the end of the header as the place."""

from __future__ import annotations

import struct

import pytest

import mlxk.core
from mlxk.core import codes

CUT = {
    "where a value is due": b'{"a":{"dtype":"F32","shape":',
    "inside a surrogate pair": b'{"\\ud800\\u',
    "after a decimal point": b'{"a":{"dtype":"F32","shape":[1.',
    "after a minus sign": b'{"a":{"dtype":"F32","shape":[-',
    "after a comma in a shape": b'{"a":{"dtype":"F32","shape":[1, ',
    "after a comma in data_offsets": b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0, ',
}


@pytest.mark.parametrize("header", list(CUT.values()), ids=list(CUT))
def test_a_header_cut_inside_a_value_is_not_json(core: str, header: bytes) -> None:
    data = struct.pack("<Q", len(header)) + header
    assert mlxk.core.impl.check_safetensors_bytes(data) == (codes.HEADER_JSON, len(header))
    # the same bytes with more after them (the data) are judged by the header's length alone
    assert mlxk.core.impl.check_safetensors_bytes(data + b"\0" * 64) == (codes.HEADER_JSON, len(header))
