"""Tool calls and reasoning end to end, per model family: a tiny real model with the family's official
chat template and special tokens (tests.familyfix) writes what that template renders for an
assistant turn (tests.scripted; the outputs of tests.test_generation_parsers), served by a real
``mlxk serve`` process over real HTTP.

For each family and case: the answer comes back as the message that was rendered (content,
reasoning, calls with their arguments), no format marker in any channel, the finish reason
``tool_calls`` where there are calls, and the streamed answer, put together from its deltas, equals
the whole one (call ids included: the requests are seeded). Tool results go back through the
template; the thinking switch, ``tool_choice`` and ``--tool-format`` change what the model is shown
and how its output is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import test_generation_parsers as parsers
from tests.familyfix import FAMILIES, Family, build_family_model
from tests.modelfix import install
from tests.servefix import ServerProcess, serve_env, start_server

QUESTION = "What is the weather in Paris?"
PARALLEL = parsers.Message(
    calls=(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome", "days": 2}))
)
# the cases whose text the tiny models' tokenizers can write (ASCII and a few letters)
CASES: dict[str, parsers.Message] = {
    **{name: parsers.CASES[name] for name in ("single", "no_call", "content_then_call", "empty_arguments",
                                                "reasoning_then_call", "reasoning_then_answer")},
    "parallel": PARALLEL,
}  # fmt: skip
AFTER_TOOL = "It is sunny in Paris."
OVERRIDDEN = "test/Fam-hermes-as-text"  # the hermes model again, served with --tool-format MODEL=none


def model_name(family: str) -> str:
    return f"test/Fam-{family}"


def parser_family(family: Family) -> parsers.Family:
    return next(f for f in parsers.FAMILIES if f.template == family.template)


def applies(family: Family, case: str) -> bool:
    return parsers.case_applies(parser_family(family), case, CASES[case])


def end_token(family: Family, message: parsers.Message) -> str:
    """The token that ends the scripted turn, as the model would write it."""
    if family.format == "harmony" and message.calls:
        return "<|call|>"
    if family.format == "gemma4" and message.calls:
        return "<|tool_response>"  # Gemma 4 stops there, for the result to follow in the turn
    return family.eos[0]


def opening(family: Family) -> str:
    """What the model writes before the rendered turn: DeepSeek R1's prompt opens a think block
    that its history leaves out (the model closes it; these answers carry no reasoning)."""
    return "</think>\n\n" if parser_family(family).history_drops else ""


def template_kwargs(family: str, reasoning: bool) -> dict[str, Any]:
    """The chat template variables the parser tests render this family's case with."""
    rendering = parser_family(FAMILIES[family])
    return {**rendering.kwargs, **({} if reasoning else rendering.plain_kwargs)}


def key(family: str, case: str) -> str:
    return f"[{family}:{case}]"


def scripts() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, family in FAMILIES.items():
        for case, message in CASES.items():
            if applies(family, case):
                output, _prompt = parsers.rendered(parser_family(family), message)
                out[key(name, case)] = opening(family) + output + end_token(family, message)
        answer = parsers.Message(content=AFTER_TOOL)  # as the template writes an answer (after thinking)
        out[key(name, "after")] = parsers.rendered(parser_family(family), answer)[0] + family.eos[0]
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("families")
    hub = root / "hf" / "hub"
    hub.mkdir(parents=True)
    for name in FAMILIES:
        install(hub, model_name(name), build_family_model(name))
    install(hub, OVERRIDDEN, build_family_model("hermes"))
    script_file = root / "scripts.json"
    script_file.write_text(json.dumps(scripts()))
    proc = start_server(
        hub,
        "--tool-format",
        f"{OVERRIDDEN}=none",
        log=root / "serve.log",
        env=serve_env(hub),
        program=("-m", "tests.scripted", str(script_file)),
    )
    yield proc
    proc.stop()


def chat(server: ServerProcess, **body: Any) -> dict[str, Any]:
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def chat_stream(server: ServerProcess, **body: Any) -> list[dict[str, Any]]:
    events = []
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    return events


def request(family: str, case: str, **extra: Any) -> dict[str, Any]:
    kwargs = template_kwargs(family, bool(CASES[case].reasoning))
    body: dict[str, Any] = {
        "model": model_name(family),
        "messages": [{"role": "user", "content": f"{QUESTION} {key(family, case)}"}],
        "tools": parsers.TOOLS,
        "max_tokens": 400,
        "seed": 11,
    }
    if kwargs:
        body["chat_template_kwargs"] = kwargs
    return {**body, **extra}


