"""What the Responses and Messages adapters cost over chat completions, on one ``mlxk serve``.

The same request (the tests' tiny llama, greedy, the same prompt and token budget) is streamed
through ``/v1/chat/completions`` and through ``/v1/responses`` or ``/v1/messages``, by 1 client and
by 8 at once, in paired rounds (A B, B A, ...). Goal (full mode): each adapter keeps >= 98 % of
chat completions' tokens/s, at 1 and at 8 streams. Quick mode's alarm is on CPU time per token
of the server's process tree (what a busy machine does not move, see test_bench_serve.py): an
adapter that doubled the per-token work would trip it.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks import cputime
from benchmarks.gates import QUICK, Gate, enforce, first_then_fresh, paired
from benchmarks.test_bench_serve import STOP_DEADLINE_S, Rate, Served, _cpu_alarm, _free_port, _start
from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import wait_until_up

MODEL = "bench/Tiny-Agents"
TOKENS = 128 if QUICK else 256
ROUNDS = 5 if QUICK else 9
HELLO = [{"role": "user", "content": "Hello"}]
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": TOKENS, "temperature": 0,
                                      "stream": True, "stream_options": {"include_usage": True}}),
    "responses": ("/v1/responses", {"model": MODEL, "input": HELLO, "max_output_tokens": TOKENS, "temperature": 0,
                                    "stream": True}),
    "messages": ("/v1/messages", {"model": MODEL, "messages": HELLO, "max_tokens": TOKENS, "temperature": 0,
                                  "stream": True}),
}  # fmt: skip
GATES = {
    (protocol, streams): (
        Gate(f"serve: {streams} stream(s), {protocol} / chat completions, tokens/s", goal=0.98, alarm=None),
        Gate(
            f"serve: {streams} stream(s), chat completions / {protocol}, CPU per token", goal=None, alarm=0.7
        ),
    )
    for protocol in ("responses", "messages")
    for streams in (1, 8)
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    hub = tmp_path_factory.mktemp("agent-apis-bench") / "hub"
    install(hub, MODEL, build_tiny_chat_model(max_position_embeddings=4096))
    port = _free_port()
    proc, url = _start(
        [sys.executable, "-m", "mlxk", "serve", "--model", MODEL, "--port", str(port)], hub, port
    )
    wait_until_up(url, proc)
    yield Served(url, proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=STOP_DEADLINE_S)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16)) as opened:
        yield opened


def output_tokens(protocol: str, data: bytes) -> int:
    """The generated tokens, from the usage in the stream's last events."""
    for line in reversed(data.split(b"\n")):
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if protocol == "chat" and event.get("usage") and not event.get("choices"):
            return int(event["usage"]["completion_tokens"])
        if protocol == "responses" and event.get("type") in ("response.completed", "response.incomplete"):
            return int(event["response"]["usage"]["output_tokens"])
        if protocol == "messages" and event.get("type") == "message_delta":
            return int(event["usage"]["output_tokens"])
    raise AssertionError(f"no usage in the {protocol} stream")


def _stream(client: httpx.Client, url: str, protocol: str, counts: list[int]) -> None:
    path, body = BODIES[protocol]
    with client.stream("POST", url + path, json=body) as response:
        data = b"".join(response.iter_bytes())  # parsed at the end: the client's work is not measured
    counts.append(output_tokens(protocol, data))


def _aggregate(client: httpx.Client, served: Served, protocol: str, clients: int) -> Rate:
    counts: list[int] = []
    threads = [
        threading.Thread(target=_stream, args=(client, served.url, protocol, counts)) for _ in range(clients)
    ]
    cpu = cputime.tree_seconds(served.pid) if cputime.available() else 0.0
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cputime.tree_seconds(served.pid) - cpu if cputime.available() else 0.0
    assert counts == [TOKENS] * clients
    return Rate(sum(counts) / elapsed, cpu / sum(counts))


@pytest.mark.parametrize(("protocol", "streams"), list(GATES))
def test_the_adapter_costs_nothing_over_chat_completions(
    server: Served, client: httpx.Client, protocol: str, streams: int
) -> None:
    wall, cpu = GATES[protocol, streams]
    _cpu_alarm(cpu)
    for warm in ("chat", protocol):
        _aggregate(client, server, warm, streams)

    def measure() -> list[tuple[Rate, Rate]]:
        rounds = paired(
            lambda: _aggregate(client, server, "chat", streams),
            lambda: _aggregate(client, server, protocol, streams),
            ROUNDS,
        )
        chat = statistics.median(r[0].tokens_per_s for r in rounds)
        other = statistics.median(r[1].tokens_per_s for r in rounds)
        print(
            f"\n{streams} stream(s), {TOKENS} tokens each: chat {chat:.0f} tok/s, {protocol} {other:.0f} tok/s"
        )
        return rounds

    def speed(rounds: list[tuple[Rate, Rate]]) -> float:
        return statistics.median(b.tokens_per_s / a.tokens_per_s for a, b in rounds)

    def work(rounds: list[tuple[Rate, Rate]]) -> float:
        return statistics.median(a.cpu_per_token / b.cpu_per_token for a, b in rounds)

    first = measure()
    enforce(wall, first_then_fresh(first, measure, speed))
    enforce(cpu, first_then_fresh(first, measure, work))
