"""Tool calls through the agent APIs, end to end: Anthropic Messages and OpenAI Responses, with
their official clients (``anthropic``, ``openai``, and an ``openai-agents`` agent on its default
Responses model) over real HTTP against a real ``mlxk serve``.

A random-weight model does not decide to call a tool, so the served model writes scripted answers
(``tests.scripted``: a logits processor leaves one token possible per step; template, model,
sampler, detokenizer, output parser and server run as for any model). The tiny model has our tools
template, whose calls are in the hermes format: a question about Paris's weather gets a call of
``get_weather``, the tool's result gets the answer that uses it.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import ServerProcess, metric, serve_env, start_server
from tests.toolfix import TOOLS_TEMPLATE, WEATHER, with_template

MODEL = "test/Tiny-Tools"
END = "<|im_end|>"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = CALL + '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
ANSWER = "It is sunny in Paris, 21 C."
HELLO = "Hello from the tiny model."
SCRIPTS = {
    # the last message of a request holds the key: its answer follows the script
    "weather in Paris": "Paris? I will look it up.</think>\n\n" + CALL + END,  # thinking on or off alike
    "Paris and Rome": "</think>\n\n" + TWO_CALLS + END,
    "Sunny, 21 C": ANSWER + END,
    # the README's examples ask this: sampled freely, a random model may end at once
    "Say hello.": HELLO + END,
}
QUESTION = "What is the weather in Paris?"
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": WEATHER["function"]["description"],
    "input_schema": WEATHER["function"]["parameters"],
}
RESPONSES_TOOL = {"type": "function", **WEATHER["function"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("agent-apis")
    hub = root / "hub"
    # an agent's prompt (its instructions, the tool's schema, the history) needs more context
    install(hub, MODEL, with_template(build_tiny_chat_model(max_position_embeddings=8192), TOOLS_TEMPLATE))
    scripts = root / "scripts.json"
    scripts.write_text(json.dumps(SCRIPTS))
    started = start_server(
        hub,
        "--model",
        MODEL,
        "--model-alias",
        "claude-*=" + MODEL,
        log=root / "serve.log",
        env=serve_env(hub),
        program=("-m", "tests.scripted", str(scripts)),
    )
    yield started
    assert started.stop() == 0


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> Iterator[Any]:
    import anthropic

    with anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def openai_client(server: ServerProcess) -> Iterator[Any]:
    import openai

    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as client:
        yield client


def blocks(message: Any) -> list[dict[str, Any]]:
    return [block.model_dump(exclude={"parsed_output"}) for block in message.content]


# --- Anthropic Messages ---------------------------------------------------------------------


def test_messages_a_tool_use_and_its_result(claude: Any) -> None:
    asked = [{"role": "user", "content": QUESTION}]
    called = claude.messages.create(model=MODEL, max_tokens=200, messages=asked, tools=[ANTHROPIC_TOOL])
    assert called.stop_reason == "tool_use"
    (use,) = [block for block in called.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"}) and use.id
    assert "<tool_call>" not in json.dumps(blocks(called))
    history = [
        *asked,
        {"role": "assistant", "content": blocks(called)},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}],
        },
    ]
    answered = claude.messages.create(model=MODEL, max_tokens=200, messages=history, tools=[ANTHROPIC_TOOL])
    assert (answered.stop_reason, blocks(answered)) == (
        "end_turn",
        [{"type": "text", "text": ANSWER, "citations": None}],
    )


def test_messages_stream_a_tool_use_as_json_deltas(claude: Any) -> None:
    options: dict[str, Any] = dict(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": QUESTION}], tools=[ANTHROPIC_TOOL]
    )
    whole = claude.messages.create(**options)
    with claude.messages.stream(**options) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == [block["type"] for block in blocks(whole)]
    strip = [{k: v for k, v in b.items() if k != "id"} for b in blocks(streamed)]
    assert strip == [{k: v for k, v in b.items() if k != "id"} for b in blocks(whole)]
    assert streamed.stop_reason == whole.stop_reason == "tool_use"


def test_messages_thinking_then_a_call(claude: Any) -> None:
    called = claude.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=[{"role": "user", "content": QUESTION}],
        tools=[ANTHROPIC_TOOL],
        thinking={"type": "enabled", "budget_tokens": 100},
    )
    assert [block.type for block in called.content] == ["thinking", "tool_use"]
    assert called.content[0].thinking == "Paris? I will look it up."


def test_messages_parallel_calls_and_disable_parallel_tool_use(claude: Any) -> None:
    asked = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    both = claude.messages.create(model=MODEL, max_tokens=200, messages=asked, tools=[ANTHROPIC_TOOL])
    assert [block.input["city"] for block in both.content if block.type == "tool_use"] == ["Paris", "Rome"]
    one = claude.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=asked,
        tools=[ANTHROPIC_TOOL],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert [block.input["city"] for block in one.content if block.type == "tool_use"] == ["Paris"]


# --- OpenAI Responses -----------------------------------------------------------------------


def test_responses_a_function_call_and_its_output(openai_client: Any) -> None:
    called = openai_client.responses.create(
        model=MODEL, input=QUESTION, tools=[RESPONSES_TOOL], reasoning={"effort": "none"}
    )
    assert called.status == "completed"
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"}) and call.call_id
    follow_up = [
        {"role": "user", "content": QUESTION},
        *[item.model_dump(exclude_none=True) for item in called.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ]
    answered = openai_client.responses.create(model=MODEL, input=follow_up, tools=[RESPONSES_TOOL])
    assert (answered.status, answered.output_text) == ("completed", ANSWER)


def test_responses_stream_a_call_with_reasoning(openai_client: Any) -> None:
    options: dict[str, Any] = dict(
        model=MODEL, input=QUESTION, tools=[RESPONSES_TOOL], reasoning={"effort": "high"}
    )
    whole = openai_client.responses.create(**options)
    assert [item.type for item in whole.output] == ["reasoning", "function_call"]
    with openai_client.responses.stream(**options) as stream:
        events = list(stream)
        final = stream.get_final_response()
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(arguments) == json.loads(done[0].arguments) == {"city": "Paris"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    strip = [
        {k: v for k, v in item.model_dump(exclude_none=True).items() if k not in ("id", "call_id")}
        for item in final.output
    ]
    assert strip == [
        {k: v for k, v in item.model_dump(exclude_none=True).items() if k not in ("id", "call_id")}
        for item in whole.output
    ]


def test_an_agent_calls_a_tool_and_answers_with_its_result(server: ServerProcess) -> None:
    """openai-agents with its default model class (Responses), set up as its documentation says for
    another provider: a client of our base URL, tracing off (it would upload to OpenAI). The model
    object is named: the SDK reads the ``org/`` of a model name given as a string as a provider."""
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "Sunny, 21 C"

    async def run() -> Any:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        try:
            model = OpenAIResponsesModel(model=MODEL, openai_client=client)
            agent = Agent(
                name="Weather", instructions="Answer with the tool's help.", tools=[get_weather], model=model
            )
            return await Runner.run(agent, QUESTION)
        finally:
            await client.close()

    served = responses_served(server)
    result = asyncio.run(run())
    assert calls == ["Paris"]
    assert result.final_output == ANSWER
    assert responses_served(server) == served + 2  # the call, then the answer: both on /v1/responses


def responses_served(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics").text
    return metric(text, 'mlxk_requests_total{route="/v1/responses",status="200"}') or 0.0


# --- the README's examples ------------------------------------------------------------------

README = Path(__file__).parent.parent / "README.md"
README_URL = "http://127.0.0.1:8000"
README_MODEL = "mlx-community/Qwen3-8B-4bit"


def readme_examples() -> list[str]:
    """The Python examples of the README's section on the agent APIs."""
    text = README.read_text()
    start = text.index("### Agent APIs")
    section = text[start : text.index("\n### ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_examples_run_against_the_server(server: ServerProcess) -> None:
    examples = readme_examples()
    markers = [
        "anthropic.Anthropic(",
        "client.responses.create(",
        "from agents import",
        "from langchain_openai import",
    ]
    assert len(examples) == len(markers) and all(m in code for m, code in zip(markers, examples, strict=True))
    outputs = []
    for code in examples:
        code = code.replace(README_URL, server.url).replace(README_MODEL, MODEL)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    assert outputs[0] == outputs[1] == HELLO  # the answer, through Messages and Responses
    assert outputs[2] == ANSWER  # the agent called the tool and answered with its result
    assert "'name': 'get_weather'" in outputs[3] and "'city': 'Paris'" in outputs[3]
