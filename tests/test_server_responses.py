"""OpenAI Responses on ``mlxk serve``: the official ``openai`` client's ``responses`` over real HTTP
against a real server process on a tiny real model (our tools template: tools, tool results and
the thinking switch reach the prompt). Plain and streamed answers (streams equal whole answers,
typed events in order with their sequence numbers), reasoning, function tools with a
function_call_output round trip, usage against the tokenizer, text.format where chat's
response_format goes, the store (previous_response_id, GET, DELETE), and bad requests answered with
OpenAI's error objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlxk.generation.request import FunctionTool, GenerationRequest, Message, ToolCall
from tests.modelfix import install
from tests.servefix import ServerProcess, start_server
from tests.toolfix import TOOLS_TEMPLATE, WEATHER, with_template

MODEL = "test/Tiny-Tools"
TOOL = {"type": "function", **WEATHER["function"]}
# a call and its output, as Responses items and as the pipeline's values
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C"},
]
SAME_ROUND_TRIP = (
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", "Sunny, 21 C", tool_call_id="call_1"),
)
OFF = {"effort": "none"}  # the template's thinking switch off: the answer is text


@pytest.fixture(scope="module")
def files(tiny_models: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return with_template(tiny_models["chat"], TOOLS_TEMPLATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Iterator[ServerProcess]:
    hub = tmp_path_factory.mktemp("responses") / "hub"
    install(hub, MODEL, files)
    started = start_server(hub, "--model", MODEL, log=hub.parent / "serve.log")
    yield started
    assert started.stop() == 0


@pytest.fixture(scope="module")
def engine(files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlxk.generation.engine import load_engine

    repo = install(tmp_path_factory.mktemp("responses-engine"), MODEL, files)
    return load_engine(str(repo.snapshot))


@pytest.fixture(scope="module")
def openai_client(server: ServerProcess) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as client:
        yield client


def prompt_size(engine: Any, *messages: Message, **options: Any) -> int:
    return len(engine.prompt(GenerationRequest(messages=messages, **options)).tokens)


def plain(item: Any) -> dict[str, Any]:
    return dict(item.model_dump(exclude_none=True))


def test_a_text_answer_with_usage_from_the_tokenizer(openai_client: Any, engine: Any) -> None:
    response = openai_client.responses.create(
        model=MODEL,
        input="Hello",
        max_output_tokens=8,
        temperature=0,
        reasoning=OFF,
        instructions="Be brief.",
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert (response.status, response.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert [item.type for item in response.output] == ["message"] and response.output_text
    usage = response.usage
    expected = prompt_size(engine, Message("system", "Be brief."), Message("user", "Hello"), thinking=False)
    assert (usage.input_tokens, usage.output_tokens) == (expected, 8)
    assert usage.total_tokens == expected + 8 and usage.output_tokens_details.reasoning_tokens == 0


def test_the_stream_put_together_is_the_whole_answer(openai_client: Any) -> None:
    options: dict[str, Any] = dict(
        model=MODEL, input="Hello", max_output_tokens=12, temperature=0, reasoning=OFF
    )
    whole = openai_client.responses.create(**options)
    events = list(openai_client.responses.create(**options, stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta",
    ]  # fmt: skip
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete",
    ]  # fmt: skip
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == whole.output_text == final.output_text
    strip = {"id"}
    assert [{k: v for k, v in plain(item).items() if k not in strip} for item in final.output] == [
        {k: v for k, v in plain(item).items() if k not in strip} for item in whole.output
    ]
    counts = ("input_tokens", "output_tokens", "total_tokens")
    assert [getattr(final.usage, c) for c in counts] == [getattr(whole.usage, c) for c in counts]
    with openai_client.responses.stream(**options) as stream:
        helper_text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    # (its get_final_response() takes only response.completed; a response cut by the budget ends
    # with response.incomplete, as OpenAI's do)
    assert helper_text == whole.output_text


def test_reasoning_is_a_reasoning_item_with_its_summary(openai_client: Any, engine: Any) -> None:
    """Effort on: the prompt ends inside a think block, so the answer (cut by the budget) is all
    reasoning: one reasoning item, its tokens counted as reasoning tokens."""
    options: dict[str, Any] = dict(model=MODEL, input="Hello", max_output_tokens=8, temperature=0)
    response = openai_client.responses.create(**options, reasoning={"effort": "high"})
    assert [item.type for item in response.output] == ["reasoning"]
    summary = response.output[0].summary[0].text
    assert summary and response.output_text == ""
    assert response.usage.input_tokens == prompt_size(engine, Message("user", "Hello"), thinking=True)
    assert response.usage.output_tokens_details.reasoning_tokens == 8
    events = list(openai_client.responses.create(**options, reasoning={"effort": "high"}, stream=True))
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert streamed == summary == events[-1].response.output[0].summary[0].text


def test_function_tools_and_a_function_call_output_reach_the_template(
    openai_client: Any, engine: Any
) -> None:
    """The call and its output go to the template as the assistant's call and the tool's result
    (the prompt is exactly the pipeline's for the same conversation and tool)."""
    tool = FunctionTool("get_weather", WEATHER["function"]["description"], WEATHER["function"]["parameters"])
    expected = prompt_size(engine, *SAME_ROUND_TRIP, tools=(tool,), thinking=False)
    bare = prompt_size(engine, *SAME_ROUND_TRIP, thinking=False)
    response = openai_client.responses.create(
        model=MODEL, input=ROUND_TRIP, tools=[TOOL], max_output_tokens=4, temperature=0, reasoning=OFF
    )
    assert response.usage.input_tokens == expected > bare
    assert response.tools[0].name == "get_weather" and response.tool_choice == "auto"
    none = openai_client.responses.create(
        model=MODEL, input=ROUND_TRIP, tools=[TOOL], tool_choice="none", max_output_tokens=4, reasoning=OFF
    )
    assert none.usage.input_tokens == bare


def test_text_format_goes_where_chat_s_response_format_goes(server: ServerProcess) -> None:
    """A JSON schema format is the pipeline's response_format: Responses answers it as chat does
    (both refuse it by name while the pipeline cannot constrain output, both follow it once it can)."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30, "temperature": 0,
              "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}},
    )  # fmt: skip
    response = httpx.post(
        server.url + "/v1/responses",
        json={"model": MODEL, "input": "Hi", "max_output_tokens": 30, "temperature": 0,
              "text": {"format": {"type": "json_schema", "name": "c", "schema": schema}}},
    )  # fmt: skip
    assert response.status_code == chat.status_code
    if chat.status_code == 400:
        assert chat.json()["error"]["param"] == "response_format"
        assert response.json()["error"]["param"] == "text.format"
        return
    choice = chat.json()["choices"][0]
    text = response.json()["output"][-1]["content"][0]["text"]
    assert text == choice["message"]["content"]  # the same constrained, greedy answer
    if choice["finish_reason"] == "stop":  # a random tiny model may write a string to the budget's end
        assert isinstance(json.loads(text)["city"], str)
    else:
        assert response.json()["status"] == "incomplete"
        assert text.startswith('{"city": "')


def test_arguments_sent_back_as_an_object_and_the_server_s_model_by_default(
    openai_client: Any, engine: Any
) -> None:
    """A function_call whose arguments are the object itself (as some clients send them back) is
    the same call as its JSON text; a request that names no model gets the one the server serves."""
    as_object = [ROUND_TRIP[0], {**ROUND_TRIP[1], "arguments": {"city": "Paris"}}, ROUND_TRIP[2]]
    expected = prompt_size(engine, *SAME_ROUND_TRIP, thinking=False)
    response = openai_client.responses.create(input=as_object, max_output_tokens=2, reasoning=OFF)
    assert response.model == MODEL and response.usage.input_tokens == expected


def test_an_assistant_s_text_and_its_calls_are_one_turn_and_outputs_may_be_text_parts(
    openai_client: Any, engine: Any
) -> None:
    said = [
        ROUND_TRIP[0],
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        ROUND_TRIP[1],
        {**ROUND_TRIP[2], "output": [{"type": "input_text", "text": "Sunny, "}, {"type": "input_text", "text": "21 C"}]},
    ]  # fmt: skip
    expected = prompt_size(
        engine,
        SAME_ROUND_TRIP[0],
        Message("assistant", "Let me look.", tool_calls=SAME_ROUND_TRIP[1].tool_calls),
        SAME_ROUND_TRIP[2],
        thinking=False,
    )
    response = openai_client.responses.create(model=MODEL, input=said, max_output_tokens=2, reasoning=OFF)
    assert response.usage.input_tokens == expected


def test_text_and_json_object_formats(server: ServerProcess) -> None:
    """text without a format, or the text format, is a plain answer (echoed as the text format);
    json_object is chat's json_object: the same constrained answer."""
    plain_body = {"model": MODEL, "input": "Hi", "max_output_tokens": 6, "temperature": 0, "reasoning": OFF}
    free = httpx.post(server.url + "/v1/responses", json=plain_body).json()
    for text in ({}, {"format": {"type": "text"}}):
        answer = httpx.post(server.url + "/v1/responses", json={**plain_body, "text": text}).json()
        assert answer["text"]["format"] == {"type": "text"}
        assert answer["output"][-1]["content"][0]["text"] == free["output"][-1]["content"][0]["text"]
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40, "temperature": 0,
              "enable_thinking": False, "response_format": {"type": "json_object"}},
    ).json()  # fmt: skip
    response = httpx.post(
        server.url + "/v1/responses",
        json={**plain_body, "max_output_tokens": 40, "text": {"format": {"type": "json_object"}}},
    ).json()
    assert response["text"]["format"] == {"type": "json_object"}
    text = response["output"][-1]["content"][0]["text"]
    assert text == chat["choices"][0]["message"]["content"] and text.startswith("{")


