"""Anthropic Messages on ``mlxk serve``: the official ``anthropic`` client over real HTTP against a
real server process on a tiny real model (our tools template: tools, tool results and the thinking
switch reach the prompt). Text, streams that equal the whole answer, stop sequences, thinking,
tools and tool results, count_tokens against the tokenizer, the API key as ``x-api-key`` or a
bearer token, model aliases, and bad requests answered with Anthropic's error objects."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxk.generation.request import FunctionTool, GenerationRequest, Message, ToolCall
from tests.modelfix import install
from tests.servefix import ServerProcess, serve_env, start_server
from tests.toolfix import TOOLS_TEMPLATE, WEATHER, with_template

MODEL = "test/Tiny-Tools"
KEY = "anthropic-key-51c2"
HELLO = [{"role": "user", "content": "Hello"}]
GREEDY = {"temperature": 0}  # the Messages API takes it; the SDK no longer has a parameter for it
TOOL = {
    "name": "get_weather",
    "description": WEATHER["function"]["description"],
    "input_schema": WEATHER["function"]["parameters"],
}
# a finished tool call and its result, in Messages' blocks and in the pipeline's values
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}],
    },
]
SAME_ROUND_TRIP = (
    Message("user", "Weather in Paris?"),
    Message(
        "assistant", "Let me look.", tool_calls=(ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),)
    ),
    Message("tool", "Sunny, 21 C", tool_call_id="toolu_1"),
)


@pytest.fixture(scope="module")
def files(tiny_models: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return with_template(tiny_models["chat"], TOOLS_TEMPLATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Iterator[ServerProcess]:
    hub = tmp_path_factory.mktemp("anthropic") / "hub"
    install(hub, MODEL, files)
    started = start_server(
        hub,
        "--model",
        MODEL,
        "--api-key",
        KEY,
        "--model-alias",
        "claude-*=" + MODEL,
        log=hub.parent / "serve.log",
    )
    yield started
    assert started.stop() == 0


@pytest.fixture(scope="module")
def engine(files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlxk.generation.engine import load_engine

    repo = install(tmp_path_factory.mktemp("anthropic-engine"), MODEL, files)
    return load_engine(str(repo.snapshot))


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> Iterator[Any]:
    with client(server) as opened:
        yield opened


def client(server: ServerProcess, **options: Any) -> Any:
    import anthropic

    return anthropic.Anthropic(
        base_url=server.url, api_key=options.pop("api_key", KEY), max_retries=0, **options
    )


def blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content blocks as plain values (the stream helper's blocks have one more field)."""
    return [block.model_dump(exclude={"parsed_output"}) for block in message.content]


def prompt_size(engine: Any, *messages: Message, **options: Any) -> int:
    return len(engine.prompt(GenerationRequest(messages=messages, **options)).tokens)


def test_a_text_answer_with_usage_from_the_tokenizer(server: ServerProcess, claude: Any, engine: Any) -> None:
    answer = claude.messages.create(model=MODEL, max_tokens=8, extra_body=GREEDY, messages=HELLO)
    assert answer.type == "message" and answer.role == "assistant" and answer.model == MODEL
    assert [block.type for block in answer.content] == ["text"] and answer.content[0].text
    assert (answer.stop_reason, answer.stop_sequence) == ("max_tokens", None)
    usage = answer.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == prompt_size(
        engine, Message("user", "Hello"), thinking=False
    )
    assert usage.output_tokens == 8


def test_the_stream_put_together_is_the_whole_answer(server: ServerProcess, claude: Any) -> None:
    whole = claude.messages.create(model=MODEL, max_tokens=12, extra_body=GREEDY, messages=HELLO)
    with claude.messages.stream(model=MODEL, max_tokens=12, extra_body=GREEDY, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        streamed = stream.get_final_message()
    assert len(pieces) >= 1 and "".join(pieces) == whole.content[0].text
    assert blocks(streamed) == blocks(whole)
    assert (streamed.stop_reason, streamed.usage.output_tokens) == (
        whole.stop_reason,
        whole.usage.output_tokens,
    )
    total = streamed.usage.input_tokens + (streamed.usage.cache_read_input_tokens or 0)
    assert total == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)


