"""Outputs no stored template renders, written from the formats' documentation and from the failures
users report per family: Qwen3-Coder calls without their wrapper, XML inside GLM arguments, Kimi calls
inside reasoning, older Mistral and Llama layouts, harmony's channel variants, where a prompt leaves
the output (inside reasoning or not). Every case is also fed one character at a time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlxk.generation import Channel, ParseResult, make_segmenter, parse_output

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
        },
    },
}
WRITE = {
    "type": "function",
    "function": {
        "name": "write_file",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        },
    },
}
TOOLS = [WEATHER, WRITE]


def parse(fmt: str, output: str, prompt: str | None = None, tools: list[Any] | None = TOOLS) -> ParseResult:
    """The result, checked to be the same fed whole and one character at a time."""
    whole = parse_output(output, format=fmt, tools=tools, prompt_tail=prompt)
    by_char = parse_output(list(output), format=fmt, tools=tools, prompt_tail=prompt)
    assert (by_char.content, by_char.reasoning, calls(by_char)) == (
        whole.content,
        whole.reasoning,
        calls(whole),
    )
    return whole


def calls(result: ParseResult) -> list[tuple[str, Any]]:
    return [(call.name, json.loads(call.arguments)) for call in result.tool_calls]


# -- hermes / qwen3_xml ------------------------------------------------------------------------------


def test_qwen3_coder_call_without_its_tool_call_wrapper() -> None:
    output = "I will check.\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    result = parse("qwen3_xml", output)
    assert calls(result) == [("get_weather", {"city": "Paris"})]
    assert result.content == "I will check."


def test_an_unwrapped_function_of_a_tool_not_offered_is_text() -> None:
    output = "Write <function=main>\n<parameter=x>\n1\n</parameter>\n</function> in your file."
    result = parse("qwen3_xml", output)
    assert result.tool_calls == []
    assert result.content == output


def test_qwen3_xml_values_are_typed_by_the_schema() -> None:
    output = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n<parameter=days>\n3\n"
        "</parameter>\n<parameter=metric>\nTrue\n</parameter>\n</function>\n</tool_call>"
    )
    assert calls(parse("qwen3_xml", output)) == [("get_weather", {"city": "42", "days": 3, "metric": True})]


def test_xml_values_keep_their_inner_lines_and_markup() -> None:
    code = "def f():\n    return '</parameter>'\n\n<html></html>\n"
    output = f"<tool_call>\n<function=write_file>\n<parameter=content>\n{code}\n</parameter>\n</function>\n</tool_call>"
    assert calls(parse("qwen3_xml", output)) == [("write_file", {"content": code})]


def test_either_tool_call_layout_is_read_by_both_formats() -> None:
    json_call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    xml_call = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</function>\n</tool_call>"
    )
    for fmt in ("hermes", "qwen3_xml"):
        for output in (json_call, xml_call):
            assert calls(parse(fmt, output)) == [("get_weather", {"city": "Rome"})]


def test_hermes_arguments_given_as_a_json_string_and_the_name_last() -> None:
    output = '<tool_call>\n{"arguments": "{\\"city\\": \\"Oslo\\"}", "name": "get_weather"}\n</tool_call>'
    assert calls(parse("hermes", output)) == [("get_weather", {"city": "Oslo"})]


def test_hermes_call_without_arguments() -> None:
    assert calls(parse("hermes", '<tool_call>{"name": "get_weather"}</tool_call>')) == [("get_weather", {})]


def test_a_tool_call_tag_that_holds_no_call_is_text() -> None:
    for output in ("Use <tool_call> tags.", "<tool_call>\nnot json\n</tool_call>", "<tool_call>[1, 2]"):
        result = parse("hermes", output)
        assert result.tool_calls == [] and result.content is not None
        assert result.content.startswith(output[: output.index(">") + 1].strip())


def test_whitespace_away_from_markers_is_kept() -> None:
    for output in ("  indented\n\ncode  \n", "\n", "a\tb"):
        assert parse("hermes", output).content == output


@pytest.mark.parametrize(
    ("prompt", "reasoning", "content"),
    [
        # the model opens its reasoning itself (Qwen3): here it did not, so the text is content, and
        # the stray closing marker is dropped all the same
        ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", None, "Hmm, yes.Hello."),
        ("<|im_start|>assistant\n<think>\n", "Hmm, yes.", "Hello."),  # Qwen3.5: the prompt opens it
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", None, "Hmm, yes.Hello."),  # thinking off
    ],
)
def test_the_prompt_tail_says_whether_the_output_starts_in_reasoning(
    prompt: str, reasoning: str | None, content: str
) -> None:
    result = parse("qwen3_xml", "Hmm, yes.\n</think>\n\nHello.", prompt)
    assert (result.reasoning, result.content) == (reasoning, content)


def test_reasoning_markers_in_an_earlier_turn_of_the_prompt_do_not_count() -> None:
    prompt = "<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n"
    assert parse("hermes", "It opens a block.", prompt).content == "It opens a block."


# -- GLM ----------------------------------------------------------------------------------------------


def test_glm_arguments_holding_xml() -> None:
    html = "<div><tool_call>x</tool_call><arg_value>y</arg_value></div>"
    output = f"<tool_call>write_file\n<arg_key>path</arg_key>\n<arg_value>a.html</arg_value>\n<arg_key>content</arg_key>\n<arg_value>{html}</arg_value>\n</tool_call>"
    for fmt in ("glm45", "glm47"):
        assert calls(parse(fmt, output)) == [("write_file", {"path": "a.html", "content": html})]


def test_glm47_thinking_prompt_and_json_values() -> None:
    output = "Plan.</think>Calling.<tool_call>get_weather<arg_key>days</arg_key><arg_value>2</arg_value></tool_call>"
    result = parse("glm47", output, "[gMASK]<sop><|user|>hi<|assistant|><think>")
    assert (result.reasoning, result.content) == ("Plan.", "Calling.")
    assert calls(result) == [("get_weather", {"days": 2})]


def test_glm_without_tools_reads_json_looking_values_as_json() -> None:
    output = '<tool_call>f<arg_key>n</arg_key><arg_value>5</arg_value><arg_key>o</arg_key><arg_value>{"a": [1]}</arg_value><arg_key>s</arg_key><arg_value>Paris</arg_value></tool_call>'
    assert calls(parse("glm47", output, tools=None)) == [("f", {"n": 5, "o": {"a": [1]}, "s": "Paris"})]


# -- Kimi ---------------------------------------------------------------------------------------------


def test_kimi_k2_call_inside_reasoning() -> None:
    output = (
        "<think>I need the weather.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    result = parse("kimi_k2", output, "<|im_assistant|>assistant<|im_middle|>")
    assert calls(result) == [("get_weather", {"city": "Paris"})]
    assert result.reasoning == "I need the weather."
    assert result.content is None
    assert [call.id for call in result.tool_calls] == ["functions.get_weather:0"]


def test_kimi_k2_misspelled_section_marker_and_several_calls() -> None:
    output = (
        "<|tool_call_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
        '{"city": "A"}<|tool_call_end|><|tool_call_begin|>functions.write_file:1<|tool_call_argument_begin|>'
        '{"path": "b"}<|tool_call_end|><|tool_call_section_end|>'
    )
    result = parse("kimi_k2", output)
    assert calls(result) == [("get_weather", {"city": "A"}), ("write_file", {"path": "b"})]
    assert [call.id for call in result.tool_calls] == ["functions.get_weather:0", "functions.write_file:1"]


def test_kimi_k3_json_block_and_escaped_attributes() -> None:
    output = (
        '<|open|>response<|sep|>ok<|close|>response<|sep|><|open|>tools<|sep|><|open|>call tool="write_file" index="1"<|sep|>'
        '<|open|>json type="object"<|sep|>{"path": "a&b", "content": "x"}<|close|>json<|sep|><|close|>call<|sep|>'
        '<|open|>call tool="get_weather" index="2"<|sep|><|open|>argument key="city" type="string"<|sep|>'
        "Q &amp; A<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>"
    )
    result = parse("kimi_k3", output, '<|open|>message role="assistant"<|sep|><|open|>think<|sep|>')
    assert result.reasoning is None and result.content == "ok"
    assert calls(result) == [
        ("write_file", {"path": "a&b", "content": "x"}),
        ("get_weather", {"city": "Q &amp; A"}),
    ]


# -- Mistral ------------------------------------------------------------------------------------------


def test_mistral_7b_v03_call_list_after_a_space() -> None:
    output = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Lyon"}}]'
    result = parse("mistral", output)
    assert calls(result) == [("get_weather", {"city": "Lyon"})]
    assert len(result.tool_calls[0].id) == 9 and result.tool_calls[0].id.isalnum()


def test_magistral_2506_think_tags() -> None:
    output = "<think>\nHmm.\n</think>\n\nAnswer.[TOOL_CALLS]get_weather[ARGS]{}"
    result = parse("mistral", output)
    assert (result.reasoning, result.content, calls(result)) == ("Hmm.", "Answer.", [("get_weather", {})])


def test_mistral_name_that_is_no_name_is_text() -> None:
    output = "[TOOL_CALLS]what is this[ARGS]{}"
    result = parse("mistral", output)
    assert result.tool_calls == [] and result.content == output


# -- Llama --------------------------------------------------------------------------------------------


def test_llama3_parallel_calls_after_python_tag() -> None:
    output = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "A"}}; {"name": "get_weather", "parameters": {"city": "B"}}'
    assert calls(parse("llama3_json", output)) == [
        ("get_weather", {"city": "A"}),
        ("get_weather", {"city": "B"}),
    ]


def test_llama3_json_answer_that_is_not_a_call_is_content() -> None:
    for output in ('{"name": "Ada", "parameters": {"age": 36}}', '{"answer": 42}', "[1, 2]"):
        result = parse("llama3_json", output)
        assert result.tool_calls == [] and result.content == output


def test_llama4_official_json_calls_and_python_tags() -> None:
    output = (
        '<|python_start|>Let me check.<|python_end|>{"name": "get_weather", "parameters": {"city": "Rome"}}'
    )
    result = parse("llama4_pythonic", output)
    assert calls(result) == [("get_weather", {"city": "Rome"})]
    assert result.content == "Let me check."


def test_llama4_pythonic_literals_and_markdown_that_is_not_a_call() -> None:
    output = '[get_weather(city="Nice", days=2, metric=true)]'
    assert calls(parse("llama4_pythonic", output)) == [
        ("get_weather", {"city": "Nice", "days": 2, "metric": True})
    ]
    for text in ("[link](https://x.y) is here", "[get_weather(city=open('f'))]", "[unknown_tool(a=1)]"):
        result = parse("llama4_pythonic", text)
        assert result.tool_calls == [] and result.content == text


# -- harmony ------------------------------------------------------------------------------------------


def test_harmony_recipient_before_the_channel_and_a_preamble() -> None:
    output = (
        "<|channel|>analysis<|message|>Need weather.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking the weather…<|end|>"
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "SF"}'
    )
    result = parse("harmony", output, "<|start|>user<|message|>hi<|end|><|start|>assistant")
    assert result.reasoning == "Need weather."
    assert result.content == "Checking the weather…"
    assert calls(result) == [("get_weather", {"city": "SF"})]


def test_harmony_analysis_then_final_without_a_prompt_tail() -> None:
    output = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Done."
    result = parse("harmony", output)
    assert (result.reasoning, result.content) == ("Think.", "Done.")


def test_harmony_plain_text_is_content() -> None:
    assert parse("harmony", "Just text, no channels.").content == "Just text, no channels."


# -- DeepSeek -----------------------------------------------------------------------------------------


def test_deepseek_r1_reasoning_then_call() -> None:
    output = (
        "Okay.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Seoul"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    result = parse("deepseek_v3", output, "<｜User｜>hi<｜Assistant｜><think>\n")
    assert (result.reasoning, result.content) == ("Okay.", None)
    assert calls(result) == [("get_weather", {"city": "Seoul"})]


def test_deepseek_v31_thinking_prompt_and_underscore_markers() -> None:
    output = 'Hmm.</think>Sure.<｜tool_calls_begin｜><｜tool_call_begin｜>get_weather<｜tool_sep｜>{"city": "Kyiv"}<｜tool_call_end｜><｜tool_calls_end｜>'
    result = parse("deepseek_v31", output, "<｜User｜>hi<｜Assistant｜><think>")
    assert (result.reasoning, result.content) == ("Hmm.", "Sure.")
    assert calls(result) == [("get_weather", {"city": "Kyiv"})]


def test_dsml_string_attribute_decides_the_type() -> None:
    output = (
        '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">123'
        '</｜DSML｜parameter>\n<｜DSML｜parameter name="days" string="false">4</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        "</｜DSML｜function_calls>"
    )
    assert calls(parse("deepseek_dsml", output)) == [("get_weather", {"city": "123", "days": 4})]


# -- Gemma 4 ------------------------------------------------------------------------------------------


def test_gemma4_thinking_off_prompt_and_nested_values() -> None:
    prompt = "<|turn>user\nhi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    output = '<|tool_call>call:write_file{content:<|"|>a, b: {c}<|"|>,path:<|"|>x.txt<|"|>}<tool_call|>'
    result = parse("gemma4", output, prompt)
    assert result.reasoning is None and result.content is None
    assert calls(result) == [("write_file", {"content": "a, b: {c}", "path": "x.txt"})]


# -- streaming ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "output"),
    [
        ("hermes", '<tool_call>\n{"name": "write_file", "arguments": {"content": "%s"}}\n</tool_call>'),
        (
            "harmony",
            '<|channel|>commentary to=functions.write_file <|constrain|>json<|message|>{"content": "%s"}',
        ),
        ("mistral", '[TOOL_CALLS]write_file[ARGS]{"content": "%s"}'),
        (
            "kimi_k2",
            '<|tool_calls_section_begin|><|tool_call_begin|>functions.write_file:0<|tool_call_argument_begin|>{"content": "%s"}<|tool_call_end|>',
        ),
    ],
)
def test_json_arguments_stream_as_they_arrive(fmt: str, output: str) -> None:
    text = output % ("word " * 50)
    segmenter = make_segmenter(fmt, tools=TOOLS)
    pieces = []
    for char in text:
        for delta in segmenter.feed(char):
            if delta.channel is Channel.TOOL_CALL and delta.name is None:
                pieces.append(delta.text)
    segmenter.finish()
    assert len(pieces) > 40  # the arguments came while the model wrote them
    assert json.loads("".join(pieces)) == {"content": "word " * 50}


def test_a_call_cut_after_it_started_is_failed_and_its_text_is_content() -> None:
    output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    segmenter = make_segmenter("hermes", tools=TOOLS)
    events = segmenter.feed(output) + segmenter.finish()
    assert [e.channel for e in events] == [Channel.TOOL_CALL, Channel.TOOL_CALL, Channel.FAILED_CALL]
    assert events[0].name == "get_weather" and events[2].index == 0
    result = parse_output(output, format="hermes", tools=TOOLS)
    assert result.tool_calls == []
    assert result.content == '<tool_call>{"name": "get_weather", "arguments": {"city": "Par'


def test_feed_after_finish_is_an_error_and_unknown_formats_are_refused() -> None:
    segmenter = make_segmenter("hermes")
    segmenter.finish()
    assert segmenter.finish() == []
    with pytest.raises(RuntimeError):
        segmenter.feed("x")
    with pytest.raises(ValueError, match="unknown output format"):
        make_segmenter("nope")


def test_seeded_segmenters_give_repeatable_ids() -> None:
    output = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    ids = [make_segmenter("hermes", seed=3).feed(output)[0].id for _ in range(2)]
    assert ids[0] == ids[1] and ids[0] is not None and ids[0].startswith("call_")
    assert make_segmenter("hermes", seed=4).feed(output)[0].id != ids[0]


def test_calls_outside_their_section_are_read_and_stray_markers_dropped() -> None:
    # DeepSeek R1's own template writes a second call after the section's end
    output = (
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "A"}\n```'
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "B"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    assert calls(parse("deepseek_v3", output)) == [
        ("get_weather", {"city": "A"}),
        ("get_weather", {"city": "B"}),
    ]
    kimi = (
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "C"}<|tool_call_end|>'
    )
    assert calls(parse("kimi_k2", kimi)) == [("get_weather", {"city": "C"})]
    assert parse("kimi_k2", "a <|tool_call_end|> b").content == "ab"  # with the marker's whitespace


def test_the_example_in_the_docs_gives_what_they_say() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "tools.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/tools.md", "exec"), namespace)
    checked = 0
    for line in code.splitlines():
        if "  # " in line and not line.startswith("#"):
            expression, said = line.split("  # ", 1)
            value = eval(expression.strip(), namespace)
            if said.endswith("…'"):
                assert value.startswith(said[1:-2])
            else:
                assert repr(value) == said.strip()
            checked += 1
    assert checked == 5


def test_a_json_answer_streams_as_content_once_it_cannot_be_a_call() -> None:
    """Llama's calls are bare JSON, so a JSON answer waits only until a key no call has shows."""
    segmenter = make_segmenter("llama3_json", tools=TOOLS)
    assert segmenter.feed('{"answer"') == []  # the key is known at its colon
    streamed = segmenter.feed(": 42, ")
    assert [(d.channel, d.text) for d in streamed] == [(Channel.CONTENT, '{"answer": 42,')]
    segmenter = make_segmenter("llama3_json", tools=TOOLS)
    assert segmenter.feed('{"name": "get_weather", "parameters": {"ci') != []  # an offered tool: a call
    segmenter = make_segmenter("llama3_json", tools=TOOLS)
    streamed = segmenter.feed('{"name": "Ada", "parameters": {"age": 3')
    assert streamed and all(d.channel is Channel.CONTENT for d in streamed)