def assembled(events: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The message a client puts together from the deltas, checking the shape of each call delta:
    an integer index, id and name in the first piece (arguments empty or started), arguments after."""
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for event in events:
        for choice in event["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            assert delta.get("reasoning") == delta.get("reasoning_content")
            reasoning += delta.get("reasoning_content") or ""
            for piece in delta.get("tool_calls", []):
                assert isinstance(piece["index"], int)
                if piece["index"] not in calls:
                    assert piece["id"] and piece["type"] == "function" and piece["function"]["name"]
                    calls[piece["index"]] = {
                        "id": piece["id"],
                        "type": "function",
                        "function": {"name": piece["function"]["name"], "arguments": ""},
                    }
                else:
                    assert "id" not in piece and "name" not in piece["function"]
                calls[piece["index"]]["function"]["arguments"] += piece["function"]["arguments"]
            finish = choice["finish_reason"] or finish
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    assert finish is not None
    return message, finish


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """The fields both shapes have, with empty content as None."""
    out = {"content": message.get("content") or None, "reasoning_content": message.get("reasoning_content")}
    out["tool_calls"] = message.get("tool_calls", [])
    return out


def all_cases() -> list[Any]:
    return [
        pytest.param(name, case, id=f"{name}-{case}")
        for name, family in FAMILIES.items()
        for case in CASES
        if applies(family, case)
    ]


@pytest.mark.parametrize(("family", "case"), all_cases())
def test_answer_and_stream_are_the_rendered_message(server: ServerProcess, family: str, case: str) -> None:
    expected = CASES[case]
    body = request(family, case)
    whole = chat(server, **body)
    choice = whole["choices"][0]
    message = choice["message"]
    assert message.get("reasoning_content") == expected.reasoning
    assert message.get("reasoning") == expected.reasoning
    assert (message["content"] or None) == expected.content
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])
    ]
    assert calls == list(expected.calls)
    assert choice["finish_reason"] == ("tool_calls" if expected.calls else "stop")
    for text in (message["content"] or "", message.get("reasoning_content") or "",
                 *(c["function"]["arguments"] for c in message.get("tool_calls", []))):  # fmt: skip
        for marker in parsers.MARKERS[FAMILIES[family].format]:
            assert marker not in text, (marker, text)
    streamed, finish = assembled(chat_stream(server, **body))
    assert comparable(streamed) == comparable(message)
    assert finish == choice["finish_reason"]


TOOL_FAMILIES = [name for name, family in FAMILIES.items() if applies(family, "single")]


@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_results_go_back_through_the_template(server: ServerProcess, family: str) -> None:
    """The call goes back as the assistant's tool_calls, its result as a tool message; the model
    answers from there. The result is in the prompt: each character more of it is one prompt token
    more (the tokenizers are character-level)."""
    first = chat(server, **request(family, "single"))
    call = first["choices"][0]["message"]["tool_calls"][0]

    def after(result: str) -> dict[str, Any]:
        messages = [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": f"{result} {key(family, 'after')}"},
        ]
        kwargs = template_kwargs(family, False)
        return chat(
            server, model=model_name(family), messages=messages, tools=parsers.TOOLS, max_tokens=100,
            **({"chat_template_kwargs": kwargs} if kwargs else {}),
        )  # fmt: skip

    short, longer = after("Sunny, 21 C"), after("Sunny, 21 C, light wind")
    for answer in (short, longer):
        assert answer["choices"][0]["message"]["content"] == AFTER_TOOL
        assert answer["choices"][0]["finish_reason"] == "stop"
    grown = longer["usage"]["prompt_tokens"] - short["usage"]["prompt_tokens"]
    assert grown == len(", light wind")


def test_enable_thinking_false_closes_the_think_block_in_the_prompt(server: ServerProcess) -> None:
    """Qwen3's template renders an empty think block when thinking is off (six tokens here); the
    output then starts as content, so an answer is not read as reasoning."""
    body = request("hermes", "no_call")
    on, off = chat(server, **body), chat(server, **body, chat_template_kwargs={"enable_thinking": False})
    also_off = chat(server, **body, enable_thinking=False)
    assert off["usage"]["prompt_tokens"] - on["usage"]["prompt_tokens"] == len(
        ["<think>", "\n", "\n", "</think>", "\n", "\n"]
    )
    assert also_off["usage"] == {**off["usage"], "completion_tokens": also_off["usage"]["completion_tokens"]}
    assert off["choices"][0]["message"]["content"] == CASES["no_call"].content


def test_tool_choice_none_shows_no_tools_and_reads_no_calls(server: ServerProcess) -> None:
    auto = chat(server, **request("hermes", "single"))
    none = chat(server, **request("hermes", "single", tool_choice="none"))
    assert none["usage"]["prompt_tokens"] < auto["usage"]["prompt_tokens"]  # the tools left the prompt
    message = none["choices"][0]["message"]
    assert "tool_calls" not in message and none["choices"][0]["finish_reason"] == "stop"
    assert "get_weather" in message["content"]  # what the model wrote, as text


def test_a_named_tool_choice_shows_that_tool_only(server: ServerProcess) -> None:
    auto = chat(server, **request("hermes", "single"))
    named = chat(
        server,
        **request("hermes", "single", tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    )
    weather_only = json.dumps(parsers.WEATHER)
    assert len(weather_only) < sum(len(json.dumps(t)) for t in parsers.TOOLS)
    assert named["usage"]["prompt_tokens"] < auto["usage"]["prompt_tokens"]
    # the call itself is enforced by constrained decoding, checked in tests/test_tool_choice.py: the
    # scripted answer and the grammar are two masks on one step here, so the text is not asserted


def test_parallel_tool_calls_false_keeps_the_first_call(server: ServerProcess) -> None:
    both = chat(server, **request("hermes", "parallel"))
    one = chat(server, **request("hermes", "parallel", parallel_tool_calls=False))
    assert len(both["choices"][0]["message"]["tool_calls"]) == 2
    calls = one["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}]
    assert one["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_format_none_serves_the_raw_output(server: ServerProcess) -> None:
    """--tool-format MODEL=none: the same model's output is all content, markers and all."""
    body = request("hermes", "reasoning_then_call")
    raw = chat(server, **{**body, "model": OVERRIDDEN})
    message = raw["choices"][0]["message"]
    assert "tool_calls" not in message and "reasoning_content" not in message
    assert "<tool_call>" in message["content"] and "</think>" in message["content"]
    assert raw["choices"][0]["finish_reason"] == "stop"


def test_tool_format_refuses_an_unknown_format_or_model(
    hub: Path, tiny_models: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    import subprocess
    import sys

    install(hub, "test/Tiny-Chat", tiny_models["chat"])
    env = serve_env(hub)
    for value, said in (
        ("test/Tiny-Chat=yaml", "yaml"),
        ("test/Nope=hermes", "Nope"),
        ("hermes", "MODEL=FORMAT"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--tool-format", value],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert proc.returncode != 0
        assert said in json.loads(proc.stdout)["error"]["message"]


THOUGHT = "The user asks for Paris."


def sent_back(server: ServerProcess, family: str, **reasoning: Any) -> httpx.Response:
    """The second request of an agent loop: the assistant's call goes back with its reasoning."""
    call = {"id": "call0000A", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [call], **reasoning},
        {"role": "tool", "tool_call_id": call["id"], "content": f"Sunny {key(family, 'after')}"},
    ]
    body = {"model": model_name(family), "messages": messages, "tools": parsers.TOOLS, "max_tokens": 100,
            "chat_template_kwargs": template_kwargs(family, False)}  # fmt: skip
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_reasoning_sent_back_reaches_a_template_that_reads_it(server: ServerProcess, name: str) -> None:
    """Qwen3's template shows the reasoning of the turn after the last user message: the prompt
    grows by it (one token a character, with its think block)."""
    without, both = (
        sent_back(server, "hermes"),
        sent_back(server, "hermes", reasoning_content=THOUGHT, reasoning=THOUGHT),
    )
    with_it = sent_back(server, "hermes", **{name: THOUGHT})
    assert with_it.status_code == 200, with_it.text
    grown = with_it.json()["usage"]["prompt_tokens"] - without.json()["usage"]["prompt_tokens"]
    assert grown == len(THOUGHT) + len(["<think>", "\n", "\n", "</think>", "\n", "\n"])
    assert both.json()["usage"]["prompt_tokens"] == with_it.json()["usage"]["prompt_tokens"]
    assert with_it.json()["choices"][0]["message"]["content"] == AFTER_TOOL


def test_reasoning_sent_back_is_refused_where_the_template_has_no_place(server: ServerProcess) -> None:
    response = sent_back(server, "llama3_json", reasoning_content=THOUGHT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].reasoning_content" and "no place" in error["message"]
    assert sent_back(server, "llama3_json", reasoning_content="", reasoning=None).status_code == 200


@pytest.mark.parametrize(
    ("reasoning", "param"),
    [
        ({"reasoning_content": THOUGHT, "reasoning": "Other."}, "messages[1].reasoning"),
        ({"reasoning_content": 3}, "messages[1].reasoning_content"),
        ({"reasoning": ["a"]}, "messages[1].reasoning"),
    ],
)
def test_bad_reasoning_fields_are_refused_by_name(
    server: ServerProcess, reasoning: dict[str, Any], param: str
) -> None:
    response = sent_back(server, "hermes", **reasoning)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_reasoning_on_a_user_message_is_refused(server: ServerProcess) -> None:
    body = {"model": model_name("hermes"), "messages": [{"role": "user", "content": "Hi",
            "reasoning_content": THOUGHT}], "max_tokens": 5}  # fmt: skip
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].reasoning_content"