def test_encrypted_reasoning_may_be_asked_for(openai_client: Any) -> None:
    """The only include this server takes: the reasoning is sent whole anyway."""
    response = openai_client.responses.create(
        model=MODEL, input="Hi", max_output_tokens=2, include=["reasoning.encrypted_content"], reasoning=OFF
    )
    assert response.status in ("completed", "incomplete")


def test_stored_responses_continue_and_can_be_read_and_deleted(openai_client: Any, engine: Any) -> None:
    import openai

    first = openai_client.responses.create(
        model=MODEL, input="Hello", max_output_tokens=5, temperature=0, reasoning=OFF, store=True
    )
    assert openai_client.responses.retrieve(first.id).output_text == first.output_text
    second = openai_client.responses.create(
        model=MODEL, input="And then?", previous_response_id=first.id, max_output_tokens=3, reasoning=OFF
    )
    history = (
        Message("user", "Hello"),
        Message("assistant", first.output_text),
        Message("user", "And then?"),
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens == prompt_size(engine, *history, thinking=False)
    openai_client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as unknown:
        openai_client.responses.create(
            model=MODEL, input="x", previous_response_id=first.id, max_output_tokens=2
        )
    assert unknown.value.body["param"] == "previous_response_id"  # type: ignore[index]
    not_kept = openai_client.responses.create(model=MODEL, input="Hello", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(not_kept.id)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Hello", "max_output_tokens": 4, **extra}


BAD: list[tuple[dict[str, Any] | str, int, str]] = [
    (body(input=5), 400, "input"),
    (body(input=[]), 400, "input"),
    (body(input=[{"type": "web_search_call", "id": "x"}]), 400, "input[0].type"),
    (body(input=[{"role": "tool", "content": "x"}]), 400, "input[0].role"),
    (
        body(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
        400,
        "input[0].content[0].type",
    ),
    (
        body(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]),
        400,
        "input",
    ),
    (body(input=[{"type": "function_call_output", "output": "x"}]), 400, "input[0].call_id"),
    (body(input=[{"role": "user", "content": "x", "colour": 1}]), 400, "input[0].colour"),
    (body(tools=[{"type": "web_search"}]), 400, "tools[0]"),
    (body(tools=[{"type": "function"}]), 400, "tools[0].name"),
    (body(tools=[{"type": "function", "name": "a b"}]), 400, "tools[0].name"),
    (body(tools=[TOOL], tool_choice={"type": "function", "name": "nope"}), 400, "tool_choice"),
    (body(tool_choice="sometimes"), 400, "tool_choice"),
    (body(max_output_tokens=0), 400, "max_output_tokens"),
    (body(max_output_tokens="4"), 400, "max_output_tokens"),
    (body(temperature=3), 400, "temperature"),
    (body(top_p=True), 400, "top_p"),
    (body(reasoning={"effort": "huge"}), 400, "reasoning.effort"),
    (body(text={"format": {"type": "xml"}}), 400, "text.format.type"),
    (body(include=["message.output_text.logprobs"]), 400, "include[0]"),
    (body(store="yes"), 400, "store"),
    (body(previous_response_id="resp_missing"), 400, "previous_response_id"),
    (body(truncation="auto"), 400, "truncation"),
    (body(background=True), 400, "background"),
    (body(conversation="conv_1"), 400, "conversation"),
    (body(input="x" * 2000), 400, "input"),
    (body(model=5), 400, "model"),
    (body(reasoning={"summary": "long"}), 400, "reasoning.summary"),
    (body(tool_choice={"type": "allowed_tools", "tools": []}), 400, "tool_choice"),
    (body(text={"format": {"type": "json_object", "name": "x"}}), 400, "text.format.name"),
    (
        body(
            input=[
                *ROUND_TRIP[:2],
                {**ROUND_TRIP[2], "output": [{"type": "input_image", "image_url": "data:,"}]},
            ]
        ),
        400,
        "input[2].output",
    ),
    ("[1]", 400, ""),
    ("[" * 100_000, 400, ""),
]


@pytest.mark.parametrize(("request_body", "status", "param"), BAD)
def test_bad_requests_get_openai_error_objects(
    server: ServerProcess, request_body: dict[str, Any] | str, status: int, param: str
) -> None:
    if isinstance(request_body, str):
        response = httpx.post(server.url + "/v1/responses", content=request_body, timeout=30)
    else:
        response = httpx.post(server.url + "/v1/responses", json=request_body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and (error["param"] or "") == param, error
