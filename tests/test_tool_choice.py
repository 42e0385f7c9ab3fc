"""``tool_choice`` required / named, enforced in the model's own call format by constrained decoding:
a random-weight tiny model (which never decides to call anything by itself) with a family's real
chat template and its call markers as tokens must answer with a call of an offered tool whose
arguments validate, one call when ``parallel_tool_calls`` is false."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlxk.generation.chunks import merge
from mlxk.generation.request import (
    FunctionTool,
    GenerationRequest,
    Message,
    NamedFunction,
    ResponseFormat,
    Sampling,
)
from tests.modelfix import build_tiny_chat_model, install
from tests.toolfix import TIME, WEATHER, with_template

TEMPLATES = Path(__file__).parent / "data" / "templates"
FAMILIES = {
    # family: (its output format, template, the markers the family's tokenizer has as tokens)
    "hermes": ("hermes", "Qwen-Qwen2.5-7B-Instruct.jinja", ("<tool_call>", "</tool_call>")),
    "llama3_json": ("llama3_json", "meta-llama-Llama-3.1-8B-Instruct.jinja", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>")),
    "mistral": ("mistral", "unsloth-mistral-Devstral-Small-2507.jinja", ("[TOOL_CALLS]", "[ARGS]", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")),
    # the older Mistral layout: no [ARGS] token, the calls as a JSON list after [TOOL_CALLS]
    "mistral-nemo": ("mistral", "mistralai-Mistral-Nemo-Instruct-2407.jinja", ("[TOOL_CALLS]", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")),
}  # fmt: skip
# strings with a bound and no extra keys, so that every call of a random model ends within the
# budget (an unbounded string is valid for as long as the model writes it)
CITY = {"type": "string", "maxLength": 20}
WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": CITY, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = (
    FunctionTool(WEATHER["function"]["name"], WEATHER["function"]["description"], WEATHER_ARGS),
    FunctionTool(
        TIME["function"]["name"], None, {"type": "object", "properties": {}, "additionalProperties": False}
    ),
)
SCHEMAS = {tool.name: tool.parameters for tool in TOOLS}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

    fmt, template, markers = FAMILIES[request.param]
    files = build_tiny_chat_model(max_position_embeddings=8192, added_tokens=markers)
    hub = tmp_path_factory.mktemp("tools")
    repo = install(hub, f"test/{request.param}", with_template(files, (TEMPLATES / template).read_text()))
    engine = load_engine(str(repo.snapshot))
    assert engine.output_format == fmt
    yield engine


def ask(choice: Any, seed: int, parallel: bool = False) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "What is the weather in Paris?"),),
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        max_tokens=200,
        sampling=Sampling(temperature=0.7, seed=seed),
    )


@pytest.mark.parametrize("choice", ["required", NamedFunction("get_weather")], ids=["required", "named"])
def test_the_answer_is_a_valid_call(engine: Any, choice: Any) -> None:
    for seed in range(4):
        answer = merge(list(engine.generate(ask(choice, seed))))
        assert answer.finish_reason == "tool_calls", (answer.content, answer.tool_calls)
        (call,) = answer.tool_calls
        assert not call.failed and call.name in SCHEMAS
        if isinstance(choice, NamedFunction):
            assert call.name == choice.name
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        assert not answer.content.strip()


def test_parallel_calls_are_each_valid(engine: Any) -> None:
    if engine.output_format == "llama3_json":
        pytest.skip("Llama 3.x templates take one call per answer")
    answered = 0
    for seed in range(3):
        answer = merge(list(engine.generate(ask("required", seed, parallel=True))))
        calls = [c for c in answer.tool_calls if not c.failed]
        answered += bool(calls)
        for call in calls:  # the complete ones (a call cut by the budget came back as failed)
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name or ""])
        assert answer.finish_reason in ("tool_calls", "length")
    assert answered >= 1


ANSWER = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 20}},
    "required": ["summary"],
    "additionalProperties": False,
}


def test_with_a_response_format_and_tools_the_answer_is_a_call_or_that_format(engine: Any) -> None:
    """tool_choice auto, tools offered and a JSON schema asked for: the model may call a tool or
    answer, and either way the grammar holds it to a valid call or a valid answer."""
    kinds = set()
    for seed in range(4):
        request = replace(ask("auto", seed), response_format=ResponseFormat("json_schema", ANSWER))
        answer = merge(list(engine.generate(request)))
        calls = [c for c in answer.tool_calls if not c.failed]
        if calls:
            kinds.add("call")
            for call in calls:
                jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name or ""])
        elif answer.finish_reason == "stop":
            kinds.add("answer")
            jsonschema.validate(json.loads(answer.content), ANSWER)
        else:  # cut by the budget: the start of one or the other
            assert answer.finish_reason == "length"
    assert kinds
