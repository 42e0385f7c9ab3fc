"""Any text at all, made of each format's own pieces: the segmenter never raises, gives the same result
however the text is split into deltas, and keeps the stream's rules (a call's pieces add up to its
arguments, every kept call's arguments are a JSON object)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxk.generation import Channel, Delta, ParseResult, ResultBuilder, list_formats, make_segmenter

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
COMMON = [
    " ", "\n", "text", "get_weather", '{"name": "get_weather", "arguments": {', '"parameters": {', '"city": "',
    '"days": 3', '"', "}", "]", "[", ",", ":", "\\", "{", "<", ">", "```json", "```", "=", "(", ")", "<think>",
    "</think>", 'city="x"', "[get_weather(", "call:get_weather{", '<|"|>',
]  # fmt: skip
PIECES = {
    "hermes": ["<tool_call>", "</tool_call>", "<function=get_weather>", "</function>", "<parameter=city>", "</parameter>"],
    "qwen3_xml": ["<tool_call>", "</tool_call>", "<function=get_weather>", "<function=", "</function>", "<parameter=days>", "</parameter>"],
    "llama3_json": ["<|python_tag|>", ";", '"parameters": {}', "<|eot_id|>"],
    "llama4_pythonic": ["<|python_start|>", "<|python_end|>", "[get_weather(city='a')]", "days=3"],
    "mistral": ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "abc123XYZ", "[THINK]", "[/THINK]", '[{"name": "get_weather"'],
    "harmony": ["<|start|>assistant", "<|channel|>", "analysis", "final", "commentary", " to=functions.get_weather", "<|constrain|>json", "<|message|>", "<|end|>", "<|call|>", "<|return|>"],
    "deepseek_v3": ["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "function<｜tool▁sep｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"],
    "deepseek_v31": ["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"],
    "deepseek_dsml": ["<｜DSML｜function_calls>", '<｜DSML｜invoke name="get_weather">', '<｜DSML｜parameter name="days" string="false">', "</｜DSML｜parameter>", "</｜DSML｜invoke>", "</｜DSML｜function_calls>"],
    "kimi_k2": ["<|tool_calls_section_begin|>", "<|tool_call_begin|>", "functions.get_weather:0", "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|tool_calls_section_end|>"],
    "kimi_k3": ["<|open|>think<|sep|>", "<|close|>think<|sep|>", "<|open|>tools<|sep|>", '<|open|>call tool="get_weather"<|sep|>', '<|open|>argument key="city" type="string"<|sep|>', "<|close|>argument<|sep|>", "<|close|>call<|sep|>", "<|close|>tools<|sep|>"],
    "glm45": ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"],
    "glm47": ["<tool_call>", "</tool_call>", "<arg_key>city</arg_key>", "<arg_value>", "</arg_value>"],
    "gemma4": ["<|channel>", "thought\n", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>"],
}  # fmt: skip
EXAMPLES = int(os.environ.get("MLXK_FUZZ_EXAMPLES", "150"))


def run(fmt: str, deltas: list[str]) -> tuple[ParseResult, list[Delta]]:
    segmenter = make_segmenter(fmt, tools=TOOLS, seed=1)
    events: list[Delta] = []
    for delta in deltas:
        events.extend(segmenter.feed(delta))
    events.extend(segmenter.finish())
    builder = ResultBuilder()
    builder.add(events)
    return builder.result(), events


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_text_of_format_pieces(data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(list_formats()))
    text = "".join(data.draw(st.lists(st.sampled_from(COMMON + PIECES[fmt]), max_size=40)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=20))))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if a < b]
    whole, _ = run(fmt, [text])
    split, events = run(fmt, deltas)
    assert split == whole
    pieces: dict[int, list[str]] = {}
    failed = set()
    for event in events:
        if event.channel is Channel.TOOL_CALL and event.name is not None:
            pieces[event.index or 0] = []
        elif event.channel is Channel.TOOL_CALL:
            pieces[event.index or 0].append(event.text)
        elif event.channel is Channel.FAILED_CALL:
            failed.add(event.index)
    kept = [k for k in sorted(pieces) if k not in failed]
    assert ["".join(pieces[k]) for k in kept] == [call.arguments for call in whole.tool_calls]
    for call in whole.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)


# Texts the exploring fuzzer (MLXK_HYPOTHESIS=explore) found split-dependent, each with the cut that
# showed it. llama3_json: a call whose name and arguments key came in one delta opened, and the stray
# marker after its arguments then failed it (kept as text); read whole, the same object never opened,
# went back to text and lost the marker. gemma4: read whole, a `<|channel>` header ended by a newline
# past the header's length limit swallowed the whole line as the channel's name (the text vanished);
# in pieces the limit gave it back as text.
@pytest.mark.parametrize(
    ("fmt", "text", "cut"),
    [
        ("llama3_json", '{"name": "get_weather", "arguments": {}<|python_tag|>"parameters": {', 36),
        ("gemma4", '<|channel>{"name": "get_weather", "arguments": {\n', 43),
    ],
)
def test_texts_once_read_differently_whole_and_in_pieces(fmt: str, text: str, cut: int) -> None:
    whole, _ = run(fmt, [text])
    split, _ = run(fmt, [text[:cut], text[cut:]])
    assert split == whole
    assert whole.content == text  # not a call, not a channel: the text itself, marker and all