def test_the_events_come_in_anthropic_s_order(server: ServerProcess) -> None:
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0, "messages": HELLO, "stream": True}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, headers={"x-api-key": KEY}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        names = [line[len("event: ") :] for line in response.iter_lines() if line.startswith("event: ")]
    deltas = names[3:-3]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert deltas and set(deltas) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_stop_sequence_ends_the_answer_and_is_named(server: ServerProcess, claude: Any) -> None:
    free = (
        claude.messages.create(model=MODEL, max_tokens=16, extra_body=GREEDY, messages=HELLO).content[0].text
    )
    stop = free[5:7]
    cut = free[: free.index(stop)]
    answer = claude.messages.create(
        model=MODEL, max_tokens=16, extra_body=GREEDY, messages=HELLO, stop_sequences=["never-said", stop]
    )
    assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", stop)
    assert "".join(block.text for block in answer.content) == cut
    with claude.messages.stream(
        model=MODEL, max_tokens=16, extra_body=GREEDY, messages=HELLO, stop_sequences=[stop]
    ) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", stop)
    assert "".join(block.text for block in streamed.content) == cut


def test_thinking_comes_as_thinking_blocks(server: ServerProcess, claude: Any, engine: Any) -> None:
    """Thinking enabled turns the template's switch on: the prompt ends inside a think block, so
    the answer (cut by max_tokens) is all thinking, streamed as thinking deltas."""
    options: dict[str, Any] = dict(model=MODEL, max_tokens=10, extra_body=GREEDY, messages=HELLO)
    thinking = {"type": "enabled", "budget_tokens": 5}
    answer = claude.messages.create(**options, thinking=thinking)
    assert [block.type for block in answer.content] == ["thinking"] and answer.content[0].thinking
    usage = answer.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == prompt_size(
        engine, Message("user", "Hello"), thinking=True
    )
    with claude.messages.stream(**options, thinking=thinking) as stream:
        kinds = {event.delta.type for event in stream if event.type == "content_block_delta"}
        streamed = stream.get_final_message()
    assert kinds == {"thinking_delta"} and blocks(streamed) == blocks(answer)
    plain = claude.messages.create(**options, thinking={"type": "disabled"})
    assert [block.type for block in plain.content] == ["text"]


def test_tools_and_tool_results_reach_the_template(server: ServerProcess, claude: Any, engine: Any) -> None:
    """count_tokens and the answer's usage count exactly the prompt the pipeline renders for the
    same conversation with the same tool (more than without it: the model was shown the tool)."""
    tool = FunctionTool("get_weather", TOOL["description"], TOOL["input_schema"])
    expected = prompt_size(engine, *SAME_ROUND_TRIP, tools=(tool,), thinking=False)
    bare = prompt_size(engine, *SAME_ROUND_TRIP, thinking=False)
    counted = claude.messages.count_tokens(model=MODEL, messages=ROUND_TRIP, tools=[TOOL])
    assert counted.input_tokens == expected > bare
    answer = claude.messages.create(
        model=MODEL, max_tokens=4, extra_body=GREEDY, messages=ROUND_TRIP, tools=[TOOL]
    )
    assert answer.usage.input_tokens + answer.usage.cache_read_input_tokens == expected
    none = claude.messages.count_tokens(
        model=MODEL, messages=ROUND_TRIP, tools=[TOOL], tool_choice={"type": "none"}
    )
    assert none.input_tokens == bare


