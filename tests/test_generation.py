"""The generation pipeline's parts: request values and their one table of bounds, the prompt
through the model's own chat template, the sequence's segmenter slot (driven by the
single-sequence loop and the batch loop alike), chunks on their channels."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from mlxk.errors import InvalidField, ValidationError
from mlxk.generation.chunks import Chunk, ToolCallDelta, merge
from mlxk.generation.request import (
    BOUNDS,
    FunctionTool,
    GenerationRequest,
    ImagePart,
    Message,
    NamedFunction,
    ResponseFormat,
    Sampling,
    TextPart,
    ToolCall,
)
from mlxk.generation.sequence import PlainText, Segment, SegmentEvent
from tests.modelfix import install
from tests.toolfix import TOOLS_TEMPLATE, with_template

GREEDY = Sampling(temperature=0.0)
HELLO = (Message("user", "Hello"),)

# --- request values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "inside", "outside"),
    [
        ("temperature", 2.0, 2.01),
        ("temperature", 0.0, -0.1),
        ("top_p", 0.0, -0.1),  # 0: only the most likely token
        ("top_p", 1.0, 1.1),
        ("top_k", 1_000_000, -1),
        ("min_p", 1.0, 1.5),
        ("repetition_penalty", 0.01, 0.0),
        ("repetition_penalty", 10.0, 10.5),
        ("presence_penalty", -2.0, -2.5),
        ("frequency_penalty", 2.0, 3.0),
        ("seed", -(2**63), -(2**63) - 1),  # any 64-bit integer, as OpenAI takes
        ("seed", 2**63 - 1, 2**63),
    ],
)
def test_sampling_bounds_are_checked_on_the_value(field: str, inside: Any, outside: Any) -> None:
    values: dict[str, Any] = {field: inside}
    assert getattr(Sampling(**values), field) == inside
    with pytest.raises(InvalidField) as caught:
        Sampling(**{field: outside})
    assert caught.value.param == field and BOUNDS[field].describe() in caught.value.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1"])
def test_sampling_refuses_what_is_no_finite_number(value: Any) -> None:
    with pytest.raises(InvalidField):
        Sampling(temperature=value)


def test_whole_number_fields_refuse_fractions() -> None:
    with pytest.raises(InvalidField, match="whole"):
        Sampling(top_k=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidField, match="max_tokens"):
        GenerationRequest(messages=HELLO, max_tokens=0)


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({}, "messages"),
        ({"messages": HELLO, "prompt": "x"}, "prompt"),
        ({"messages": HELLO, "stops": ("",)}, "stop"),
        ({"messages": HELLO, "stops": ("x",) * 17}, "stop"),
        ({"messages": (Message("wizard", "x"),)}, "messages[0].role"),
        ({"messages": (Message("user", (TextPart("a"), ImagePart("data:,x"))),)}, "messages[0].content"),
        (
            {"messages": (Message("user", "x", tool_calls=(ToolCall("1", "f", "{}"),)),)},
            "messages[0].tool_calls",
        ),
        ({"messages": (Message("user", "x", tool_call_id="1"),)}, "messages[0].tool_call_id"),
        ({"messages": HELLO, "tools": (FunctionTool("no spaces"),)}, "tools[0].function.name"),
        ({"messages": HELLO, "tools": (FunctionTool("f"), FunctionTool("f"))}, "tools"),
        ({"messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
        (
            {"messages": HELLO, "tools": (FunctionTool("f"),), "tool_choice": NamedFunction("g")},
            "tool_choice",
        ),
        ({"messages": HELLO, "response_format": ResponseFormat("json_schema")}, "response_format"),
        ({"messages": HELLO, "response_format": ResponseFormat("yaml")}, "response_format"),
        ({"messages": HELLO, "template_kwargs": {"tools": []}}, "chat_template_kwargs"),
        ({"prompt": "x", "thinking": False}, "prompt"),
    ],
)
def test_requests_the_pipeline_cannot_serve_are_refused_naming_the_field(
    request_fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        GenerationRequest(**request_fields)
    assert caught.value.param == param


def test_merge_joins_channels_and_the_pieces_of_each_call() -> None:
    merged = merge(
        [
            Chunk(reasoning="Let me "),
            Chunk("", "think", (ToolCallDelta(0, "call_a", "get_weather", '{"ci'),)),
            Chunk("ok", "", (ToolCallDelta(0, arguments='ty": 1}'), ToolCallDelta(1, "call_b", "get_time"))),
            Chunk(tool_calls=(ToolCallDelta(2, "call_c", "f", "{"), ToolCallDelta(2, failed=True))),
            Chunk(finish_reason="tool_calls"),
        ]
    )
    assert (merged.content, merged.reasoning, merged.finish_reason) == ("ok", "Let me think", "tool_calls")
    assert merged.tool_calls == (
        ToolCallDelta(0, "call_a", "get_weather", '{"city": 1}'),
        ToolCallDelta(1, "call_b", "get_time", ""),
        ToolCallDelta(2, failed=True),  # what came of call 2 is void
    )


# --- on tiny real models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(
    tiny_models: dict[str, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("generation")
    files = {
        "chat": tiny_models["chat"],
        "stop": tiny_models["stop"],
        "raw": tiny_models["raw"],
        "tools": with_template(tiny_models["chat"], TOOLS_TEMPLATE),
    }
    yield {key: load_engine(str(install(hub, f"test/{key}", f).snapshot)) for key, f in files.items()}


def rendered(engine: Any, request: GenerationRequest) -> str:
    prompt = engine.prompt(request)
    return str(engine.tokenizer.decode(prompt.tokens))


CONVERSATION = (
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", "Sunny, 21 C", tool_call_id="call_1", name="get_weather"),
)


def test_tools_and_tool_results_reach_the_template_in_hf_shapes(engines: dict[str, Any]) -> None:
    weather = FunctionTool("get_weather", "The weather", {"type": "object", "properties": {}})
    request = GenerationRequest(messages=CONVERSATION, tools=(weather, FunctionTool("get_time")))
    text = rendered(engines["tools"], request)
    assert '{"type": "function", "function": {"name": "get_weather", "description": "The weather"' in text
    assert '"name": "get_time"' in text
    # the arguments went to the template as a dict: tojson printed an object, not a quoted string
    assert '<tool_call>call_1 get_weather {"city": "Paris"}</tool_call>' in text
    assert "<|im_start|>tool call_1\nSunny, 21 C<|im_end|>" in text


def test_tool_choice_decides_which_tools_the_template_shows(engines: dict[str, Any]) -> None:
    tools = (FunctionTool("get_weather"), FunctionTool("get_time"))
    none = rendered(engines["tools"], GenerationRequest(messages=HELLO, tools=tools, tool_choice="none"))
    named = rendered(
        engines["tools"],
        GenerationRequest(messages=HELLO, tools=tools, tool_choice=NamedFunction("get_time")),
    )
    assert "Tools:" not in none
    assert '"get_time"' in named and '"get_weather"' not in named


def test_arguments_that_are_no_json_object_reach_the_template_as_text(engines: dict[str, Any]) -> None:
    call = Message("assistant", "", tool_calls=(ToolCall("c", "f", "not json"),))
    text = rendered(engines["tools"], GenerationRequest(messages=(*HELLO, call, Message("user", "x"))))
    assert '<tool_call>c f "not json"</tool_call>' in text


def test_the_thinking_switch_and_the_prompt_tail(engines: dict[str, Any]) -> None:
    on = engines["tools"].prompt(GenerationRequest(messages=HELLO, thinking=True))
    off = engines["tools"].prompt(GenerationRequest(messages=HELLO, thinking=False))
    assert on.tail.endswith("<|im_start|>assistant\n<think>\n")  # the answer starts inside reasoning
    assert off.tail.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert len(on.tokens) < len(off.tokens)


def test_template_variables_reach_the_template(engines: dict[str, Any]) -> None:
    request = GenerationRequest(messages=HELLO, template_kwargs={"house_rules": "Be kind."})
    assert rendered(engines["tools"], request).startswith("<|im_start|>system\nBe kind.<|im_end|>")


def test_a_conversation_the_template_refuses_is_a_clear_error(engines: dict[str, Any]) -> None:
    late_system = (*HELLO, Message("system", "x"))
    with pytest.raises(ValidationError, match=r"chat template refused.*system message comes first"):
        engines["tools"].prompt(GenerationRequest(messages=late_system))


def test_a_base_model_takes_the_turns_as_text_and_no_tools(engines: dict[str, Any]) -> None:
    raw = engines["raw"]
    request = GenerationRequest(messages=(Message("user", "Hi"), Message("assistant", "Yo")))
    assert raw.prompt(request).tail == "Hi\n\nYo"
    with pytest.raises(ValidationError, match="no chat template"):
        raw.prompt(GenerationRequest(messages=HELLO, tools=(FunctionTool("f"),)))


class ThinkFirst:
    """A segmenter for the tests: the first ``size`` characters of the output are reasoning, the
    rest content (whatever the model wrote), and with ``call`` a tool call at the end."""

    def __init__(self, size: int, call: bool = False) -> None:
        self.left = size
        self.call = call

    def feed(self, text: str) -> Iterable[SegmentEvent]:
        head, tail = text[: self.left], text[self.left :]
        self.left -= len(head)
        return [Segment(channel, part) for channel, part in (("reasoning", head), ("content", tail)) if part]

    def finish(self) -> Iterable[SegmentEvent]:
        if not self.call:
            return []
        return [Segment("tool_call", "", 0, "call_1", "get_time"), Segment("tool_call", "{}", 0)]


class BrokenCall:
    """A segmenter for the tests: a call starts, then turns out malformed (its text is content)."""

    def feed(self, text: str) -> Iterable[SegmentEvent]:
        return []

    def finish(self) -> Iterable[SegmentEvent]:
        return [Segment("tool_call", "", 0, "call_1", "f"), Segment("failed_call", "<call>f{", 0)]


def single_loop(engine: Any, request: GenerationRequest) -> list[Chunk]:
    return list(engine.generate(request))


def batch_loop(engine: Any, request: GenerationRequest) -> list[Chunk]:
    """The request in the batch loop: it starts alone, and a second one joins after a few steps."""
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    got: list[Chunk] = []
    other: list[Chunk] = []

    def sink(into: list[Chunk]) -> Any:
        return lambda item: into.append(item) if isinstance(item, Chunk) else pytest.fail(repr(item))

    runner.add(request, sink(got), threading.Event())
    steps = 0
    while not got or got[-1].finish_reason is None:
        if steps == 5:
            runner.add(
                GenerationRequest(messages=HELLO, max_tokens=80, sampling=GREEDY),
                sink(other),
                threading.Event(),
            )
        runner.step()
        steps += 1
    while other and other[-1].finish_reason is None:
        runner.step()
    return got


@pytest.fixture(params=[single_loop, batch_loop], ids=["single", "batch"])
def drive(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def segmented(engines: dict[str, Any]) -> Iterator[Any]:
    """The engines, with a segmenter factory the test sets; plain text again afterwards."""
    from mlxk.generation.engine import plain_text

    yield engines
    for engine in engines.values():
        engine.segmenter_for = plain_text


def test_a_segmenter_splits_the_answer_into_channels(segmented: dict[str, Any], drive: Any) -> None:
    engine = segmented["chat"]
    request = GenerationRequest(messages=HELLO, max_tokens=40, sampling=GREEDY)
    plain = "".join(c.content for c in drive(engine, request))
    engine.segmenter_for = lambda request, prompt: ThinkFirst(10)
    chunks = drive(engine, request)
    answer = merge(chunks)
    assert (answer.reasoning, answer.content) == (plain[:10], plain[10:])
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert all(not c.reasoning for c in chunks[first_content + 1 :])  # reasoning, then the answer
    assert answer.finish_reason == "length" and answer.usage is not None


def test_stop_strings_apply_to_the_content_only(segmented: dict[str, Any], drive: Any) -> None:
    from mlxk.generation.stops import StopMatcher

    engine = segmented["chat"]
    request = GenerationRequest(messages=HELLO, max_tokens=40, sampling=GREEDY)
    plain = "".join(c.content for c in drive(engine, request))
    stops = (plain[2:4], plain[25:27])  # the first one is in the reasoning part
    engine.segmenter_for = lambda request, prompt: ThinkFirst(10)
    answer = merge(
        drive(engine, GenerationRequest(messages=HELLO, max_tokens=40, sampling=GREEDY, stops=stops))
    )
    assert answer.reasoning == plain[:10]  # not cut by the stop string in it
    assert answer.content == StopMatcher(stops).feed(plain[10:]) and answer.finish_reason == "stop"


def test_a_turn_that_ends_with_tool_calls_finishes_with_tool_calls(
    segmented: dict[str, Any], drive: Any
) -> None:
    engine = segmented["stop"]  # ends its turn at once
    engine.segmenter_for = lambda request, prompt: ThinkFirst(0, call=True)
    answer = merge(drive(engine, GenerationRequest(messages=HELLO, max_tokens=10, sampling=GREEDY)))
    assert answer.finish_reason == "tool_calls"
    assert answer.tool_calls == (ToolCallDelta(0, "call_1", "get_time", "{}"),)


def test_a_failed_call_is_content_and_no_tool_calls_finish(segmented: dict[str, Any], drive: Any) -> None:
    engine = segmented["stop"]
    engine.segmenter_for = lambda request, prompt: BrokenCall()
    answer = merge(drive(engine, GenerationRequest(messages=HELLO, max_tokens=10, sampling=GREEDY)))
    assert (answer.content, answer.finish_reason) == ("<call>f{", "stop")
    assert answer.tool_calls == (ToolCallDelta(0, failed=True),)


def test_the_plain_text_segmenter_equals_no_segmenter(segmented: dict[str, Any], drive: Any) -> None:
    engine = segmented["chat"]
    request = GenerationRequest(messages=HELLO, max_tokens=30, sampling=GREEDY, stops=("zz",))
    plain = merge(drive(engine, request))
    engine.segmenter_for = lambda request, prompt: PlainText()
    through = merge(drive(engine, request))
    assert (through.content, through.reasoning, through.finish_reason) == (
        plain.content,
        "",
        plain.finish_reason,
    )


def test_the_segmenter_is_told_the_prompt_tail(segmented: dict[str, Any]) -> None:
    engine = segmented["tools"]
    seen: list[str] = []

    def factory(request: GenerationRequest, prompt: Any) -> None:
        seen.append(prompt.tail)

    engine.segmenter_for = factory
    list(engine.generate(GenerationRequest(messages=HELLO, max_tokens=2, sampling=GREEDY, thinking=True)))
    assert seen and seen[0].endswith("<think>\n")
