"""Tool calls written as one JSON object (Hermes' ``<tool_call>{...}</tool_call>``, Mistral's
``[TOOL_CALLS][{...}]``) that are not quite what a call should be: each becomes a call as far as
it is one, or goes back to the content, as the model wrote it."""

from __future__ import annotations

import pytest

from mlxk.generation import Channel, Delta, ResultBuilder
from mlxk.generation.parse import parse_output

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize(
    ("output", "content"),
    [
        ("<tool_call>\n  ", "<tool_call>\n  "),  # the output ends before the object starts
        ("<tool_call>x</tool_call>", "<tool_call>x"),  # no object at all
        ('<tool_call>{name: "f"}</tool_call>', '<tool_call>{name: "f"}'),  # a key that is no JSON string
        ("<tool_call>{}</tool_call>", "<tool_call>{}"),  # an object without a name
        ('<tool_call>{"name": f, "arguments": {}}</tool_call>', '<tool_call>{"name": f, "arguments": {}}'),
    ],
    ids=["cut-before-object", "not-an-object", "bare-key", "empty-object", "bare-name"],
)
def test_an_object_that_is_no_call_stays_content(output: str, content: str) -> None:
    result = parse_output(output, format="hermes", tools=TOOLS)
    assert result.tool_calls == [] and result.content == content


@pytest.mark.parametrize(
    "output",
    [
        '<tool_call>{"name": "f"}</tool_call>',  # no arguments member: the call has none
        '<tool_call>{"name": "f", "type": "function", "arguments": {}}</tool_call>',  # a member calls may have
        '<tool_call>{"name": "f", "name": "g", "arguments": {}}</tool_call>',  # the first name counts
    ],
    ids=["no-arguments", "type-member", "second-name"],
)
def test_an_object_with_a_name_is_a_call(output: str) -> None:
    result = parse_output(output, format="hermes", tools=TOOLS)
    assert result.content is None
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("f", "{}")]


def test_a_call_keeps_its_first_id_and_ignores_one_that_is_no_string() -> None:
    twice = parse_output(
        '[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abc123def", "id": "zzz"}]', format="mistral"
    )
    assert [(c.id, c.name) for c in twice.tool_calls] == [("abc123def", "f")]
    number = parse_output('[TOOL_CALLS][{"name": "f", "arguments": {}, "id": 5}]', format="mistral")
    (call,) = number.tool_calls
    assert call.name == "f" and call.id != "5" and call.id  # an id of its own instead


def test_an_empty_argument_piece_adds_nothing() -> None:
    builder = ResultBuilder()
    builder.add([
        Delta(Channel.TOOL_CALL, "", index=0, id="call_0", name="f"),
        Delta(Channel.TOOL_CALL, "", index=0),
        Delta(Channel.TOOL_CALL, '{"a": 1}', index=0),
    ])  # fmt: skip
    (call,) = builder.result().tool_calls
    assert (call.id, call.name, call.arguments) == ("call_0", "f", '{"a": 1}')
