"""Tool calls with the clients people use, over real HTTP to a real ``mlxk serve``: the ``openai`` SDK
(tools, streamed tools, reasoning), ``langchain-openai``'s ``bind_tools`` (whole and streamed), and
an ``openai-agents`` agent on its chat-completions model that calls a tool and answers with its
result. The model is a tiny real one with Qwen3's official template (tests.familyfix) writing
scripted answers (tests.scripted) in the form that template renders.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests import test_generation_parsers as parsers
from tests.familyfix import build_family_model
from tests.modelfix import install
from tests.servefix import ServerProcess, serve_env, start_server

MODEL = "test/Fam-hermes"
FAMILY = next(f for f in parsers.FAMILIES if f.template == "Qwen-Qwen3-0.6B.jinja")
WEATHER_CALL = parsers.Message(calls=(("get_weather", {"city": "Paris"}),))
THINK_CALL = parsers.Message(
    reasoning="The user wants the weather.", calls=(("get_weather", {"city": "Paris"}),)
)
SUNNY = "It is sunny in Paris, 21 C."
TOOL_RESULT = "Sunny, 21 C [after]"


def output(message: parsers.Message) -> str:
    return parsers.rendered(FAMILY, message)[0] + "<|im_end|>"


SCRIPTS = {
    "[call]": output(WEATHER_CALL),
    "[think]": output(THINK_CALL),
    "[after]": output(parsers.Message(content=SUNNY)),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("clients")
    hub = root / "hf" / "hub"
    hub.mkdir(parents=True)
    install(hub, MODEL, build_family_model("hermes"))
    script_file = root / "scripts.json"
    script_file.write_text(json.dumps(SCRIPTS))
    proc = start_server(
        hub, log=root / "serve.log", env=serve_env(hub), program=("-m", "tests.scripted", str(script_file))
    )
    yield proc
    proc.stop()


def openai_client(server: ServerProcess) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def test_openai_sdk_tool_call_whole_and_streamed(server: ServerProcess) -> None:
    client = openai_client(server)
    asked = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris? [think]"}],
        "tools": [parsers.WEATHER],
        "seed": 5,
    }
    whole = client.chat.completions.create(**asked)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == THINK_CALL.reasoning

    calls: dict[int, dict[str, str]] = {}
    reasoning, finish = "", None
    for chunk in client.chat.completions.create(**asked, stream=True):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for piece in delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += piece.id or ""
            entry["name"] += piece.function.name or ""
            entry["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and reasoning == THINK_CALL.reasoning
    assert calls == {0: {"id": call.id, "name": "get_weather", "arguments": call.function.arguments}}


def test_langchain_bind_tools(server: ServerProcess) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return TOOL_RESULT

    llm = ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key="none", max_retries=0)  # type: ignore[arg-type]
    bound = llm.bind_tools([get_weather])
    message = bound.invoke("Weather in Paris? [call]")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    gathered: Any = None
    for chunk in bound.stream("Weather in Paris? [call]"):
        gathered = chunk if gathered is None else gathered + chunk
    assert [(c["name"], c["args"]) for c in gathered.tool_calls] == [("get_weather", {"city": "Paris"})]
    result = get_weather.invoke(message.tool_calls[0])  # a ToolMessage with the call's id
    answer = llm.invoke(["Weather in Paris?", message, result])
    assert answer.content == SUNNY


def test_an_openai_agents_loop_calls_the_tool_and_answers_with_its_result(server: ServerProcess) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return TOOL_RESULT

    async def run() -> Any:
        async with AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as client:
            agent = Agent(
                name="weather",
                instructions="Answer with the weather tool.",
                model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
                tools=[get_weather],
            )
            return await Runner.run(agent, "What is the weather in Paris? [call]")

    result = asyncio.run(run())
    assert called == ["Paris"]
    assert result.final_output == SUNNY
