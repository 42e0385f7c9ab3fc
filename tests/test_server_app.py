"""The server's ASGI app in process (httpx's ASGI transport) on tiny real models: endpoints,
OpenAI shapes, parameters, and the "server under attack" cases of testing.md."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxk.server.app import ServerSettings
from tests.modelfix import drop_tensor, install
from tests.servefix import Client, run_in_process

CHAT, STOP, OTHER = "test/Tiny-Chat", "test/Tiny-Stop", "test/Other-Chat"
HOST = {"host": "127.0.0.1:8000"}


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    install(hub, STOP, tiny_models["stop"])
    install(hub, OTHER, tiny_models["bpe"])
    return hub


def serve(cache: Path, **options: Any) -> Iterator[Callable[[Callable[[Client], Awaitable[Any]]], Any]]:
    settings = ServerSettings(hub_root=str(cache), model=options.pop("model", CHAT), **options)
    yield lambda scenario: run_in_process(settings, scenario)


@pytest.fixture
def server(cache: Path) -> Iterator[Callable[[Callable[[Client], Awaitable[Any]]], Any]]:
    yield from serve(cache)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }


def events(text: str) -> list[Any]:
    lines = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_chat_completion_shape_and_usage(server: Any) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/chat/completions", json=chat_body())
        assert r.status_code == 200
        body = r.json()
        assert (
            body["object"] == "chat.completion"
            and body["id"].startswith("chatcmpl-")
            and body["model"] == CHAT
        )
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant" and len(choice["message"]["content"]) == 8
        assert choice["finish_reason"] == "length"
        usage = body["usage"]
        assert usage["completion_tokens"] == 8 and usage["total_tokens"] == usage["prompt_tokens"] + 8

    server(scenario)


def test_streaming_equals_non_streaming(server: Any) -> None:
    async def scenario(call: Client) -> None:
        whole = (await call("POST", "/v1/chat/completions", json=chat_body())).json()
        r = await call(
            "POST",
            "/v1/chat/completions",
            json=chat_body(stream=True, stream_options={"include_usage": True}),
        )
        assert r.headers["content-type"] == "text/event-stream"
        chunks = events(r.text)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == whole["choices"][0]["message"]["content"]
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        usage = chunks[-1]["usage"]
        assert chunks[-1]["choices"] == [] and usage["total_tokens"] == whole["usage"]["total_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # the same prompt again: from the cache

    server(scenario)


def test_completions_and_stop_strings(server: Any) -> None:
    async def scenario(call: Client) -> None:
        full = (
            await call(
                "POST", "/v1/completions", json={"prompt": "Hello", "max_tokens": 30, "temperature": 0}
            )
        ).json()
        text = full["choices"][0]["text"]
        assert full["object"] == "text_completion" and len(text) == 30
        stop = text[10:13]
        cut = text.find(stop)
        r = await call(
            "POST",
            "/v1/completions",
            json={"prompt": "Hello", "max_tokens": 30, "temperature": 0, "stop": [stop]},
        )
        assert (
            r.json()["choices"][0]["text"] == text[:cut] and r.json()["choices"][0]["finish_reason"] == "stop"
        )

    server(scenario)


def test_stop_model_finishes_with_stop(server: Any) -> None:
    async def scenario(call: Client) -> None:
        body = (await call("POST", "/v1/chat/completions", json=chat_body(model=STOP))).json()
        assert (
            body["choices"][0]["message"]["content"] == "" and body["choices"][0]["finish_reason"] == "stop"
        )

    server(scenario)


def test_models_health_and_metrics(server: Any) -> None:
    async def scenario(call: Client) -> None:
        models = (await call("GET", "/v1/models")).json()
        ids = {m["id"]: m for m in models["data"]}
        assert set(ids) == {CHAT, STOP, OTHER} and ids[CHAT]["context_length"] == 512
        health = await call("GET", "/health")
        assert health.status_code in (200, 503)
        await call("POST", "/v1/chat/completions", json=chat_body())
        metrics = (await call("GET", "/metrics")).text
        assert 'mlxk_requests_total{route="/v1/chat/completions",status="200"} 1' in metrics
        assert "mlxk_completion_tokens_total 8" in metrics

    server(scenario)


def test_a_request_may_switch_models(server: Any) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/chat/completions", json=chat_body(model=OTHER))
        assert r.status_code == 200 and r.json()["model"] == OTHER

    server(scenario)


def test_count_tokens_loads_the_model_it_names(server: Any, cache: Path) -> None:
    """A count for a model other than the loaded one loads it, as a generation would, and counts
    with its own tokenizer and template."""
    from mlxk.generation.engine import load_engine
    from mlxk.generation.request import GenerationRequest, Message

    snapshot = next((cache / "models--test--Other-Chat" / "snapshots").iterdir())
    hello = GenerationRequest(messages=(Message("user", "Hello"),), thinking=False)
    expected = len(load_engine(str(snapshot)).prompt(hello).tokens)
    count = {"model": OTHER, "messages": [{"role": "user", "content": "Hello"}]}

    async def scenario(call: Client) -> None:
        assert (await call("POST", "/v1/chat/completions", json=chat_body(max_tokens=1))).status_code == 200
        r = await call("POST", "/v1/messages/count_tokens", json=count)
        assert r.status_code == 200 and r.json() == {"input_tokens": expected}
        r = await call("POST", "/v1/messages", json={**count, "max_tokens": 1})
        assert r.status_code == 200 and r.json()["usage"]["input_tokens"] == expected

    server(scenario)


def test_a_cached_model_that_cannot_run_here_is_refused_by_name(
    cache: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    """An architecture this mlx-lm does not know: chat and count_tokens answer 400 with the reason,
    before the running model is unloaded (it answers the next request at once)."""
    files = dict(tiny_models["chat"])
    files["config.json"] = json.dumps(
        {**json.loads(files["config.json"]), "model_type": "no_such_arch"}
    ).encode()
    install(cache, "test/Unknown-Arch", files)

    async def scenario(call: Client) -> None:
        assert (await call("POST", "/v1/chat/completions", json=chat_body(max_tokens=1))).status_code == 200
        for path, body in (
            ("/v1/chat/completions", chat_body(model="test/Unknown-Arch")),
            (
                "/v1/messages/count_tokens",
                {"model": "test/Unknown-Arch", "messages": [{"role": "user", "content": "x"}]},
            ),
        ):
            r = await call("POST", path, json=body)
            assert r.status_code == 400, r.text
            assert "test/Unknown-Arch cannot run with this mlx-lm" in r.text and "no_such_arch" in r.text
        r = await call("GET", "/health")
        assert r.json()["model"] == CHAT

    for run in serve(cache):
        run(scenario)


def test_a_model_mlx_lm_cannot_load_is_an_execution_error(
    cache: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    """Weights that lack a tensor pass the cache's checks, so the server finds out by loading:
    a 500 (OpenAI's server_error, code execution_error) naming the model and mlx-lm's reason (not an internal error),
    and the server serves the next request for a model that loads."""
    install(cache, "test/Missing-Norm", drop_tensor(tiny_models["chat"], "model.norm.weight"))

    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/chat/completions", json=chat_body(model="test/Missing-Norm"))
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "execution_error")
        assert error["message"] == (
            "loading test/Missing-Norm failed: ValueError: Missing 1 parameters: model.norm.weight."
        )
        assert (await call("POST", "/v1/chat/completions", json=chat_body(max_tokens=1))).status_code == 200
        assert (await call("GET", "/health")).json()["model"] == CHAT

    for run in serve(cache):
        run(scenario)


def test_a_count_the_model_cannot_render_is_a_400(
    cache: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    """A base model (no chat template) takes no tools: count_tokens says so, as generation does."""
    install(cache, "test/Tiny-Raw", tiny_models["raw"])
    tool = {"name": "f", "input_schema": {"type": "object"}}
    count = {"model": "test/Tiny-Raw", "messages": [{"role": "user", "content": "x"}], "tools": [tool]}

    async def scenario(call: Client) -> None:
        for path, body in (
            ("/v1/messages/count_tokens", count),
            ("/v1/messages", {**count, "max_tokens": 2}),
        ):
            r = await call("POST", path, json=body)
            assert r.status_code == 400, r.text
            assert "no chat template: it takes no tools" in r.json()["error"]["message"]

    for run in serve(cache):
        run(scenario)


BAD_BODIES = [
    (b"{not json", 400, None),
    (b"\xff\xfe", 400, None),
    (b"[]", 400, None),
    (json.dumps(chat_body(max_tokens=True)).encode(), 400, "max_tokens"),
    (json.dumps(chat_body(max_tokens="10")).encode(), 400, "max_tokens"),
    (json.dumps(chat_body(max_tokens=-1)).encode(), 400, "max_tokens"),
    (json.dumps(chat_body(max_tokens=1e9)).encode(), 400, "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None),
    (b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None),
    (json.dumps(chat_body(stop=["x"] * 1000)).encode(), 400, "stop"),
    (json.dumps(chat_body(n=9)).encode(), 400, "n"),
    (json.dumps(chat_body(logprobs=True, top_logprobs=21)).encode(), 400, "top_logprobs"),
    (json.dumps(chat_body(top_logprobs=2)).encode(), 400, "top_logprobs"),
    (
        json.dumps(chat_body(response_format={"type": "json_schema"})).encode(),
        400,
        "response_format.json_schema",
    ),
    (json.dumps(chat_body(response_format={"type": "yaml"})).encode(), 400, "response_format"),
    (json.dumps(chat_body(messages=[])).encode(), 400, "messages"),
    (json.dumps(chat_body(messages=[{"role": "wizard", "content": "x"}])).encode(), 400, "messages[0].role"),
    (json.dumps(chat_body(temperature=5)).encode(), 400, "temperature"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES)
def test_bad_requests_get_openai_errors(server: Any, body: bytes, status: int, param: str | None) -> None:
    async def scenario(call: Client) -> None:
        r = await call(
            "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == status
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param

    server(scenario)


@pytest.mark.parametrize(
    "model", ["/etc/passwd", "../x", "./local", "https://evil.example/model", "org/not-cached", "a b"]
)
def test_models_that_are_paths_or_uncached_are_never_loaded(server: Any, model: str) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/chat/completions", json=chat_body(model=model))
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"

    server(scenario)


def test_a_prompt_longer_than_the_context_is_a_400_with_numbers(server: Any) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/completions", json={"prompt": "x" * 600, "max_tokens": 5})
        assert (
            r.status_code == 400
            and "600" in r.json()["error"]["message"]
            and "512" in r.json()["error"]["message"]
        )

    server(scenario)


def test_foreign_host_and_origin_are_refused(server: Any) -> None:
    async def scenario(call: Client) -> None:
        assert (await call("GET", "/v1/models", headers={"host": "evil.example"})).status_code == 403
        assert (await call("GET", "/v1/models", headers={"origin": "http://evil.example"})).status_code == 403
        assert (await call("GET", "/v1/models", headers={"host": "localhost:8000"})).status_code == 200

    server(scenario)


def test_body_size_limit(cache: Path) -> None:
    for run in serve(cache, max_body_bytes=2048):

        async def scenario(call: Client) -> None:
            big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 5000}]))
            r = await call("POST", "/v1/chat/completions", content=big)
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        run(scenario)


def test_a_chunked_body_is_cut_off_at_the_size_limit(cache: Path) -> None:
    """No Content-Length to refuse it by: the body is counted as its parts arrive, refused at the
    limit (413), and the connection is closed (the rest of the body is never read)."""
    for run in serve(cache, max_body_bytes=2048):

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"x" * 1000

        async def scenario(call: Client) -> None:
            r = await call("POST", "/v1/chat/completions", content=parts())
            assert "content-length" not in r.request.headers  # sent chunked
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
            assert r.headers["connection"] == "close"

        run(scenario)


def test_api_key_protects_everything_but_health(cache: Path) -> None:
    for run in serve(cache, api_key="sekrit"):

        async def scenario(call: Client) -> None:
            assert (await call("GET", "/v1/models")).status_code == 401
            assert (
                await call("GET", "/v1/models", headers={"authorization": "Bearer wrong"})
            ).status_code == 401
            assert (
                await call("GET", "/v1/models", headers={"authorization": "Bearer sekrit"})
            ).status_code == 200
            assert (await call("GET", "/health")).status_code in (200, 503)

        run(scenario)


def test_cors_only_for_named_origins(cache: Path) -> None:
    for run in serve(cache, cors_origins=("http://ui.local",)):

        async def scenario(call: Client) -> None:
            r = await call("GET", "/v1/models", headers={"origin": "http://ui.local"})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ui.local"
            assert (
                await call("OPTIONS", "/v1/chat/completions", headers={"origin": "http://ui.local"})
            ).status_code == 204
            # no Origin: no browser's preflight, so nothing of CORS in the answer
            bare = await call("OPTIONS", "/v1/chat/completions")
            assert bare.status_code == 204
            assert not [name for name in bare.headers if name.startswith("access-control-")]

        run(scenario)


def test_single_model_refuses_others(cache: Path) -> None:
    for run in serve(cache, single_model=True):

        async def scenario(call: Client) -> None:
            r = await call("POST", "/v1/chat/completions", json=chat_body(model=OTHER))
            assert r.status_code == 404
            assert [m["id"] for m in (await call("GET", "/v1/models")).json()["data"]] == [CHAT]

        run(scenario)


def test_a_full_queue_gets_429_with_retry_after(cache: Path) -> None:
    for run in serve(cache, max_queue=1):

        async def scenario(call: Client) -> None:
            while True:  # until the preload of --model is done
                health = await call("GET", "/health")
                if health.status_code == 200 and health.json()["queue"] == 0:
                    break
                await asyncio.sleep(0.01)
            long = chat_body(max_tokens=400)
            results = await asyncio.gather(
                *(call("POST", "/v1/chat/completions", json=long) for _ in range(4))
            )
            codes = sorted(r.status_code for r in results)
            assert 200 in codes and 429 in codes
            busy = next(r for r in results if r.status_code == 429)
            assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "rate_limit_error"

        run(scenario)


def test_unknown_routes_and_methods(server: Any) -> None:
    async def scenario(call: Client) -> None:
        assert (await call("GET", "/v1/nothing")).status_code == 404
        r = await call("GET", "/v1/chat/completions")
        assert r.status_code == 405 and r.headers["allow"] == "POST"

    server(scenario)


def test_a_repeated_system_prompt_is_not_prefilled_again(server: Any, cache: Path) -> None:
    system = {"role": "system", "content": "You are a terse assistant. " * 8}

    def body(question: str) -> dict[str, Any]:
        return chat_body(messages=[system, {"role": "user", "content": question}], max_tokens=12)

    async def scenario(call: Client) -> list[Any]:
        first = (await call("POST", "/v1/chat/completions", json=body("Hello"))).json()
        second = (await call("POST", "/v1/chat/completions", json=body("Hi there"))).json()
        return [first, second]

    first, second = server(scenario)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > len(system["content"])
    for run in serve(cache):  # a fresh server, no cache: the same greedy answer

        async def fresh(call: Client) -> Any:
            return (await call("POST", "/v1/chat/completions", json=body("Hi there"))).json()

        alone = run(fresh)
    assert alone["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert alone["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_request_logs_as_json_lines(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from mlxk.server.logs import configure

    configure(json_lines=True)
    try:

        async def scenario(call: Client) -> None:
            await call("POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
            await call("POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "mystery": 1})

        server(scenario)
    finally:
        logging.getLogger("mlxk.server").handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("path") == "/v1/completions"]
    assert [r["status"] for r in requests] == [200, 400]  # an unknown field is refused, and logged as such
    assert requests[0]["method"] == "POST" and requests[0]["ms"] > 0


def test_health_answers_while_generating(cache: Path) -> None:
    for run in serve(cache, model=CHAT):

        async def scenario(call: Client) -> None:
            long = asyncio.ensure_future(call("POST", "/v1/chat/completions", json=chat_body(max_tokens=400)))

            async def counted() -> httpx.Response | None:
                """/health until it counts the request (the model loaded, the request taken): an
                answer given while the request ran; None when the request ended first."""
                while not long.done():
                    health = await call("GET", "/health")
                    if health.status_code == 200 and health.json()["queue"] >= 1:
                        return health
                    await asyncio.sleep(0.01)
                return None

            assert await asyncio.wait_for(counted(), timeout=120) is not None
            assert (await asyncio.wait_for(long, timeout=120)).status_code == 200

        run(scenario)
