"""Edges of the server: a server started without a model, requests that name none or name one
wrongly, embedding requests over the limits, what /v1/models leaves out, the ASGI events it
ignores, the embedding queue when the MLX thread has stopped, the store of responses when it is
full, and a tool call voided after its start was sent."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mlxk.generation.chunks import Chunk, ToolCallDelta
from mlxk.server.app import App, ServerSettings
from mlxk.server.errors import HTTPError
from tests.modelfix import install
from tests.servefix import Client, run_in_process

CHAT = "test/Tiny-Chat"


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    (hub / "models--test--No-Snapshots").mkdir()  # an unhealthy model: a repo folder, nothing in it
    return hub


def message(response: Any) -> str:
    return str(response.json()["error"]["message"])


def test_a_server_without_a_model_asks_requests_to_name_one(cache: Path) -> None:
    async def scenario(call: Client) -> list[Any]:
        hello = [{"role": "user", "content": "Hi"}]
        return [
            await call("POST", "/v1/chat/completions", json={"messages": hello, "max_tokens": 2}),
            await call("POST", "/v1/embeddings", json={"input": "Hi"}),
            await call("POST", "/v1/chat/completions", json={"model": 5, "messages": hello}),
            await call("POST", "/v1/embeddings", json={"model": ["m"], "input": "Hi"}),
        ]

    chat, embed, number, listed = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    assert chat.status_code == 400 and "name a model" in message(chat)
    assert embed.status_code == 400 and "name an embedding model" in message(embed)
    for wrong in (number, listed):
        assert wrong.status_code == 400 and message(wrong) == "'model' must be a string"


def test_models_lists_healthy_models_only_and_finds_no_bad_name(cache: Path) -> None:
    async def scenario(call: Client) -> list[Any]:
        return [
            await call("GET", "/v1/models"),
            await call("GET", "/v1/models/test/No-Snapshots"),
            await call("GET", "/v1/models/not a name!"),
            await call("GET", f"/v1/models/{CHAT}"),
        ]

    listed, unhealthy, bad, found = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    assert [m["id"] for m in listed.json()["data"]] == [CHAT]
    assert unhealthy.status_code == 404 and bad.status_code == 404
    assert found.status_code == 200 and found.json()["id"] == CHAT


@pytest.mark.parametrize(
    ("extra", "param", "text"),
    [
        ({"input": ["a"] * 2049}, "input", "'input' takes at most 2048 inputs"),
        ({"input": [[1, 2]] * 2049}, "input", "'input' takes at most 2048 inputs"),
        ({"input": "a", "dimensions": 0}, "dimensions", "'dimensions' must be a positive integer"),
        ({"input": "a", "dimensions": True}, "dimensions", "'dimensions' must be a positive integer"),
        ({"input": "a", "dimensions": "8"}, "dimensions", "'dimensions' must be a positive integer"),
    ],
)
def test_embedding_requests_over_the_limits_are_refused(
    cache: Path, extra: dict[str, Any], param: str, text: str
) -> None:
    async def scenario(call: Client) -> Any:
        return await call("POST", "/v1/embeddings", json={"model": "test/Some-Encoder", **extra})

    reply = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param and message(reply) == text


def test_the_app_ignores_websockets_and_unknown_lifespan_events(cache: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        app = App(ServerSettings(hub_root=str(cache)))
        app.start()  # as run_in_process does; the lifespan's startup must not start it again

        async def send(event: dict[str, Any]) -> None:
            sent.append(event)

        async def never() -> dict[str, Any]:
            raise AssertionError("a websocket is not read")

        await app({"type": "websocket", "path": "/"}, never, send)
        lifespan = iter(
            [{"type": "lifespan.startup"}, {"type": "lifespan.other"}, {"type": "lifespan.shutdown"}]
        )

        async def receive() -> dict[str, Any]:
            return next(lifespan)

        await app({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert not [t for t in threading.enumerate() if t.name == "mlxk-engine"]  # the one worker stopped


def test_embedding_jobs_left_when_the_mlx_thread_stopped_get_503() -> None:
    from mlxk.server.embeddings import EmbeddingWorker, EmbedJob, parse_request

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        stopped: list[Any] = []  # the MLX thread has stopped: what is handed to it never runs
        worker = EmbeddingWorker(load=lambda name: None, run_on_mlx_thread=stopped.append)
        left, waiting = (EmbedJob("m", parse_request({"input": "Hi"}), loop) for _ in range(2))
        worker.submit(left)
        worker.submit(waiting)
        left.future.cancel()  # its client left meanwhile: settling it again is no error
        worker.stop()
        await asyncio.sleep(0)  # the settling is handed to this loop
        assert len(stopped) == 2 and left.future.cancelled()
        return [await asyncio.gather(waiting.future, return_exceptions=True)]

    (outcome,) = asyncio.run(main())
    (error,) = outcome
    assert isinstance(error, HTTPError) and error.status == 503


def test_the_store_forgets_the_oldest_response_and_keeps_no_empty_answer() -> None:
    from mlxk.generation.request import Message
    from mlxk.server.parts import Parts
    from mlxk.server.responses.store import ResponseStore

    store = ResponseStore(limit=2)
    asked = (Message("user", "Hi"),)
    answer = Parts()
    answer.feed(Chunk(content="Hello"))
    store.keep({"id": "resp_1"}, asked, answer.parts)
    store.keep({"id": "resp_2"}, asked, [])  # an answer with nothing in it (cut at once)
    store.keep({"id": "resp_3"}, asked, answer.parts)
    with pytest.raises(HTTPError) as caught:
        store.get("resp_1")
    assert caught.value.status == 404
    assert store.history("resp_2") == asked  # no empty assistant turn
    assert store.history("resp_3") == (*asked, Message("assistant", "Hello"))


def test_a_voided_call_closes_if_its_start_was_sent_and_is_forgotten() -> None:
    from mlxk.server.parts import CALL, Closed, Grew, Opened, Parts

    parts = Parts()
    opened = parts.feed(Chunk(tool_calls=(ToolCallDelta(0, "call_0", "f", '{"a"'),)))
    assert [type(e) for e in opened] == [Opened, Grew] and parts.parts[0].kind == CALL
    assert parts.feed(Chunk(tool_calls=(ToolCallDelta(0),))) == []  # nothing more in it
    voided = parts.feed(Chunk(content='{"a"', tool_calls=(ToolCallDelta(0, failed=True),)))
    # its text came as content, which opened a text part: the call's part had closed already
    assert [type(e) for e in voided] == [Closed, Opened, Grew]
    again = parts.feed(Chunk(tool_calls=(ToolCallDelta(1, "call_1", "f"), ToolCallDelta(1, failed=True))))
    assert [type(e) for e in again] == [Closed, Opened, Closed]  # voided while open: it closes as it is
    assert parts.feed(Chunk(tool_calls=(ToolCallDelta(1, failed=True),))) == []  # already forgotten


def test_group_metrics_name_the_size_rank_and_backend() -> None:
    from mlxk.server.metrics import group_lines

    text = "\n".join(group_lines(2, 0, "ring"))
    assert "mlxk_group_size 2" in text and "mlxk_group_rank 0" in text
    assert 'backend="ring"' in text


def test_distributed_outside_a_launch_is_refused_naming_mlx_launch(cli: Any, cache: Path) -> None:
    for backend in ("any", "ring"):
        result = cli("serve", "--json", "--distributed", "--backend", backend, "--model", CHAT)
        error = json.loads(result.stdout)["error"]
        assert result.exit_code == 1 and error["type"] == "validation_error"
        assert error["message"].startswith("--distributed: this process is not part of a distributed group")
        assert "mlx.launch -n 2 --backend ring -- mlxk serve --distributed" in error["message"]


def test_a_reasoning_item_sent_back_in_a_responses_input_is_left_out(cache: Path) -> None:
    user = {"type": "message", "role": "user", "content": "Hello"}
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Mull"}]}

    async def scenario(call: Client) -> list[Any]:
        return [
            await call(
                "POST",
                "/v1/responses",
                json={"model": CHAT, "input": items, "max_output_tokens": 6, "temperature": 0},
            )
            for items in ([user], [reasoning, user])
        ]

    plain, with_reasoning = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    assert plain.status_code == with_reasoning.status_code == 200
    # the same prompt: the same (greedy) answer
    assert [o["content"] for o in with_reasoning.json()["output"]] == [
        o["content"] for o in plain.json()["output"]
    ]
