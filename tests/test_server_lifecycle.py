"""``mlxk serve`` as a process that keeps its promises: it dies whole, it never shares a port by
accident, it drains when told to stop (new requests refused, open ones finished, what outlives the
drain ended properly), it stops generating for clients that left, and it keeps its model when a
request names one it cannot run. Real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import (
    ServerProcess,
    alive,
    descendants,
    metric,
    serve_env,
    start_server,
    wait_for,
)

CHAT, LONG = "test/Tiny-Chat", "test/Tiny-Long"
HELLO = [{"role": "user", "content": "Hello"}]
MANY_TOKENS = 500_000  # far more than a test ever waits for: the answer ends because it is told to
FINISHES_IN_DRAIN = 1500  # seconds of generation here: still running when the signal comes


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    return hub


@pytest.fixture
def long_cache(cache: Path) -> Path:
    """Adds a model with a huge context: an answer that goes on until something ends it."""
    install(cache, LONG, build_tiny_chat_model(max_position_embeddings=10_000_000))
    return cache


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """The servers a test starts; each is stopped by its id at the end, whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)


def test_kill_9_leaves_no_server_behind(cache: Path, tmp_path: Path, servers: list[ServerProcess]) -> None:
    server = start_server(cache, "--model", CHAT, log=tmp_path / "serve.log")
    servers.append(server)
    below = descendants(server.pid)
    server.stop(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in below), "the processes below the server to end", 30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)
    with socket.socket() as sock:  # the port is free again: nothing listens on it
        sock.bind(("127.0.0.1", server.port))


