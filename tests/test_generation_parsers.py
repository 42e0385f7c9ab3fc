"""The output parsers on what models really write: assistant messages rendered by each family's own chat
template (tests/data/templates), fed whole and split into deltas at random points.

For each template: a single call, parallel calls, no call, nested / unicode / empty arguments, a
format marker inside a string argument, reasoning then a call, and the same outputs truncated and
corrupted. The expected result is the message that was rendered: its content, its reasoning and its
calls (arguments compared as JSON values, typed by the tools' schemas where the format writes text).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxk.generation import Channel, Delta, ParseResult, ResultBuilder, make_segmenter, parse_output

TEMPLATES = Path(__file__).parent / "data" / "templates"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city."},
                "days": {"type": "integer", "description": "How many days ahead."},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the notes.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "object", "description": "Filters."},
                "note": {"type": "string", "description": "A note."},
                "exact": {"type": "boolean", "description": "Exact match."},
                "score": {"type": "number", "description": "Minimum score."},
            },
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now.",
        "parameters": {"type": "object", "properties": {}},
    },
}
TOOLS = [WEATHER, SEARCH, CLOCK]

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Family:
    """A stored template and how it renders a message with calls."""

    template: str
    format: str
    parallel: bool = True  # renders more than one call per message
    content_with_calls: bool = True  # renders a message's content next to its calls
    reasoning_with_calls: bool = False  # renders a message's reasoning next to its calls
    reasoning_with_answer: bool | None = None  # renders the reasoning of a final answer (default: as above)
    null_content: bool = False  # a message of calls only has content None (else "")
    # the history shows an assistant turn without this end of the generation prompt (DeepSeek R1's
    # `<think>\n`): the output then follows the prompt without it, as the history shows
    history_drops: str = ""
    reasoning_key: str = "reasoning_content"
    arguments_as_text: bool = False  # wants `arguments` as JSON text, not a mapping
    kwargs: dict[str, Any] = field(default_factory=dict)  # for every rendering
    plain_kwargs: dict[str, Any] = field(default_factory=dict)  # where the message has no reasoning
    # the end of the turn: a stop token in real generation, so never in the text a server parses
    stops: tuple[str, ...] = ()
    marker_text: str = ""  # a string argument holding this format's own markers


IM_END = ("<|im_end|>",)
FAMILIES = [
    Family(
        "Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", stops=IM_END, marker_text="a </tool_call> b <tool_call> c"
    ),
    Family(
        "Qwen-Qwen3-0.6B.jinja",
        "hermes",
        reasoning_with_calls=True,
        stops=IM_END,
        marker_text='x"}} </tool_call>\n<think>',
    ),
    Family(
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "hermes",
        content_with_calls=False,
        stops=IM_END,
        marker_text="</tool_call>",
    ),
    Family(
        "Qwen3-Coder.jinja",
        "qwen3_xml",
        stops=IM_END,
        marker_text="a </parameter> b </function> c </tool_call>",
    ),
    Family(
        "Qwen3.5-4B.jinja",
        "qwen3_xml",
        reasoning_with_calls=True,
        stops=IM_END,
        marker_text="<parameter=x>\n</parameter> y </tool_call>",
    ),
    Family(
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "llama3_json",
        parallel=False,
        content_with_calls=False,
        stops=("<|eot_id|>", "<|eom_id|>"),
        marker_text='"}; {"name": "x", "parameters": {}} <|python_tag|>',
    ),
    Family(
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "llama3_json",
        parallel=False,
        content_with_calls=False,
        stops=("<|eot_id|>", "<|eom_id|>"),
        marker_text="} <|eot_id|>",
    ),
    Family(
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "llama3_json",
        parallel=False,
        content_with_calls=False,
        stops=("<|eot_id|>", "<|eom_id|>"),
        marker_text="{",
    ),
    Family(
        "vllm-llama4-pythonic.jinja",
        "llama4_pythonic",
        content_with_calls=False,
        stops=("<|eot|>",),
        marker_text="a ) ] b ( [ c",
    ),
    Family(
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "mistral",
        content_with_calls=False,
        stops=("</s>",),
        marker_text='"}] [TOOL_CALLS]',
    ),
    Family(
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        "mistral",
        content_with_calls=False,
        stops=("</s>",),
        marker_text="[ARGS] [TOOL_CALLS]x[CALL_ID]",
    ),
    Family(
        "unsloth-mistral-Devstral-Small-2507.jinja",
        "mistral",
        stops=("</s>",),
        marker_text="[TOOL_CALLS]get_time[ARGS]{}",
    ),
    Family(
        "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
        "mistral",
        reasoning_with_calls=True,
        reasoning_key="thinking_block",
        stops=("</s>",),
        marker_text="[/THINK] [TOOL_CALLS]",
    ),
    Family(
        "openai-gpt-oss-120b.jinja",
        "harmony",
        parallel=False,
        content_with_calls=False,
        reasoning_with_calls=True,
        reasoning_key="thinking",
        stops=("<|call|>", "<|return|>"),
        marker_text="<|call|> <|end|><|start|>assistant<|channel|>final<|message|>",
    ),
    Family(
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "deepseek_v3",
        content_with_calls=False,
        arguments_as_text=True,
        null_content=True,
        history_drops="<think>\n",
        stops=("<｜end▁of▁sentence｜>",),
        marker_text="```<｜tool▁call▁end｜>",
    ),
    Family(
        "deepseek-ai-DeepSeek-V3.1.jinja",
        "deepseek_v31",
        plain_kwargs={"thinking": False},  # mlx-lm switches it on for tokenizers with think tokens
        stops=("<｜end▁of▁sentence｜>",),
        marker_text="<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    ),
    Family(
        "deepseek-ai-DeepSeek-V3.2.jinja",
        "deepseek_dsml",
        reasoning_with_calls=True,
        kwargs={"thinking": True},
        stops=("<｜end▁of▁sentence｜>",),
        marker_text="</｜DSML｜parameter> </｜DSML｜invoke>",
    ),
    Family(
        "deepseek-ai-DeepSeek-V4.jinja",
        "deepseek_dsml",
        reasoning_with_calls=True,
        kwargs={"thinking": True},
        stops=("<｜end▁of▁sentence｜>",),
        marker_text="</｜DSML｜tool_calls>",
    ),
    Family(
        "Kimi-K2-Instruct.jinja",
        "kimi_k2",
        stops=IM_END,
        marker_text="<|tool_call_end|><|tool_calls_section_end|>",
    ),
    Family(
        "Kimi-K2-Thinking.jinja",
        "kimi_k2",
        reasoning_with_calls=True,
        reasoning_with_answer=False,
        stops=IM_END,
        marker_text="</think><|tool_call_begin|>",
    ),
    Family(
        "Kimi-K3.jinja",
        "kimi_k3",
        reasoning_with_calls=True,
        stops=("<|end_of_msg|>",),
        marker_text="<|close|>argument<|sep|> x <|close|>call<|sep|>",
    ),
    Family(
        "GLM-4.6.jinja",
        "glm45",
        reasoning_with_calls=True,
        stops=("<|user|>", "<|observation|>"),
        marker_text="x </arg_value> y </tool_call> z",
    ),
    Family(
        "GLM-4.7-Flash.jinja",
        "glm47",
        reasoning_with_calls=True,
        plain_kwargs={"enable_thinking": False},
        stops=("<|user|>", "<|observation|>"),
        marker_text="<arg_key>k</arg_key> </tool_call>",
    ),
    Family(
        "google-gemma-4-31B-it.jinja",
        "gemma4",
        reasoning_with_calls=True,
        reasoning_with_answer=False,
        reasoning_key="reasoning",
        kwargs={"enable_thinking": True},
        stops=("<turn|>", "<|tool_response>"),
        marker_text="<tool_call|> } <|tool_call>call:x{",
    ),
]
FAMILY_IDS = [f.template.removesuffix(".jinja") for f in FAMILIES]


@dataclass(frozen=True)
class Message:
    """An assistant message: what the parser must give back."""

    content: str | None = None
    reasoning: str | None = None
    calls: tuple[Call, ...] = ()


NESTED = {
    "filters": [{"key": "größe", "values": [1, 2.5, True, None]}],
    "sort": {"by": "date", "desc": False},
}
CASES: dict[str, Message] = {
    "single": Message(calls=(("get_weather", {"city": "Paris", "days": 3}),)),
    "parallel": Message(
        calls=(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "東京", "days": 2}))
    ),
    "no_call": Message(content="It is sunny in Paris today."),
    "content_then_call": Message(content="Let me look that up.", calls=(("get_time", {}),)),
    "nested_unicode": Message(
        calls=(
            ("search", {"query": NESTED, "note": "naïve café ☕ 日本語 🎉", "exact": True, "score": 0.75}),
        )
    ),
    "empty_arguments": Message(calls=(("get_time", {}),)),
    "reasoning_then_call": Message(
        reasoning="The user wants the weather.\nI should call the tool.",
        calls=(("get_weather", {"city": "Oslo"}),),
    ),
    "reasoning_then_answer": Message(reasoning="Easy: greet back.", content="Hello! How can I help?"),
}


def case_applies(family: Family, name: str, message: Message) -> bool:
    if len(message.calls) > 1 and not family.parallel:
        return False
    if message.calls and message.content and not family.content_with_calls:
        return False
    if message.reasoning and message.calls and not family.reasoning_with_calls:
        return False
    answers_reasoning = (
        family.reasoning_with_calls if family.reasoning_with_answer is None else family.reasoning_with_answer
    )
    return not (name == "reasoning_then_answer" and not answers_reasoning)


# -- rendering -----------------------------------------------------------------------------------


@cache
def _template(name: str) -> Any:
    """The template compiled as transformers compiles it; a mutable sandbox for the templates that
    append to lists (Kimi's), which transformers' immutable one refuses."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import SandboxedEnvironment
    from transformers.utils.chat_template_utils import _compile_jinja_template

    text = (TEMPLATES / name).read_text()
    compiled = _compile_jinja_template(text)
    if ".append(" not in text:
        return compiled
    env = SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters.update(compiled.environment.filters)
    env.globals.update(compiled.environment.globals)
    return env.from_string(text)


def render(family: Family, messages: list[dict[str, Any]], generation: bool, **kwargs: Any) -> str:
    template = _template(family.template)
    return str(
        template.render(
            messages=messages,
            tools=TOOLS,
            add_generation_prompt=generation,
            bos_token="<s>",
            eos_token="</s>",
            **family.kwargs,
            **kwargs,
        )
    )


def assistant_message(family: Family, message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.reasoning and family.reasoning_key == "thinking_block":
        out["content"] = [{"type": "thinking", "thinking": message.reasoning}]
        if message.content:
            out["content"].append({"type": "text", "text": message.content})
    elif message.reasoning:
        out[family.reasoning_key] = message.reasoning
    if message.calls:
        out["tool_calls"] = [
            {
                "id": f"call{k:04d}A",  # Mistral's templates want 9 letters and digits
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": json.dumps(args) if family.arguments_as_text else args,
                },
            }
            for k, (name, args) in enumerate(message.calls)
        ]
    if out["content"] is None and not (message.calls and family.null_content):
        out["content"] = ""
    return out


_RENDERED: dict[tuple[str, str], tuple[str, str]] = {}


def rendered(family: Family, case: str | Message) -> tuple[str, str]:
    """(the model's output, the prompt before it) for one case (by name, or a message)."""
    message = CASES[case] if isinstance(case, str) else case
    key = (family.template, repr(message))
    if key not in _RENDERED:
        _RENDERED[key] = _render_case(family, message)
    return _RENDERED[key]


def _render_case(family: Family, message: Message) -> tuple[str, str]:
    kwargs = family.plain_kwargs if not message.reasoning else {}
    user = {"role": "user", "content": "What is the weather in Paris?"}
    prompt = render(family, [user], True, **kwargs)
    full = render(family, [user, assistant_message(family, message)], False, **kwargs)
    if family.history_drops and not full.startswith(prompt):
        prompt = prompt.removesuffix(family.history_drops)
    assert full.startswith(prompt), f"{family.template}: the prompt is not a prefix of the conversation"
    return strip_stops(family, full[len(prompt) :]), prompt


def strip_stops(family: Family, output: str) -> str:
    """The output as a server sees it: the template ends the turn with a stop token (and perhaps a line
    break), where generation stops; the token is not text."""
    while True:
        end = output.rstrip("\n")
        stop = next((s for s in family.stops if end.endswith(s)), None)
        if stop is None:
            return output
        output = end.removesuffix(stop)


# -- checking ------------------------------------------------------------------------------------


def splits(text: str, cuts: Iterable[int]) -> list[str]:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def segment(fmt: str, deltas: list[str], prompt: str | None = None) -> tuple[ParseResult, list[Delta]]:
    """The result and the event stream of a seeded segmenter (ids repeatable)."""
    segmenter = make_segmenter(fmt, tools=TOOLS, prompt_tail=prompt, seed=7)
    events: list[Delta] = []
    for delta in deltas:
        events.extend(segmenter.feed(delta))
    events.extend(segmenter.finish())
    builder = ResultBuilder()
    builder.add(events)
    return builder.result(), events


def calls_of(result: ParseResult) -> list[Call]:
    return [(call.name, json.loads(call.arguments)) for call in result.tool_calls]


def check_stream(events: list[Delta], result: ParseResult) -> None:
    """The stream's own rules: a call's first delta names it, its argument pieces add up to its
    arguments, and each piece of JSON-argument formats keeps the text a valid JSON prefix so far."""
    seen: dict[int, list[str]] = {}
    failed = set()
    for event in events:
        if event.channel is Channel.TOOL_CALL:
            assert event.index is not None
            if event.index not in seen:
                assert event.name and event.id and not event.text
                seen[event.index] = []
            else:
                assert event.name is None and event.text
                seen[event.index].append(event.text)
        elif event.channel is Channel.FAILED_CALL:
            failed.add(event.index)
        else:
            assert event.text
    assert sorted(seen) == list(range(len(seen)))  # indices count up from 0
    kept = [index for index in sorted(seen) if index not in failed]
    assert ["".join(seen[index]) for index in kept] == [call.arguments for call in result.tool_calls]


MARKERS: dict[str, tuple[str, ...]] = {
    "hermes": ("<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_end|>"),
    "qwen3_xml": (
        "<tool_call>",
        "</tool_call>",
        "<function=",
        "</function>",
        "<parameter=",
        "</parameter>",
        "<think>",
    ),
    "llama3_json": ("<|python_tag|>", "<|eot_id|>", '"parameters"'),
    "llama4_pythonic": ("<|python_start|>", "<|python_end|>", "get_weather(", "get_time("),
    "mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"),
    "harmony": (
        "<|channel|>",
        "<|message|>",
        "<|start|>",
        "<|end|>",
        "<|call|>",
        "<|constrain|>",
        "to=functions",
    ),
    "deepseek_v3": (
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "```",
        "<think>",
    ),
    "deepseek_v31": (
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "</think>",
    ),
    "deepseek_dsml": ("｜DSML｜", "</think>", "<think>"),
    "kimi_k2": (
        "<|tool_calls_section_begin|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<think>",
    ),
    "kimi_k3": ("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"),
    "glm45": ("<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>", "</think>"),
    "glm47": ("<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>", "</think>"),
    "gemma4": ("<|tool_call>", "<tool_call|>", "<|channel>", "<channel|>", '<|"|>', "call:"),
}


