"""The app spoken to as an ASGI server speaks to it, at the moments an HTTP client cannot choose:
a client that leaves right after its request, a server that stops while a body trickles in, a
socket that fails in the middle of a stream or before an error answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxk.server.app import App, ServerSettings
from tests.modelfix import install
from tests.servefix import Client, run_in_process, served

CHAT = "test/Tiny-Chat"
Message = dict[str, Any]


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    return hub


def scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def body(**extra: Any) -> bytes:
    # greedy: an answer that runs to its max_tokens does so whatever the random state
    hello = [{"role": "user", "content": "Hello"}]
    request = {"model": CHAT, "messages": hello, "max_tokens": 40, "temperature": 0, **extra}
    return json.dumps(request).encode()


def with_app(cache: Path, scenario: Callable[[App], Awaitable[Any]]) -> Any:
    return served(App(ServerSettings(hub_root=str(cache))), scenario)


async def answer(app: App, method: str, path: str, data: bytes = b"") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        return await client.request(method, path, content=data, headers={"content-type": "application/json"})


def counted(metrics: str, status: int) -> int:
    prefix = f'mlxk_requests_total{{route="/v1/chat/completions",status="{status}"}} '
    return sum(int(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


def test_a_client_that_leaves_before_its_answer_gets_none(cache: Path) -> None:
    sent: list[Message] = []

    async def scenario(app: App) -> tuple[str, httpx.Response]:
        messages = iter([{"type": "http.request", "body": body(), "more_body": False}])

        async def receive() -> Message:
            return next(messages, {"type": "http.disconnect"})  # gone as soon as it asked

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope("POST", "/v1/chat/completions"), receive, send)
        after = await answer(app, "POST", "/v1/chat/completions", body(max_tokens=4))
        metrics = await answer(app, "GET", "/metrics")
        return metrics.text, after

    metrics, after = with_app(cache, scenario)
    assert sent == []  # nobody to answer
    assert counted(metrics, 499) == 1
    assert after.status_code == 200 and after.json()["choices"][0]["finish_reason"] == "length"


def test_a_stop_while_a_body_trickles_in_answers_503(cache: Path) -> None:
    sent: list[Message] = []

    async def scenario(app: App) -> None:
        calls = 0

        async def receive() -> Message:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": body()[:10], "more_body": True}
            app.drain()  # the server stops while the rest is on its way
            await asyncio.Event().wait()  # which never comes
            raise AssertionError

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope("POST", "/v1/chat/completions"), receive, send)

    with_app(cache, scenario)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "shutting_down"


def test_a_socket_that_fails_mid_stream_ends_the_generation(cache: Path) -> None:
    sent: list[Message] = []

    async def scenario(app: App) -> tuple[httpx.Response, int]:
        messages = iter(
            [{"type": "http.request", "body": body(stream=True, max_tokens=2000), "more_body": False}]
        )
        never = asyncio.Event()

        async def receive() -> Message:
            message = next(messages, None)
            if message is None:
                await never.wait()  # no disconnect message: the socket just fails
            assert message is not None
            return message

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and sent:
                raise OSError("connection reset by peer")
            sent.append(message)

        await app(scope("POST", "/v1/chat/completions"), receive, send)
        after = await answer(app, "POST", "/v1/chat/completions", body(max_tokens=4))
        return after, app.worker.queue_depth

    after, depth = with_app(cache, scenario)
    assert [m["type"] for m in sent] == ["http.response.start"] and sent[0]["status"] == 200
    assert after.status_code == 200 and depth == 0  # the long generation did not hold the next one


def test_an_error_answer_to_a_gone_client_is_counted_as_gone(cache: Path) -> None:
    async def scenario(app: App) -> str:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"{not json", "more_body": False}

        async def send(message: Message) -> None:
            raise RuntimeError("the client is gone")  # as Granian raises for a closed socket

        await app(scope("POST", "/v1/chat/completions"), receive, send)
        return (await answer(app, "GET", "/metrics")).text

    metrics = with_app(cache, scenario)
    assert counted(metrics, 499) == 1 and counted(metrics, 400) == 0


def test_choices_that_end_with_their_first_chunk_each_have_their_finish(cache: Path) -> None:
    async def scenario(call: Client) -> list[httpx.Response]:
        return [
            await call("POST", "/v1/chat/completions", content=body(n=2, max_tokens=1, stream=stream))
            for stream in (False, True)
        ]

    whole, streamed = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    assert [c["finish_reason"] for c in whole.json()["choices"]] == ["length", "length"]
    events = [json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")]
    finished = sorted(c["index"] for e in events for c in e["choices"] if c.get("finish_reason"))
    assert finished == [0, 1]


LONG, OTHER = "test/Long-Chat", "test/Other-Chat"


@pytest.fixture
def two_models(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    from tests.modelfix import build_tiny_chat_model

    install(hub, LONG, build_tiny_chat_model(max_position_embeddings=32768))  # room for a long answer
    install(hub, OTHER, tiny_models["bpe"])
    return hub


class Exchange:
    """One request spoken to the app directly: its body, then nothing until ``leave`` is set
    (then the client's disconnect); what the app sent, and an event at its first body part."""

    def __init__(self, app: App, data: bytes) -> None:
        self.sent: list[Message] = []
        self.leave = asyncio.Event()
        self.streaming = asyncio.Event()
        self._messages = iter([{"type": "http.request", "body": data, "more_body": False}])
        self.task = asyncio.ensure_future(
            app(scope("POST", "/v1/chat/completions"), self._receive, self._send)
        )

    async def _receive(self) -> Message:
        message = next(self._messages, None)
        if message is None:
            await self.leave.wait()
            return {"type": "http.disconnect"}
        return message

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.streaming.set()


async def until_queued(app: App, depth: int) -> None:
    while app.worker.queue_depth < depth:  # the engine thread counts it when it is submitted
        await asyncio.sleep(0.01)


def test_a_request_for_another_model_waits_for_the_batch_and_may_leave_meanwhile(two_models: Path) -> None:
    async def scenario(app: App) -> tuple[Exchange, Exchange, httpx.Response, str]:
        running = Exchange(app, body(model=LONG, max_tokens=30000, stream=True, temperature=0))
        await running.streaming.wait()
        waiting = Exchange(app, body(model=OTHER, max_tokens=4))
        await until_queued(app, 2)
        waiting.leave.set()  # its client leaves while the other model's batch runs
        await waiting.task
        running.leave.set()
        await running.task
        after = await answer(app, "POST", "/v1/chat/completions", body(model=OTHER, max_tokens=4))
        return running, waiting, after, (await answer(app, "GET", "/metrics")).text

    running, waiting, after, metrics = with_app(two_models, scenario)
    assert waiting.sent == [] and running.sent[0]["status"] == 200
    assert counted(metrics, 499) == 2  # both clients left before their answers ended
    assert after.status_code == 200 and after.json()["model"] == OTHER


def test_a_request_queued_behind_another_model_when_the_server_stops_gets_503(two_models: Path) -> None:
    async def scenario(app: App) -> tuple[Exchange, Exchange]:
        running = Exchange(app, body(model=LONG, max_tokens=30000, stream=True, temperature=0))
        await running.streaming.wait()
        waiting = Exchange(app, body(model=OTHER, max_tokens=4))
        await until_queued(app, 2)
        app.end_open()  # the end of a drain: open generations end at their next step
        await waiting.task
        await running.task
        return running, waiting

    running, waiting = with_app(two_models, scenario)
    assert waiting.sent[0]["status"] == 503  # it never started
    assert json.loads(waiting.sent[1]["body"])["error"]["code"] == "shutting_down"
    events = [m["body"] for m in running.sent[1:] if m.get("body", b"").startswith(b"data: {")]
    # a proper last chunk: OpenAI has no "cancelled", the reply says "length"
    assert json.loads(events[-1][6:])["choices"][0]["finish_reason"] == "length"


def test_counting_tokens_for_another_model_while_the_queue_is_full_gets_429(two_models: Path) -> None:
    """A count for the loaded model needs no queue place and is answered; one for another model
    must queue its load first, and a full queue refuses it as it refuses a generation."""

    async def scenario(app: App) -> tuple[httpx.Response, httpx.Response]:
        running = Exchange(
            app, body(model=LONG, max_tokens=30000, stream=True, temperature=0)
        )  # the queue's one place
        await running.streaming.wait()
        count: dict[str, Any] = {"messages": [{"role": "user", "content": "Hello"}]}
        loaded = await answer(
            app, "POST", "/v1/messages/count_tokens", json.dumps({**count, "model": LONG}).encode()
        )
        other = await answer(
            app, "POST", "/v1/messages/count_tokens", json.dumps({**count, "model": OTHER}).encode()
        )
        running.leave.set()
        await running.task
        return loaded, other

    async def main() -> tuple[httpx.Response, httpx.Response]:
        app = App(ServerSettings(hub_root=str(two_models), max_queue=1))
        app.start()
        try:
            return await scenario(app)
        finally:
            await asyncio.to_thread(app.close)

    loaded, other = asyncio.run(main())
    assert loaded.status_code == 200 and loaded.json()["input_tokens"] > 0
    assert other.status_code == 429 and other.headers["retry-after"] == "1"
    assert other.json()["error"]["type"] == "rate_limit_error"