def test_a_taken_port_is_refused_unless_shared_on_purpose(
    cache: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    first = start_server(cache, "--model", CHAT, log=tmp_path / "first.log")
    servers.append(first)
    second = subprocess.run(
        [sys.executable, "-m", "mlxk", "serve", "--json", "--port", str(first.port), "--model", CHAT],
        capture_output=True,
        env=serve_env(cache),
        timeout=120,
    )
    envelope = json.loads(second.stdout)
    assert second.returncode == 1 and envelope["status"] == "error"
    assert (
        envelope["error"]["type"] == "validation_error" and "already in use" in envelope["error"]["message"]
    )
    assert httpx.get(first.url + "/health", timeout=5).json()["status"] == "ok"  # the first one serves on

    shared = start_server(cache, "--reuse-port", log=tmp_path / "shared.log")
    servers.append(shared)
    servers.append(
        start_server(cache, "--reuse-port", "--port", str(shared.port), log=tmp_path / "shared2.log")
    )


def _in_thread(work: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    """``work`` on a thread that keeps what it raises in ``errors`` (asserted on by the test)."""

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _stream_lines(url: str, body: dict[str, Any], started: threading.Event, lines: list[str]) -> None:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            lines.append(line)
            if '"content":"' in line and not started.is_set():
                started.set()


def _last_events(lines: list[str]) -> tuple[list[dict[str, Any]], str]:
    """A stream's JSON chunks and its last event."""
    events = [line[6:] for line in lines if line.startswith("data: ")]
    return [json.loads(event) for event in events[:-1]], events[-1]


def _ended_properly(lines: list[str]) -> dict[str, Any]:
    """Asserts that a stream ended with one finish ("length": it was ended, not finished), its
    usage and [DONE]; returns the usage."""
    chunks, last = _last_events(lines)
    assert last == "[DONE]"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and finish.count(None) == len(finish) - 1
    usage: dict[str, Any] = chunks[-1]["usage"]
    return usage


def test_sigterm_drains_open_requests_refuses_new_ones_and_a_second_signal_ends_the_rest(
    long_cache: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(long_cache, "--model", LONG, "--drain-timeout", "600", log=tmp_path / "serve.log")
    servers.append(server)
    endless = {"model": LONG, "messages": HELLO, "max_tokens": MANY_TOKENS, "temperature": 0}
    bounded = {**endless, "max_tokens": FINISHES_IN_DRAIN}
    started = threading.Event()
    lines: list[str] = []
    whole: list[httpx.Response] = []
    errors: list[BaseException] = []
    streamed = {**endless, "stream": True, "stream_options": {"include_usage": True}}
    streaming = _in_thread(lambda: _stream_lines(server.url, streamed, started, lines), errors)
    assert started.wait(60), f"the stream did not start: {errors}"
    waiting = _in_thread(
        lambda: whole.append(httpx.post(server.url + "/v1/chat/completions", json=bounded, timeout=120)),
        errors,
    )
    wait_for(lambda: httpx.get(server.url + "/health").json()["queue"] == 2, "the second request to run")

    os.kill(server.pid, signal.SIGTERM)
    wait_for(lambda: httpx.get(server.url + "/health").status_code == 503, "/health to turn 503")
    health = httpx.get(server.url + "/health")
    assert health.json()["status"] == "draining"
    refused = httpx.post(server.url + "/v1/chat/completions", json=bounded, timeout=60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "shutting_down"
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}

    waiting.join(120)  # the open whole request runs to its own end
    assert errors == [] and whole[0].status_code == 200
    answer = whole[0].json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == FINISHES_IN_DRAIN
    seen = len(lines)  # the endless stream goes on after it, the server with it
    wait_for(lambda: len(lines) >= seen + 2, "the stream to go on while the server drains")
    assert server.proc.poll() is None and _last_events(lines)[1] != "[DONE]"

    assert server.stop(signal.SIGTERM) == 0  # the second signal ends the drain
    streaming.join(60)
    assert errors == []
    assert 0 < _ended_properly(lines)["completion_tokens"] < MANY_TOKENS
    assert "Killing" not in server.stderr() and "second signal" in server.stderr()


def test_the_drain_timeout_ends_open_streams_properly_and_exits_0(
    long_cache: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(long_cache, "--model", LONG, "--drain-timeout", "1", log=tmp_path / "serve.log")
    servers.append(server)
    body = {"model": LONG, "messages": HELLO, "max_tokens": MANY_TOKENS, "temperature": 0}
    started = threading.Event()
    lines: list[str] = []
    errors: list[BaseException] = []
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    streaming = _in_thread(lambda: _stream_lines(server.url, streamed, started, lines), errors)
    assert started.wait(60), f"the stream did not start: {errors}"
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0  # no second signal: the timeout ends the drain
    streaming.join(60)
    assert errors == []
    assert 0 < _ended_properly(lines)["completion_tokens"] < MANY_TOKENS
    assert "drain timeout" in server.stderr()


def test_an_idle_server_exits_at_once_on_sigterm(
    cache: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(cache, "--model", CHAT, "--drain-timeout", "600", log=tmp_path / "serve.log")
    servers.append(server)
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0  # nothing open: the drain does not wait for its timeout


# The server's own serving loop, in a process of its own, then one SIGTERM more once the loop has
# stopped: mlx.launch sends every rank a SIGTERM as soon as one rank fails, and it may come while
# the rank is already leaving with its exit status
LATE_SIGTERM = """
import asyncio, os, signal, sys, threading, time
import httpx
from mlxk.server import launch
from mlxk.server.app import App, ServerSettings
from mlxk.server.listener import bind_listener

settings = ServerSettings(hub_root=sys.argv[1], port=0)
listener = bind_listener("127.0.0.1", 0)
url = "http://127.0.0.1:%d/health" % listener.getsockname()[1]

def stop_when_up():
    while True:
        try:
            httpx.get(url, timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # the drain: nothing is open, so the server stops

threading.Thread(target=stop_when_up, daemon=True).start()
asyncio.run(launch._serve(App(settings), listener, settings, "warning"))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)  # a SIGTERM that ends the process does so before this
print("still leaving with its own status")
"""


def run_script(script: str, cache: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``script`` in a Python process of its own, given the cache's path, with the server's env."""
    return subprocess.run(
        [sys.executable, "-c", script, str(cache)],
        env=serve_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_sigterm_after_the_server_stopped_does_not_change_how_it_exits(cache: Path) -> None:
    script = run_script(LATE_SIGTERM, cache, timeout=120)
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == "still leaving with its own status"


def test_a_client_that_leaves_a_whole_request_frees_its_place(
    long_cache: Path, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start_server(long_cache, "--model", LONG, log=tmp_path / "serve.log")
    servers.append(server)
    body = json.dumps(
        {"model": LONG, "messages": HELLO, "max_tokens": MANY_TOKENS, "temperature": 0}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(head + body)

    def generating() -> bool:
        text = httpx.get(server.url + "/metrics").text
        return metric(text, "mlxk_queue_depth") == 1

    wait_for(generating, "the request to run")
    client.close()
    cancelled = 'mlxk_generations_total{finish_reason="cancelled"}'
    wait_for(
        lambda: metric(httpx.get(server.url + "/metrics").text, cancelled) == 1, "the generation to stop"
    )
    text = httpx.get(server.url + "/metrics").text
    assert metric(text, "mlxk_queue_depth") == 0
    produced = metric(text, "mlxk_completion_tokens_total")
    assert produced is not None and produced < MANY_TOKENS
    assert metric(text, 'mlxk_requests_total{route="/v1/chat/completions",status="499"}') == 1


def test_a_model_it_cannot_run_does_not_unload_the_running_one(
    cache: Path, minilm_files: dict[str, bytes], tmp_path: Path, servers: list[ServerProcess]
) -> None:
    encoder = "sentence-transformers/all-MiniLM-L6-v2"
    install(cache, encoder, minilm_files)
    server = start_server(cache, "--model", CHAT, log=tmp_path / "serve.log")
    servers.append(server)
    refused = httpx.post(
        server.url + "/v1/chat/completions", json={"model": encoder, "messages": HELLO}, timeout=60
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_incompatible"
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "model": CHAT, "queue": 0}
    chat_encoder = httpx.post(server.url + "/v1/embeddings", json={"model": CHAT, "input": "x"}, timeout=60)
    assert chat_encoder.status_code == 400


# The stop's last resort, in a process of its own: a server that does not stop (a stand-in for a
# Granian server whose stop() hangs) and a main thread that waits forever, as a hung exit does
HUNG_STOP = """
import sys, threading
from mlxk.server import launch
from mlxk.server.app import App, ServerSettings

class NeverStops:
    def stop(self):
        pass

launch.STOP_GRACE_S = 1.0
launch._stop(App(ServerSettings(hub_root=sys.argv[1], port=0)), NeverStops())
threading.Event().wait()
"""


def test_a_stop_that_outlives_its_grace_ends_the_process_with_status_1(cache: Path) -> None:
    script = run_script(HUNG_STOP, cache, timeout=60)
    assert script.returncode == 1
    assert script.stderr.strip().endswith("mlxk serve: not stopped after 1 s")