def assert_no_markers(fmt: str, result: ParseResult, allowed: str = "") -> None:
    for text in (result.content or "", result.reasoning or "", *(c.arguments for c in result.tool_calls)):
        for marker in MARKERS[fmt]:
            assert marker not in text.replace(allowed, "") if allowed else marker not in text, (marker, text)


def expected_calls(message: Message) -> list[Call]:
    return [(name, args) for name, args in message.calls]


def check_case(family: Family, case: str) -> None:
    output, prompt = rendered(family, case)
    message = CASES[case]
    whole, events = segment(family.format, [output], prompt)
    assert whole.content == message.content, output
    assert whole.reasoning == message.reasoning, output
    assert calls_of(whole) == expected_calls(message), output
    check_stream(events, whole)
    assert_no_markers(family.format, whole)
    public = parse_output(output, format=family.format, tools=TOOLS, prompt_tail=prompt)
    assert (public.content, public.reasoning, calls_of(public)) == (
        whole.content,
        whole.reasoning,
        calls_of(whole),
    )


def all_cases() -> list[Any]:
    return [
        pytest.param(family, case, id=f"{family_id}-{case}")
        for family, family_id in zip(FAMILIES, FAMILY_IDS, strict=True)
        for case, message in CASES.items()
        if case_applies(family, case, message)
    ]


