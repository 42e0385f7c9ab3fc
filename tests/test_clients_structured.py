"""Structured output, enforced tool choice, logprobs and ``n`` with the clients people use, over real
HTTP to a real ``mlxk serve``: the ``openai`` SDK (``chat.completions.parse`` with a pydantic
model, logprobs, n) and ``langchain-openai`` (``with_structured_output``, ``bind_tools`` with a
forced ``tool_choice``). The model is a tiny real one with random weights, Qwen2.5's chat template
and its call markers as tokens (the hermes format): it never writes JSON or calls a tool by itself,
so whatever valid answer comes back is the grammar's doing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import ServerProcess, start_server
from tests.test_tool_choice import FAMILIES, TEMPLATES, WEATHER_ARGS
from tests.toolfix import with_template

MODEL = "test/Tiny-Hermes"
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_ARGS}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}},
]  # fmt: skip
ARGUMENTS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


class Contact(BaseModel):
    """Every string and number bounded: a random model's answer ends within the budget."""

    name: Annotated[str, Field(max_length=12)]
    age: Annotated[int, Field(ge=0, le=120)]
    role: Literal["admin", "user", "guest"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("structured-clients")
    hub = root / "hf" / "hub"
    hub.mkdir(parents=True)
    _format, template, markers = FAMILIES["hermes"]
    files = build_tiny_chat_model(max_position_embeddings=8192, added_tokens=markers)
    install(hub, MODEL, with_template(files, (TEMPLATES / template).read_text()))
    proc = start_server(hub, "--model", MODEL, log=root / "serve.log")
    yield proc
    proc.stop()


def openai_client(server: ServerProcess) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def chat_openai(server: ServerProcess, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key="none", max_retries=0, **options)  # type: ignore[arg-type]


def test_openai_parse_with_a_pydantic_model(server: ServerProcess) -> None:
    client = openai_client(server)
    completions = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    for seed in range(3):
        completion = completions(
            model=MODEL,
            messages=[{"role": "user", "content": "Who are you?"}],
            response_format=Contact,
            max_tokens=300,
            temperature=0.8,
            seed=seed,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, Contact)
        assert choice.message.parsed == Contact.model_validate_json(choice.message.content)


def test_openai_logprobs_greedy_picks_the_top_one(server: ServerProcess) -> None:
    completion = openai_client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=10,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = completion.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == 10 and "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        best = entry.top_logprobs[0]
        assert (best.token, best.logprob) == (entry.token, entry.logprob)
        assert entry.logprob <= 0 and bytes(entry.bytes or []).decode() == entry.token


def test_openai_n_gives_one_choice_per_index(server: ServerProcess) -> None:
    completion = openai_client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=1.0,
        seed=11,
        n=4,
    )
    assert sorted(c.index for c in completion.choices) == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" and c.message.content for c in completion.choices)
    assert completion.usage.completion_tokens == 4 * 8


def test_langchain_with_structured_output(server: ServerProcess) -> None:
    structured = chat_openai(server, temperature=0.8, max_tokens=300, seed=4).with_structured_output(
        Contact, method="json_schema"
    )
    answer = structured.invoke("Who are you?")
    assert isinstance(answer, Contact)


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_langchain_bind_tools_with_a_forced_choice(server: ServerProcess, choice: str) -> None:
    llm = chat_openai(server, temperature=0.8, max_tokens=200)
    bound = llm.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=False)
    for seed in range(3):
        message = bound.bind(seed=seed).invoke("What is the weather in Paris?")
        (call,) = message.tool_calls
        assert call["name"] in ARGUMENTS and call["id"]
        if choice != "required":
            assert call["name"] == choice
        jsonschema.validate(call["args"], ARGUMENTS[call["name"]])
        assert message.response_metadata["finish_reason"] == "tool_calls"
        assert not message.invalid_tool_calls, message.invalid_tool_calls
        json.dumps(call["args"])  # plain JSON values, as the tool will get them


def test_the_server_log_has_no_traceback(server: ServerProcess) -> None:
    assert "Traceback" not in Path(server.log).read_text()