def test_a_system_prompt_as_text_or_text_blocks_reaches_the_template(claude: Any, engine: Any) -> None:
    """``system`` is the conversation's system message, whether a string or text blocks (joined
    by a line, as their texts were written)."""
    as_text = prompt_size(engine, Message("system", "Be brief."), Message("user", "Hello"), thinking=False)
    as_blocks = prompt_size(engine, Message("system", "Be\nbrief."), Message("user", "Hello"), thinking=False)
    assert as_text > prompt_size(engine, Message("user", "Hello"), thinking=False)
    counted = claude.messages.count_tokens(model=MODEL, system="Be brief.", messages=HELLO)
    assert counted.input_tokens == as_text
    blocks = [
        {"type": "text", "text": "Be", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "brief."},
    ]
    assert claude.messages.count_tokens(model=MODEL, system=blocks, messages=HELLO).input_tokens == as_blocks
    answer = claude.messages.create(model=MODEL, max_tokens=3, system=blocks, messages=HELLO)
    assert answer.usage.input_tokens + answer.usage.cache_read_input_tokens == as_blocks


def test_a_failed_tool_result_reaches_the_template_as_an_error(claude: Any, engine: Any) -> None:
    """A tool_result with is_error (its content as text blocks) is the tool message "Error: ..."."""
    failed = [
        *ROUND_TRIP[:2],
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
                {"type": "text", "text": "Try again."},
            ],
        },
    ]  # fmt: skip
    expected = prompt_size(
        engine,
        *SAME_ROUND_TRIP[:2],
        Message("tool", "Error: no such city", tool_call_id="toolu_1"),
        Message("user", "Try again."),
        thinking=False,
    )
    assert claude.messages.count_tokens(model=MODEL, messages=failed).input_tokens == expected


def test_earlier_thinking_blocks_are_accepted_and_left_out_of_the_prompt(claude: Any) -> None:
    """A client sends an answer back as it came, thinking blocks included: accepted, and the prompt
    is the one without them (their signatures mean nothing here)."""
    plain = [*HELLO, {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]}, *HELLO]
    with_thinking = [
        *HELLO,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "A greeting.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
                {"type": "text", "text": "Hi."},
            ],
        },
        *HELLO,
    ]
    counted = claude.messages.count_tokens(model=MODEL, messages=with_thinking).input_tokens
    assert counted == claude.messages.count_tokens(model=MODEL, messages=plain).input_tokens


def test_adaptive_thinking_sets_no_switch_and_enabled_turns_it_on(claude: Any, engine: Any) -> None:
    """adaptive leaves the switch to the model's default, as a chat request that names none does
    (mlx-lm's: on when the vocabulary has thinking tokens, which this tiny one has not)."""
    hello = Message("user", "Hello")
    unset, on = (prompt_size(engine, hello, thinking=t) for t in (None, True))
    assert unset != on
    counted = claude.messages.count_tokens(model=MODEL, messages=HELLO, thinking={"type": "adaptive"})
    assert counted.input_tokens == unset
    budget = {"type": "enabled", "budget_tokens": 1024}
    assert claude.messages.count_tokens(model=MODEL, messages=HELLO, thinking=budget).input_tokens == on


