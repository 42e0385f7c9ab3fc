"""The chat request's newer fields over HTTP (tools, tool results, tool_choice, the thinking
switch, content parts): what reaches the model's template, and the 400s naming the field. Also
the OpenAI shapes of chunks on the reasoning and tool-call channels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk.generation.chunks import Chunk, ToolCallDelta, Usage
from mlxk.generation.request import FunctionTool, GenerationRequest, Message, Sampling, ToolCall
from mlxk.server.app import ServerSettings
from mlxk.server.openai.replies import Reply
from tests.modelfix import install
from tests.servefix import Client, run_in_process
from tests.toolfix import TIME, TOOLS_TEMPLATE, WEATHER, with_template

TOOLS_MODEL = "test/Tiny-Tools"

CONVERSATION = [
    {"role": "developer", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
]
SAME_CONVERSATION = (
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", "Sunny, 21 C", tool_call_id="call_1"),
)


@pytest.fixture(scope="module")
def tools_files(tiny_models: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return with_template(tiny_models["chat"], TOOLS_TEMPLATE)


@pytest.fixture
def server(hub: Path, tools_files: dict[str, bytes]) -> Iterator[Any]:
    install(hub, TOOLS_MODEL, tools_files)
    settings = ServerSettings(hub_root=str(hub), model=TOOLS_MODEL)
    yield lambda scenario: run_in_process(settings, scenario)


@pytest.fixture(scope="module")
def engine(tools_files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlxk.generation.engine import load_engine

    repo = install(tmp_path_factory.mktemp("tools-engine"), TOOLS_MODEL, tools_files)
    return load_engine(str(repo.snapshot))


def body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0, **extra}


def test_tools_and_tool_results_reach_the_template(server: Any, engine: Any) -> None:
    """The prompt the server built holds exactly the tokens of the same request rendered by the
    pipeline (and more than without tools: they were shown to the model)."""
    tools = (
        FunctionTool("get_weather", WEATHER["function"]["description"], WEATHER["function"]["parameters"]),
        FunctionTool("get_time", None, TIME["function"]["parameters"]),
    )
    same = GenerationRequest(messages=SAME_CONVERSATION, tools=tools, thinking=False)
    expected = len(engine.prompt(same).tokens)
    bare = len(engine.prompt(GenerationRequest(messages=SAME_CONVERSATION, thinking=False)).tokens)

    async def scenario(call: Client) -> None:
        request = body(
            messages=CONVERSATION, tools=[WEATHER, TIME], chat_template_kwargs={"enable_thinking": False}
        )
        r = await call("POST", "/v1/chat/completions", json=request)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == expected > bare
        r = await call("POST", "/v1/chat/completions", json={**request, "tool_choice": "none"})
        assert r.json()["usage"]["prompt_tokens"] == bare

    server(scenario)


def test_the_thinking_switch_reaches_the_template(server: Any, engine: Any) -> None:
    on = len(engine.prompt(GenerationRequest(messages=(Message("user", "Hello"),), thinking=True)).tokens)
    off = len(engine.prompt(GenerationRequest(messages=(Message("user", "Hello"),), thinking=False)).tokens)
    assert on != off

    async def scenario(call: Client) -> None:
        for switch, tokens in ((True, on), (False, off)):
            for extra in ({"enable_thinking": switch}, {"chat_template_kwargs": {"enable_thinking": switch}}):
                r = await call("POST", "/v1/chat/completions", json=body(**extra))
                assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == tokens

    server(scenario)


BAD = [
    (body(top_p=-0.5), "top_p"),
    (body(repetition_penalty=20), "repetition_penalty"),
    (body(max_completion_tokens=0), "max_completion_tokens"),
    (body(max_tokens=5, max_completion_tokens=True), "max_completion_tokens"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": "x", "tool_call_id": 5}]), "messages[0].tool_call_id"),
    (body(messages=[{"role": "assistant", "tool_calls": [{"id": "c"}]}]), "messages[0].tool_calls[0]"),
    (body(messages=[{"role": "user", "content": "x", "tool_calls": []}, {"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}]), "messages[1].tool_calls"),
    (body(tools={"type": "function"}), "tools"),
    (body(tools=[{"type": "retrieval"}]), "tools[0]"),
    (body(tools=[{"type": "function", "function": {"name": "a b"}}]), "tools[0].function.name"),
    (body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (body(tool_choice="required"), "tool_choice"),
    (body(chat_template_kwargs={"tools": []}), "chat_template_kwargs"),
    (body(chat_template_kwargs=[1]), "chat_template_kwargs"),
    (body(enable_thinking="no"), "enable_thinking"),
    (body(enable_thinking=True, chat_template_kwargs={"enable_thinking": False}), "enable_thinking"),
    (body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": []}}), "response_format.json_schema.schema"),
    (body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}), "response_format"),
]  # fmt: skip


@pytest.mark.parametrize(("request_body", "param"), BAD)
def test_bad_fields_are_400s_naming_the_field(server: Any, request_body: dict[str, Any], param: str) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/chat/completions", json=request_body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param)

    server(scenario)


# wrong types, and what this server does not do, on either endpoint: (path, body, param, message)
WRONG_TYPES: list[tuple[str, dict[str, Any], str, str]] = [
    ("/v1/chat/completions", body(top_p="0.5"), "top_p", "'top_p' must be a number"),
    ("/v1/chat/completions", body(temperature=True), "temperature", "'temperature' must be a number"),
    ("/v1/chat/completions", body(seed=1.5), "seed", "'seed' must be an integer"),
    ("/v1/chat/completions", body(stop=5), "stop", "'stop' must be a string or a list of strings"),
    ("/v1/chat/completions", body(stop=["END", 1]), "stop", "'stop' must be a string or a list of strings"),
    ("/v1/chat/completions", body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "message content must be a string or a list of content parts"),
    ("/v1/chat/completions", body(messages=[{"content": "x"}]), "messages[0].role", "each message needs a role"),
    ("/v1/chat/completions", body(messages=[{"role": "assistant", "content": "", "tool_calls": {}}]), "messages[0].tool_calls", "'tool_calls' must be a list"),
    ("/v1/chat/completions", body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": "a", "reasoning": "b"}, {"role": "user", "content": "z"}]), "messages[1].reasoning", "reasoning_content and reasoning differ"),
    ("/v1/chat/completions", body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools[0].function.parameters", "a function's parameters are a JSON Schema object"),
    ("/v1/chat/completions", body(tools=[WEATHER], tool_choice={"type": "function"}), "tool_choice", "'tool_choice' must be auto, none, required or a function"),
    ("/v1/chat/completions", body(tools=[WEATHER], parallel_tool_calls="no"), "parallel_tool_calls", "'parallel_tool_calls' must be true or false"),
    ("/v1/chat/completions", body(response_format="json"), "response_format", "'response_format' must be an object with a type"),
    ("/v1/chat/completions", body(response_format={"type": "json_schema", "json_schema": {"name": 5, "schema": {}}}), "response_format.json_schema.name", "json_schema.name must be a string"),
    ("/v1/chat/completions", body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": "yes"}}), "response_format.json_schema.strict", "json_schema.strict must be true or false"),
    ("/v1/chat/completions", body(logprobs="yes"), "logprobs", "'logprobs' must be true or false"),
    ("/v1/chat/completions", body(model=5), "model", "'model' must be a string"),
    ("/v1/chat/completions", body(stream="yes"), "stream", "'stream' must be true or false"),
    ("/v1/chat/completions", body(stream=True, stream_options={"include_usage": "yes"}), "stream_options", "'stream_options' takes booleans"),
    ("/v1/chat/completions", body(stream=True, stream_options={"colour": True}), "stream_options", "'stream_options' takes booleans"),
    ("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 2}, "prompt", "not token ids"),
    ("/v1/completions", {"prompt": [], "max_tokens": 2}, "prompt", "a non-empty list of strings"),
    ("/v1/completions", {"prompt": ["x"] * 65, "max_tokens": 2}, "prompt", "at most 64 prompts per request"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "best_of": 2}, "best_of", "best_of must equal n"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "echo": True}, "echo", "echo and suffix are not supported"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "suffix": "!"}, "suffix", "echo and suffix are not supported"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "request_body", "param", "message"), WRONG_TYPES)
def test_wrong_types_are_400s_naming_the_field_and_why(
    server: Any, path: str, request_body: dict[str, Any], param: str, message: str
) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", path, json=request_body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param)
        assert message in error["message"]

    server(scenario)


def test_tool_call_arguments_sent_as_an_object_are_the_same_as_json_text(server: Any, engine: Any) -> None:
    """Some clients send an earlier call's arguments as the object itself: the prompt is the one
    of the same call sent as JSON text."""
    as_object = json.loads(json.dumps(CONVERSATION))
    as_object[2]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}
    expected = len(engine.prompt(GenerationRequest(messages=SAME_CONVERSATION, thinking=False)).tokens)

    async def scenario(call: Client) -> None:
        for messages in (CONVERSATION, as_object):
            r = await call(
                "POST", "/v1/chat/completions", json=body(messages=messages, enable_thinking=False)
            )
            assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == expected

    server(scenario)


def test_best_of_equal_to_n_is_accepted(server: Any) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 2, "n": 2, "best_of": 2})
        assert r.status_code == 200, r.text
        assert [choice["index"] for choice in r.json()["choices"]] == [0, 1]

    server(scenario)


def test_a_conversation_the_template_refuses_is_a_400(server: Any) -> None:
    async def scenario(call: Client) -> None:
        messages = [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]
        r = await call("POST", "/v1/chat/completions", json=body(messages=messages))
        assert r.status_code == 400 and "system message comes first" in r.json()["error"]["message"]

    server(scenario)


def test_completions_take_no_chat_fields(server: Any) -> None:
    """tools on /v1/completions are no field of that endpoint: refused by name, not ignored."""

    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "tools": [WEATHER]})
        assert r.status_code == 400
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("tools", "unsupported_field")

    server(scenario)


USAGE = Usage(3, 2, 0.1, 0.1, 0)


def test_streamed_deltas_carry_reasoning_and_tool_calls_in_openai_shapes() -> None:
    reply = Reply("m", chat=True)
    delta = reply.delta(Chunk("", "hmm", (ToolCallDelta(0, "call_1", "get_time", '{"tz"'),)))["choices"][0][
        "delta"
    ]
    assert delta == {
        "reasoning_content": "hmm",
        "reasoning": "hmm",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz"'},
            }
        ],
    }
    more = reply.delta(Chunk(tool_calls=(ToolCallDelta(0, arguments=': "UTC"}'),)))["choices"][0]["delta"]
    assert more == {"tool_calls": [{"index": 0, "function": {"arguments": ': "UTC"}'}}]}
    assert reply.delta(Chunk("Hi"))["choices"][0]["delta"] == {"content": "Hi"}


def test_a_whole_answer_with_tool_calls_in_openai_shape() -> None:
    answer = Chunk(
        "",
        "thinking",
        (
            ToolCallDelta(0, "call_1", "get_time", '{"tz": '),
            ToolCallDelta(1, "call_2", "get_weather", '{"city": "Paris"}'),
            ToolCallDelta(0, arguments='"UTC"}'),
            ToolCallDelta(2, "call_3", "f", "{"),
            ToolCallDelta(2, failed=True),  # malformed: its text is content, the call is gone
        ),
    )
    choice = Reply("m", chat=True).complete([(answer, "tool_calls")], USAGE)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["reasoning_content"] == "thinking"
    calls = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message["tool_calls"]
    ]
    assert calls == [("call_1", "get_time", {"tz": "UTC"}), ("call_2", "get_weather", {"city": "Paris"})]
    plain = Reply("m", chat=True).complete([(Chunk("Hi"), "stop")], USAGE)["choices"][0]["message"]
    assert plain == {"role": "assistant", "content": "Hi"}


def test_requests_the_server_builds_are_the_pipeline_values() -> None:
    from mlxk.server.openai.requests import parse

    parsed = parse(
        body(messages=CONVERSATION, tools=[WEATHER], tool_choice="auto", seed=3, stop="END"),
        chat=True,
        default_max_tokens=100,
    )
    (request,) = parsed.requests
    assert request.messages[0].role == "system" and request.messages[1].text == "Weather in Paris?"
    assert request.messages[2].tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert request.tools[0].as_openai() == WEATHER
    assert (request.sampling, request.stops, request.max_tokens) == (
        Sampling(temperature=0.0, seed=3),
        ("END",),
        4,
    )