@pytest.mark.parametrize(("family", "case"), all_cases())
def test_rendered_output_parses_to_the_message(family: Family, case: str) -> None:
    check_case(family, case)


@pytest.mark.parametrize(("family", "case"), all_cases())
def test_any_split_into_deltas_gives_the_same_result(family: Family, case: str) -> None:
    output, prompt = rendered(family, case)
    whole, _ = segment(family.format, [output], prompt)
    rng = random.Random(case + family.template)
    for _ in range(25):
        cuts = rng.sample(range(1, len(output)), min(len(output) - 1, rng.randint(1, 60)))
        result, events = segment(family.format, splits(output, cuts), prompt)
        assert result == whole  # ids included: the segmenter is seeded
        check_stream(events, result)
    one_by_one, _ = segment(family.format, list(output), prompt)
    assert one_by_one == whole


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_splits(data: st.DataObject) -> None:
    family, case = data.draw(st.sampled_from([p.values for p in all_cases()]))
    output, prompt = rendered(family, case)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(output) - 1)), max_size=80))
    whole, _ = segment(family.format, [output], prompt)
    result, events = segment(family.format, splits(output, cuts), prompt)
    assert result == whole
    check_stream(events, result)


# -- markers inside string arguments ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_markers_inside_a_string_argument_are_text(family: Family) -> None:
    message = Message(calls=(("search", {"note": family.marker_text, "exact": False}),))
    output, prompt = rendered(family, message)
    for deltas in ([output], list(output), splits(output, range(3, len(output), 7))):
        result, events = segment(family.format, deltas, prompt)
        assert calls_of(result) == expected_calls(message), output
        assert result.content is None and result.reasoning is None
        check_stream(events, result)


