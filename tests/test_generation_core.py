"""The pieces every format shares: marker matching, the JSON scanner, typing text arguments by a tool's
schema, call ids, and adding deltas up into a result."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlxk.generation import Channel, Delta, ResultBuilder, ToolCall, make_segmenter
from mlxk.generation.callids import CallIds
from mlxk.generation.jsonscan import INVALID, MORE, JsonScanner
from mlxk.generation.markers import MarkerSet
from mlxk.generation.schema import Tools, type_text, type_value


def test_marker_set_finds_the_first_whole_marker_or_holds_a_partial_one() -> None:
    markers = MarkerSet(["<tool_call>", "<think>", "</think>"])
    assert markers.search("abc<think>x<tool_call>") == (3, "<think>")
    assert markers.search("abc <tool_c") == (4, None)  # may become a marker: held back
    assert markers.search("abc <tool_x") == (11, None)  # cannot: nothing held
    assert markers.search("a < b") == (5, None)
    assert markers.search("x</") == (1, None)
    assert markers.search("") == (0, None)


def test_a_whole_marker_that_starts_a_longer_one_waits() -> None:
    markers = MarkerSet(["```", "```json"])
    assert markers.search("x```") == (1, None)
    assert markers.search("x```js") == (1, None)
    assert markers.search("x```\n") == (1, "```")
    assert markers.search("x```json") == (1, "```json")


def scan_in_pieces(text: str, size: int) -> tuple[int, JsonScanner]:
    scanner = JsonScanner()
    offset = 0
    for start in range(0, len(text), size):
        piece = text[start : start + size]
        end = scanner.scan(piece)
        if end >= 0:
            return offset + end, scanner
        if end == INVALID:
            return INVALID, scanner
        offset += len(piece)
    return MORE, scanner


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_json_scanner_finds_the_end_whatever_the_pieces(size: int) -> None:
    value = '{"a": "x}\\"]{", "b": [1, {"c": "\\\\"}], "d": "</tool_call>"}'
    end, _ = scan_in_pieces(value + "\n</tool_call>", size)
    assert end == len(value)
    assert json.loads(value)["d"] == "</tool_call>"
    assert scan_in_pieces('  "just a string" tail', size)[0] == len('  "just a string"')
    assert scan_in_pieces('{"open": [1, 2', size)[0] == MORE
    assert scan_in_pieces("  nope", size)[0] == INVALID


def test_json_scanner_marks_the_members_of_the_top_object() -> None:
    text = '{"name": "f", "arguments": {"a": 1, "b": [1, 2]}}'
    scanner = JsonScanner()
    assert scanner.scan(text) == len(text)
    assert [text[at] for at in scanner.marks] == [":", ",", ":"]
    scanner = JsonScanner()
    assert scanner.scan(text[:20]) == MORE
    assert scanner.scan(text[20:]) == len(text) - 20
    assert [text[at] for at in scanner.marks[:2]] == [":", ","]
    assert text[20 + scanner.marks[2]] == ":"  # met in the second piece: an index into it


INTEGER = {"type": "integer"}


@pytest.mark.parametrize(
    ("text", "schema", "value"),
    [
        ("3", INTEGER, 3),
        (" 3\n", INTEGER, 3),
        ("3.0", INTEGER, 3),
        ("3.5", INTEGER, "3.5"),  # not an integer: kept as written
        ("2.5", {"type": "number"}, 2.5),
        ("True", {"type": "boolean"}, True),
        ("false", {"type": "boolean"}, False),
        ("yes", {"type": "boolean"}, "yes"),
        ("007", {"type": "string"}, "007"),
        ('{"a": 1}', {"type": "object"}, {"a": 1}),
        ("{'a': True}", {"type": "object"}, {"a": True}),  # a Python literal
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("[1, 2]", {"type": "object"}, "[1, 2]"),
        ("null", {"type": ["integer", "null"]}, None),
        ("5", {"type": ["integer", "null"]}, 5),
        ("5", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, 5),
        ("abc", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "abc"),
        ("celsius", {"enum": ["celsius", "fahrenheit"]}, "celsius"),
        ("NaN", {"type": "number"}, "NaN"),  # not JSON
        ("1e999", {"type": "number"}, "1e999"),
        ("{1, 2}", {"type": "array"}, "{1, 2}"),  # a Python set has no JSON
        ("42", None, 42),  # no schema: JSON-looking text is JSON
        ('"quoted"', None, '"quoted"'),
        ("Paris", None, "Paris"),
    ],
)
def test_text_arguments_are_typed_by_the_schema(text: str, schema: dict[str, Any] | None, value: Any) -> None:
    assert type_text(text, schema) == value
    if value is not None:
        assert type(type_text(text, schema)) is type(value)


def test_typed_values_only_change_a_string_for_a_non_string_parameter() -> None:
    assert type_value("3", INTEGER) == 3
    assert type_value("3", {"type": "string"}) == "3"
    assert type_value("3", None) == "3"
    assert type_value(3, {"type": "string"}) == 3


def test_tools_read_openai_and_bare_shapes_and_ignore_junk() -> None:
    tools = Tools(
        [
            {"type": "function", "function": {"name": "a", "parameters": {"properties": {"x": INTEGER}}}},
            {"name": "b", "parameters": None},
            {"type": "function"},
            "junk",  # type: ignore[list-item]
        ]
    )
    assert set(tools.schemas) == {"a", "b"}
    assert tools.parameter("a", "x") == INTEGER
    assert tools.parameter("b", "x") is None
    assert tools.offers("a") and not tools.offers("c")
    assert Tools(None).offers("anything")


def test_call_ids_have_the_shapes_clients_and_templates_expect() -> None:
    long_id = CallIds(1).next()
    assert long_id.startswith("call_") and len(long_id) == 29 and long_id[5:].isalnum()
    short = CallIds(1, short=True).next()
    assert len(short) == 9 and short.isalnum()
    assert CallIds(1).next() == long_id
    assert CallIds().next() != CallIds().next()


def test_result_builder_drops_a_failed_call_and_keeps_its_text() -> None:
    builder = ResultBuilder()
    builder.add(
        [
            Delta(Channel.REASONING, "why"),
            Delta(Channel.CONTENT, "Hi. "),
            Delta(Channel.TOOL_CALL, index=0, id="call_1", name="f"),
            Delta(Channel.TOOL_CALL, '{"a":', index=0),
            Delta(Channel.TOOL_CALL, " 1}", index=0),
            Delta(Channel.TOOL_CALL, index=1, id="call_2", name="g"),
            Delta(Channel.FAILED_CALL, "<tool_call>{", index=1),
        ]
    )
    result = builder.result()
    assert result.content == "Hi. <tool_call>{"
    assert result.reasoning == "why"
    assert result.tool_calls == [ToolCall(id="call_1", name="f", arguments='{"a": 1}')]
    empty = ResultBuilder().result()
    assert (empty.content, empty.reasoning, empty.tool_calls) == (None, None, [])


def test_the_buffer_stays_small_however_long_the_output() -> None:
    """Only what could still become a marker is held: the work per delta does not grow with the output."""
    segmenter = make_segmenter("hermes")
    longest = 0
    for k in range(20000):
        segmenter.feed(f" word{k} <b>[x]{{y}} <")
        longest = max(longest, len(segmenter.buf))
    assert longest <= len("<tool_call>")
