"""Calls at the edges of each format's syntax: values written in less common ways that are still
calls (what the client gets as arguments), and calls that are not quite calls (what the client gets
as content instead). Every case is also fed one character at a time (``parse``), and both must agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_generation_formats import calls, parse

Q = '<|"|>'  # Gemma 4's string delimiter

# (format, model output, the calls a client gets)
CALLS: list[tuple[str, str, list[tuple[str, Any]]]] = [
    # JSON objects: null arguments are no arguments; the first of two arguments members counts
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": null}</tool_call>', [("get_weather", {})]),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "A"}, "arguments": {"city": "B"}}</tool_call>', [("get_weather", {"city": "A"})]),
    # Mistral: a lone call object, a list followed by text, an id that is no string (a new one is made)
    ("mistral", '[TOOL_CALLS]{"name": "get_weather", "arguments": {"city": "Oslo"}}', [("get_weather", {"city": "Oslo"})]),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {}, "id": 7}]', [("get_weather", {})]),
    # Llama 4's Python calls: escaped quotes, signs, tuples as lists, nested dicts, None
    ("llama4_pythonic", '[get_weather(city="a \\"b\\"", days=-2, metric=+1)]', [("get_weather", {"city": 'a "b"', "days": -2, "metric": 1})]),
    ("llama4_pythonic", "[get_weather(city='it\\'s')]", [("get_weather", {"city": "it's"})]),
    ("llama4_pythonic", '[write_file(path="x", content=["a", ("b", None)])]', [("write_file", {"path": "x", "content": ["a", ["b", None]]})]),
    ("llama4_pythonic", '[write_file(path="x", content={"k": [1, {"n": False}]})]', [("write_file", {"path": "x", "content": {"k": [1, {"n": False}]}})]),
    # Gemma 4: spaces around keys and values, quoted keys, bare words, empty and mixed lists
    ("gemma4", "<|tool_call>call:get_weather{ city : Paris , days: 3 , metric :true}<tool_call|>", [("get_weather", {"city": "Paris", "days": 3, "metric": True})]),
    ("gemma4", f"<|tool_call>call:get_weather{{{Q}city{Q}:{Q}a b{Q}}}<tool_call|>", [("get_weather", {"city": "a b"})]),
    ("gemma4", "<|tool_call>call:write_file{content:[ ], path:[1, 2.5, x]}<tool_call|>", [("write_file", {"content": [], "path": [1, 2.5, "x"]})]),
    ("gemma4", "<|tool_call>call:get_weather{city:1e999}<tool_call|>", [("get_weather", {"city": "1e999"})]),  # no JSON number: its text
    # Kimi K3: a value that is not JSON of its declared type is typed by the schema, as an untyped one is
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="get_weather"<|sep|><|open|>argument key="days" type="integer"<|sep|>3<|close|>argument<|sep|><|open|>argument key="city" type="object"<|sep|>Rome<|close|>argument<|sep|><|open|>argument key="metric"<|sep|>true<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>', [("get_weather", {"days": 3, "city": "Rome", "metric": True})]),
    # DeepSeek's DSML: string="false" that is not JSON, and no string attribute: typed by the schema
    ("deepseek_dsml", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="false">Rome</｜DSML｜parameter>\n<｜DSML｜parameter name="days">4</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', [("get_weather", {"city": "Rome", "days": 4})]),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "output", "expected"), CALLS)
def test_unusual_but_valid_calls(fmt: str, output: str, expected: list[tuple[str, Any]]) -> None:
    result = parse(fmt, output)
    assert calls(result) == expected
    assert result.content is None


def test_mistral_ids_are_kept_or_made() -> None:
    given = parse("mistral", '[TOOL_CALLS]{"name": "get_weather", "arguments": {}, "id": "abc123XYZ"}')
    assert [call.id for call in given.tool_calls] == ["abc123XYZ"]
    made = parse("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {}, "id": 7}]')
    assert len(made.tool_calls[0].id) == 9 and made.tool_calls[0].id.isalnum()


def test_text_after_a_mistral_call_list_is_content() -> None:
    result = parse("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {}}] then prose')
    assert calls(result) == [("get_weather", {})]
    assert result.content == "then prose"


# (format, model output, the content a client gets instead of a call): the text as the model wrote
# it, less the closing markers that content drops wherever they stand
NOT_CALLS: list[tuple[str, str, str]] = [
    # JSON objects whose name or arguments are no call's
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": "not json"}</tool_call>', '<tool_call>{"name": "get_weather", "arguments": "not json"}'),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": "[1]"}</tool_call>', '<tool_call>{"name": "get_weather", "arguments": "[1]"}'),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": [1, 2]}</tool_call>', '<tool_call>{"name": "get_weather", "arguments": [1, 2]}'),
    ("hermes", '<tool_call>{"name": 5, "arguments": {}}</tool_call>', '<tool_call>{"name": 5, "arguments": {}}'),
    ("hermes", '<tool_call>{"name": " ", "arguments": {}}</tool_call>', '<tool_call>{"name": " ", "arguments": {}}'),
    ("hermes", "<tool_call>{5: 1}</tool_call>", "<tool_call>{5: 1}"),
    ("hermes", '<tool_call>{"name": "get_weather",, "arguments": {}}</tool_call>', '<tool_call>{"name": "get_weather",, "arguments": {}}'),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": tru}</tool_call>', '<tool_call>{"name": "get_weather", "arguments": tru}'),
    # Mistral: a list of no call objects, or an opened list and nothing more
    ("mistral", "[TOOL_CALLS][1, 2]", "[TOOL_CALLS][1, 2]"),
    ("mistral", "[TOOL_CALLS][", "[TOOL_CALLS]["),
    # Llama 4: what Python allows and a call's arguments are not
    ("llama4_pythonic", '[write_file(path="x", content={1: 2})]', '[write_file(path="x", content={1: 2})]'),
    ("llama4_pythonic", '[write_file(path="x", content={**d})]', '[write_file(path="x", content={**d})]'),
    ("llama4_pythonic", "[write_file(**kw)]", "[write_file(**kw)]"),
    ("llama4_pythonic", '[write_file("x")]', '[write_file("x")]'),
    ("llama4_pythonic", "[get_weather(days=1e999)]", "[get_weather(days=1e999)]"),
    ("llama4_pythonic", '[get_weather(city=-"x")]', '[get_weather(city=-"x")]'),
    ("llama4_pythonic", '[tools.get_weather(city="x")]', '[tools.get_weather(city="x")]'),
    ("llama4_pythonic", "[x[0](a=1)]", "[x[0](a=1)]"),
    ("llama4_pythonic", '[get_weather(city="x"), 5]', '[get_weather(city="x"), 5]'),
    ("llama4_pythonic", "[]", "[]"),
    ("llama4_pythonic", '[get_weather(x)(city="a")]', '[get_weather(x)(city="a")]'),  # the callee is a call
    ("llama4_pythonic", '[get_weather(city=c) for c in "ab"]', '[get_weather(city=c) for c in "ab"]'),  # a comprehension
    # Gemma 4: a missing colon, key or value, a bad separator, an unclosed value, text after the call
    ("gemma4", f"<|tool_call>call:get_weather{{city {Q}x{Q}}}<tool_call|>", f"<|tool_call>call:get_weather{{city {Q}x{Q}}}"),
    ("gemma4", "<|tool_call>call:get_weather{city:}<tool_call|>", "<|tool_call>call:get_weather{city:}"),
    ("gemma4", "<|tool_call>call:get_weather{:1}<tool_call|>", "<|tool_call>call:get_weather{:1}"),
    ("gemma4", "<|tool_call>call:get_weather{days:1 city:2}<tool_call|>", "<|tool_call>call:get_weather{days:1 city:2}"),
    ("gemma4", "<|tool_call>call:write_file{content:[a:b]}<tool_call|>", "<|tool_call>call:write_file{content:[a:b]}"),
    ("gemma4", "<|tool_call>call:get_weather{city:<tool_call|>", "<|tool_call>call:get_weather{city:"),
    ("gemma4", "<|tool_call>call:get_weather{city:Paris} and more<tool_call|>", "<|tool_call>call:get_weather{city:Paris} and more"),
    ("gemma4", "<|tool_call>hello<tool_call|>", "<|tool_call>hello"),
    # GLM: a name over two lines, text between a key and its value, no name at all, prose with markup
    ("glm47", "<tool_call>get\nweather<arg_key>city</arg_key><arg_value>x</arg_value></tool_call>", "<tool_call>get\nweather<arg_key>city</arg_key><arg_value>x</arg_value>"),
    ("glm47", "<tool_call>get_weather<arg_key>city</arg_key>oops<arg_value>x</arg_value></tool_call>", "<tool_call>get_weather<arg_key>city</arg_key>oops<arg_value>x</arg_value>"),
    ("glm47", "<tool_call><arg_key>city</arg_key><arg_value>x</arg_value></tool_call>", "<tool_call><arg_key>city</arg_key><arg_value>x</arg_value>"),
    ("glm47", "Use <tool_call> tags like <b>this</b>.", "Use <tool_call> tags like <b>this</b>."),
    # Qwen3-Coder: no function name, text after the last parameter, a name that never closes
    ("qwen3_xml", "<tool_call>\n<function=>\n</function>\n</tool_call>", "<tool_call><function=>\n</function>"),
    ("qwen3_xml", "<tool_call>\n<function=get_weather>\n<parameter=city>\nx\n</parameter>\nstray\n</function>\n</tool_call>", "<tool_call><function=get_weather>\n<parameter=city>\nx\n</parameter>\nstray\n</function>"),
    ("qwen3_xml", "<tool_call>\n<function=get_weather\n<parameter=city>x</parameter></function></tool_call>", "<tool_call><function=get_weather\n<parameter=city>x</parameter></function>"),
    ("qwen3_xml", "Write <function=" + "x" * 130, "Write <function=" + "x" * 130),
    ("qwen3_xml", "<tool_call>\n<function=get_weather>stray\n</function>\n</tool_call>", "<tool_call><function=get_weather>stray\n</function>"),  # text where parameters belong
    # Kimi K3: a call without a tool, a JSON block that is not an object, text after the arguments
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call index="1"<|sep|><|close|>call<|sep|><|close|>tools<|sep|>', '<|open|>tools<|sep|><|open|>call index="1"<|sep|><|close|>call<|sep|>'),
    ("kimi_k3", "<|open|>tools<|sep|><|open|>call<|close|>call<|sep|><|close|>tools<|sep|>", "<|open|>tools<|sep|><|open|>call<|close|>call<|sep|>"),
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="write_file"<|sep|><|open|>json<|sep|>{bad<|close|>json<|sep|><|close|>call<|sep|><|close|>tools<|sep|>', '<|open|>tools<|sep|><|open|>call tool="write_file"<|sep|><|open|>json<|sep|>{bad<|close|>json<|sep|><|close|>call<|sep|>'),
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="write_file"<|sep|><|open|>json<|sep|>[1]<|close|>json<|sep|><|close|>call<|sep|><|close|>tools<|sep|>', '<|open|>tools<|sep|><|open|>call tool="write_file"<|sep|><|open|>json<|sep|>[1]<|close|>json<|sep|><|close|>call<|sep|>'),
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="get_weather"<|sep|><|open|>argument key="city"<|sep|>x<|close|>argument<|sep|>tail<|close|>call<|sep|><|close|>tools<|sep|>', '<|open|>tools<|sep|><|open|>call tool="get_weather"<|sep|><|open|>argument key="city"<|sep|>x<|close|>argument<|sep|>tail<|close|>call<|sep|>'),
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="get_weather"<|sep|>stray<|close|>call<|sep|><|close|>tools<|sep|>', '<|open|>tools<|sep|><|open|>call tool="get_weather"<|sep|>stray<|close|>call<|sep|>'),
    # Kimi K2: a call whose id is empty (no function named); the argument marker and its space are
    # dropped from content, as everywhere
    ("kimi_k2", '<|tool_calls_section_begin|><|tool_call_begin|> <|tool_call_argument_begin|>{"city": "x"}<|tool_call_end|><|tool_calls_section_end|>', '<|tool_calls_section_begin|><|tool_call_begin|>{"city": "x"}'),
    # DeepSeek's DSML: an invoke without a name, text after its parameters or instead of them
    ("deepseek_dsml", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', '<｜DSML｜function_calls><｜DSML｜invoke name="">\n</｜DSML｜invoke>'),
    ("deepseek_dsml", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city">Rome</｜DSML｜parameter>\nstray\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', '<｜DSML｜function_calls><｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city">Rome</｜DSML｜parameter>\nstray\n</｜DSML｜invoke>'),
    ("deepseek_dsml", '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">stray\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', '<｜DSML｜function_calls><｜DSML｜invoke name="get_weather">stray\n</｜DSML｜invoke>'),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "output", "content"), NOT_CALLS)
def test_what_is_not_quite_a_call_is_content(fmt: str, output: str, content: str) -> None:
    result = parse(fmt, output)
    assert result.tool_calls == []
    assert result.content == content


def test_the_text_after_a_call_that_fails_once_open_keeps_its_spaces() -> None:
    """The call opened at its arguments and failed at a key no JSON object has: its text is content,
    spaces included, whether the output came whole or a character at a time."""
    output = '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}, 7: 1}</tool_call>'
    result = parse("hermes", output)
    assert result.tool_calls == []
    assert result.content == output.removesuffix("</tool_call>")


def test_a_deepseek_call_without_a_name_is_content_as_written() -> None:
    """V3's layout names the call on the line after `function<｜tool▁sep｜>`: without a name it is no
    call, and the whole of it, that header too, is content."""
    body = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>\n```json\n{}\n```"
    result = parse("deepseek_v3", f"<｜tool▁calls▁begin｜>{body}<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
    assert result.tool_calls == []
    assert result.content == f"<｜tool▁calls▁begin｜>{body}"


def test_a_mistral_list_that_never_holds_a_call_keeps_its_spaces() -> None:
    for output in ("[TOOL_CALLS][ ", "[TOOL_CALLS][\n\n"):
        result = parse("mistral", output)
        assert result.tool_calls == [] and result.content == output


def test_an_empty_gemma_channel_is_no_reasoning() -> None:
    """`<|channel>` closed at once, before any channel name: nothing is reasoning, and the text after
    it is content (without the space the template leaves after a channel); a named one is reasoning."""
    empty = parse("gemma4", "<|channel><channel|> Hello")
    assert (empty.reasoning, empty.content, empty.tool_calls) == (None, "Hello", [])
    named = parse("gemma4", "<|channel>thought\nHmm<channel|>Hello")
    assert (named.reasoning, named.content) == ("Hmm", "Hello")
