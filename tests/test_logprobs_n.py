"""``logprobs`` / ``top_logprobs`` and ``n`` over HTTP (the app in process) on a tiny real model:
OpenAI's shapes, streamed and not, read from the distribution the sampler drew from."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.modelfix import install

CHAT = "test/Tiny-Chat"


@pytest.fixture
def server(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Iterator[Any]:
    from mlxk.server.app import ServerSettings
    from tests.servefix import run_in_process

    install(hub, CHAT, tiny_models["chat"])
    settings = ServerSettings(hub_root=str(hub), model=CHAT)
    yield lambda scenario: run_in_process(settings, scenario)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 12, **extra}


def sse(text: str) -> list[Any]:
    lines = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_greedy_picks_the_top_logprob_streamed_and_not(server: Any) -> None:
    async def scenario(call: Any) -> None:
        body = chat(temperature=0, logprobs=True, top_logprobs=5)
        r = await call("POST", "/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        entries = choice["logprobs"]["content"]
        assert len(entries) == 12 and "".join(e["token"] for e in entries) == choice["message"]["content"]
        for e in entries:
            assert len(e["top_logprobs"]) == 5
            top = e["top_logprobs"][0]
            assert (top["token"], top["logprob"]) == (e["token"], e["logprob"])
            assert bytes(e["bytes"]).decode() == e["token"]
            values = [t["logprob"] for t in e["top_logprobs"]]
            assert values == sorted(values, reverse=True) and sum(math.exp(v) for v in values) <= 1.0001
        streamed = sse((await call("POST", "/v1/chat/completions", json={**body, "stream": True})).text)
        pieces = [
            c["choices"][0]["logprobs"] for c in streamed if c["choices"] and c["choices"][0]["logprobs"]
        ]
        assert [e for p in pieces for e in p["content"]] == entries
        plain = (await call("POST", "/v1/chat/completions", json=chat(temperature=0))).json()
        assert plain["choices"][0]["logprobs"] is None
        assert plain["choices"][0]["message"]["content"] == choice["message"]["content"]

    server(scenario)


def test_completions_logprobs_and_the_masked_distribution(server: Any) -> None:
    async def scenario(call: Any) -> None:
        body = {"model": CHAT, "prompt": "Hi", "max_tokens": 6, "temperature": 0, "logprobs": 3}
        r = await call("POST", "/v1/completions", json=body)
        assert r.status_code == 200, r.text
        lp = r.json()["choices"][0]["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
        assert lp["text_offset"][0] == 0 and all(len(t) == 3 for t in lp["top_logprobs"])
        # with a grammar, the distribution is the masked one: the first token of a JSON object
        # can only be "{", so it is certain
        masked = {**body, "logprobs": 2, "response_format": {"type": "json_object"}}
        first = (await call("POST", "/v1/completions", json=masked)).json()["choices"][0]["logprobs"]
        assert first["tokens"][0] == "{" and first["token_logprobs"][0] == pytest.approx(0.0, abs=1e-5)

    server(scenario)


def test_n_choices_have_their_own_index_streamed_and_not(server: Any) -> None:
    async def scenario(call: Any) -> None:
        body = chat(temperature=1.0, n=4, max_tokens=16)
        r = await call("POST", "/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choices = r.json()["choices"]
        assert [c["index"] for c in choices] == [0, 1, 2, 3]
        assert len({c["message"]["content"] for c in choices}) == 4
        # sampled at temperature 1, a choice may end early on the end-of-turn token: the usage counts
        # every choice's tokens, the whole budget exactly when each ran to its length
        used = r.json()["usage"]["completion_tokens"]
        assert used <= 4 * 16
        assert (used == 4 * 16) == all(c["finish_reason"] == "length" for c in choices)
        seeded = (await call("POST", "/v1/chat/completions", json={**body, "seed": 7})).json()["choices"]
        again = (await call("POST", "/v1/chat/completions", json={**body, "seed": 7})).json()["choices"]
        assert [c["message"]["content"] for c in seeded] == [c["message"]["content"] for c in again]
        assert len({c["message"]["content"] for c in seeded}) == 4
        streamed = sse(
            (await call("POST", "/v1/chat/completions", json={**body, "stream": True, "seed": 7})).text
        )
        texts = {i: "" for i in range(4)}
        for chunk in streamed:
            for choice in chunk["choices"]:
                texts[choice["index"]] += choice["delta"].get("content") or ""
        assert [texts[i] for i in range(4)] == [c["message"]["content"] for c in seeded]

    server(scenario)