def test_output_config_format_constrains_the_answer_as_chat_s_response_format(server: ServerProcess) -> None:
    """The same greedy answer as chat with the same schema (and the thinking switch off, Messages'
    default): JSON of the schema's shape, cut or whole."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    headers = {"x-api-key": KEY}
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 30, "temperature": 0,
              "chat_template_kwargs": {"enable_thinking": False},
              "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}},
        headers=headers,
    )  # fmt: skip
    messages = httpx.post(
        server.url + "/v1/messages",
        json=body(
            max_tokens=30, temperature=0, output_config={"format": {"type": "json_schema", "schema": schema}}
        ),
        headers=headers,
    )
    assert chat.status_code == messages.status_code == 200, messages.text
    choice = chat.json()["choices"][0]
    answer = messages.json()
    assert answer["content"][0]["text"] == choice["message"]["content"]
    if choice["finish_reason"] == "stop":  # a random tiny model may write a string to the budget's end
        assert answer["stop_reason"] == "end_turn"
        assert isinstance(json.loads(answer["content"][0]["text"])["city"], str)
    else:
        assert answer["stop_reason"] == "max_tokens"
        assert answer["content"][0]["text"].startswith('{"city": "')
    unconstrained = httpx.post(
        server.url + "/v1/messages", json=body(temperature=0, output_config={}), headers=headers
    )
    free = httpx.post(server.url + "/v1/messages", json=body(temperature=0), headers=headers)
    assert unconstrained.json()["content"] == free.json()["content"]


def test_the_key_as_x_api_key_or_bearer_and_refusals_as_anthropic_errors(server: ServerProcess) -> None:
    import anthropic

    with client(server, api_key=None, auth_token=KEY) as bearer:
        assert bearer.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    with client(server, api_key="wrong") as wrong, pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.messages.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert refused.value.response.json()["type"] == "error"


def test_aliases_map_client_names_and_unknown_names_are_not_found(server: ServerProcess, claude: Any) -> None:
    import anthropic

    answer = claude.messages.create(model="claude-sonnet-4-5", max_tokens=3, messages=HELLO)
    assert answer.model == MODEL
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="gpt-4o", max_tokens=3, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    openai_shaped = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"x-api-key": KEY},
    )
    assert openai_shaped.status_code == 404 and openai_shaped.json()["error"]["code"] == "model_not_found"
    aliased = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "claude-haiku", "messages": HELLO, "max_tokens": 2},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert aliased.status_code == 200 and aliased.json()["model"] == MODEL


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 4, "messages": HELLO, **extra}


BAD: list[tuple[str, Any, int, str]] = [
    ("/v1/messages", {"model": MODEL, "messages": HELLO}, 400, "max_tokens"),
    ("/v1/messages", body(max_tokens="10"), 400, "max_tokens"),
    ("/v1/messages", body(max_tokens=None), 400, "max_tokens"),
    (
        "/v1/messages",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}}
                    ],
                }
            ]
        ),
        400,
        "image",
    ),
    ("/v1/messages", body(max_tokens=0), 400, "max_tokens"),
    ("/v1/messages", body(temperature=1.5), 400, "temperature"),
    ("/v1/messages", body(temperature=True), 400, "temperature"),
    ("/v1/messages", body(messages=[]), 400, "messages"),
    ("/v1/messages", body(messages=[{"role": "system", "content": "x"}]), 400, "messages[0].role"),
    (
        "/v1/messages",
        body(messages=[{"role": "user", "content": [{"type": "video"}]}]),
        400,
        "messages[0].content[0].type",
    ),
    (
        "/v1/messages",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        400,
        "messages[0].content[0].text",
    ),
    (
        "/v1/messages",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "colour": 1}]}]),
        400,
        "colour",
    ),
    (
        "/v1/messages",
        body(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]),
        400,
        "messages[0].content[0].type",
    ),
    (
        "/v1/messages",
        body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        400,
        "web_search_20250305",
    ),
    ("/v1/messages", body(tools=[{"name": "f"}]), 400, "tools[0].input_schema"),
    ("/v1/messages", body(tools=[{"name": "a b", "input_schema": {}}]), 400, "tools[0].name"),
    ("/v1/messages", body(tools=[TOOL], tool_choice={"type": "tool", "name": "nope"}), 400, "tool_choice"),
    ("/v1/messages", body(tool_choice={"type": "any"}), 400, "tool_choice"),
    ("/v1/messages", body(tool_choice={"type": "sometimes"}), 400, "tool_choice.type"),
    ("/v1/messages", body(thinking={"type": "enabled"}), 400, "thinking.budget_tokens"),
    ("/v1/messages", body(thinking={"type": "adaptive", "display": "omitted"}), 400, "thinking.display"),
    ("/v1/messages", body(output_config={"effort": "high"}), 400, "output_config.effort"),
    ("/v1/messages", body(thinking={"type": "enabled", "budget_tokens": 10}), 400, "thinking.budget_tokens"),
    ("/v1/messages", body(stop_sequences="END"), 400, "stop_sequences"),
    ("/v1/messages", body(stop_sequences=[""]), 400, "stop_sequences"),
    ("/v1/messages", body(frequency_penalty=1), 400, "frequency_penalty"),
    (
        "/v1/messages",
        body(messages=[*HELLO, {"role": "assistant", "content": "The answer is"}]),
        400,
        "prefill",
    ),
    ("/v1/messages", body(messages=[{"role": "user", "content": "x" * 2000}]), 400, "prompt"),
    ("/v1/messages", body(model=["x"]), 400, "model"),
    ("/v1/messages", "[1, 2]", 400, "JSON object"),
    ("/v1/messages", "{not json", 400, "JSON"),
    ("/v1/messages", "[" * 100_000, 400, "JSON"),  # nesting deeper than any parser follows
    ("/v1/messages", body(system=[{"type": "image"}]), 400, "'system[0]' must be a text block"),
    (
        "/v1/messages",
        body(system=[{"type": "text", "text": "x", "citations": [{"type": "char_location"}]}]),
        400,
        "citations",
    ),
    (
        "/v1/messages",
        body(
            messages=[
                {"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}
            ]
        ),
        400,
        "a user turn takes no tool_use blocks",
    ),
    (
        "/v1/messages",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                        }
                    ],
                }
            ]
        ),
        400,
        "image",
    ),
    (
        "/v1/messages",
        body(
            messages=[
                {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
            ]
        ),
        400,
        "an image source is base64 or url",
    ),
    (
        "/v1/messages",
        body(thinking={"type": "sometimes"}),
        400,
        "'thinking.type' must be enabled, adaptive or disabled",
    ),
    (
        "/v1/messages",
        body(output_config={"format": {"type": "json_object"}}),
        400,
        "'output_config.format.type' must be json_schema",
    ),
    (
        "/v1/messages",
        body(output_config={"format": {"type": "json_schema", "schema": {"type": "string", "not": {}}}}),
        400,
        "not",
    ),
    ("/v1/messages", body(top_p=1.5), 400, "top_p"),
    ("/v1/messages", body(top_k=-1), 400, "top_k"),
    ("/v1/messages/count_tokens", {"messages": HELLO}, 400, "'model' is required"),
    ("/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO, "max_tokens": 3}, 400, "max_tokens"),
    ("/v1/messages/count_tokens", {"model": MODEL}, 400, "messages"),
]


@pytest.mark.parametrize(("path", "request_body", "status", "named"), BAD)
def test_bad_requests_get_anthropic_error_objects(
    server: ServerProcess, path: str, request_body: Any, status: int, named: str
) -> None:
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    content = request_body if isinstance(request_body, str) else None
    sent = None if content is not None else request_body
    response = httpx.post(server.url + path, json=sent, content=content, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]


def test_routes_anthropic_has_and_this_server_not_are_anthropic_404s(server: ServerProcess) -> None:
    response = httpx.post(server.url + "/v1/messages/batches", json={}, headers={"x-api-key": KEY})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.get(server.url + "/v1/messages", headers={"x-api-key": KEY})
    assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "error"


def test_a_body_over_the_limit_is_request_too_large(server: ServerProcess) -> None:
    huge = (
        b'{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "'
        + b"x" * (17 * 2**20)
        + b'"}]}'
    )
    response = httpx.post(server.url + "/v1/messages", content=huge, headers={"x-api-key": KEY}, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_the_sdk_raises_its_own_errors(server: ServerProcess, claude: Any) -> None:
    import anthropic

    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model=MODEL, max_tokens=4, messages=HELLO, extra_body={"temperature": 3})
    assert refused.value.status_code == 400 and "temperature" in str(refused.value)


@pytest.mark.parametrize("alias", ["claude-*", "=model", "claude-*=../x", "claude-*=a/b/c"])
def test_model_alias_refuses_what_is_not_pattern_equals_model_name(tmp_path: Path, alias: str) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--model-alias", alias],
        capture_output=True,
        env=serve_env(hub),
        timeout=120,
    )
    envelope = json.loads(result.stdout)
    assert result.returncode == 1 and envelope["error"]["type"] == "validation_error"
    assert "--model-alias" in envelope["error"]["message"]