# -- truncated and malformed output ------------------------------------------------------------------


@pytest.mark.parametrize(("family", "case"), [p for p in all_cases() if "call" in p.id or "parallel" in p.id])
def test_truncated_output_keeps_complete_calls_and_never_raises(family: Family, case: str) -> None:
    """Cut anywhere (max_tokens): the calls completed before the cut come back; the one cut through
    is content (or a failed call), never a call with partial arguments."""
    output, prompt = rendered(family, case)
    expected = expected_calls(CASES[case])
    for cut in range(0, len(output), max(1, len(output) // 60)):
        result, events = segment(family.format, [output[:cut]], prompt)
        got = calls_of(result)
        assert got == expected[: len(got)], (cut, output[:cut])
        check_stream(events, result)
        streamed, _ = segment(family.format, list(output[:cut]), prompt)
        assert streamed == result


CORRUPTIONS: dict[str, Callable[[str], str]] = {
    # JSON arguments: an unquoted string value is not JSON
    "json": lambda out: out.replace('"Paris"', "Paris", 1),
    # text arguments: the closing tags go missing (a value runs to its own closing tag, and may hold
    # any text, so one missing tag only makes a long value)
    "qwen3_xml": lambda out: out.replace("</parameter>", ""),
    "glm": lambda out: out.replace("</arg_value>", ""),
    "deepseek_dsml": lambda out: out.replace("</｜DSML｜parameter>", ""),
    "kimi_k3": lambda out: out.replace("<|close|>argument<|sep|>", ""),
    "gemma4": lambda out: out.replace('Paris<|"|>', "Paris", 1),
    "llama4_pythonic": lambda out: out.replace('"Paris"', "Paris Hilton", 1),
}


def corrupt(family: Family, output: str) -> str:
    key = {"glm45": "glm", "glm47": "glm"}.get(family.format, family.format)
    return CORRUPTIONS.get(key, CORRUPTIONS["json"])(output)


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_a_malformed_call_comes_back_as_content(family: Family) -> None:
    output, prompt = rendered(family, "single")
    broken = corrupt(family, output)
    assert broken != output
    whole, events = segment(family.format, [broken], prompt)
    assert whole.tool_calls == []
    assert whole.content and "Paris" in whole.content
    for deltas in (list(broken), splits(broken, range(2, len(broken), 5))):
        assert segment(family.format, deltas, prompt)[0] == whole
    check_stream(events, whole)
    assert parse_output(broken, format=family.format, tools=TOOLS, prompt_tail=prompt).tool_calls == []


def test_every_format_has_a_stored_template_and_a_marker_list() -> None:
    from mlxk.generation import list_formats

    assert {f.format for f in FAMILIES} == set(list_formats())
    assert set(MARKERS) == set(list_formats())  # so the leakage check means something for each
