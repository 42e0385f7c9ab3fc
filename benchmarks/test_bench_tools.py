"""What reading tool calls and reasoning costs a stream: one server serves the same model files under
two names, one with its output format read from its template (Qwen3.5's ``qwen3_xml``: the prompt
leaves the output inside ``<think>``, tools are offered, so every token goes through the segmenter's
reasoning mode with the call markers live) and one with ``--tool-format NAME=none`` (no segmenter:
the plain path). Greedy decoding: both generate the same tokens. The rounds alternate the two names
on that one process (the server holds one model at a time: each switch reloads it, and a short
untimed warm-up at the round's concurrency comes before each timed run), so the ratio compares the
parsing alone, not two processes (two servers measured a steady 1.26x "speed-up" at 8 streams).
Paired rounds, 1 and 8 concurrent streams.

Goal (full mode): parsing keeps >= 98 % of the plain path's tokens/s at 1 and at 8 streams. Quick
mode's alarm is on CPU per token (what a busy machine does not move; see test_bench_serve), with
slack: a segmenter gone quadratic or scanning the whole output per token costs far more.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks import cputime
from benchmarks.gates import QUICK, Gate, enforce, first_then_fresh, paired
from benchmarks.test_bench_serve import Rate, Served, _cpu_alarm, _free_port, _start
from tests.familyfix import build_family_model
from tests.modelfix import install
from tests.servefix import wait_until_up

MODEL = "bench/Thinker"
TOKENS = 128 if QUICK else 256
ROUNDS = 5 if QUICK else 9
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
GATES = {
    clients: (
        Gate(f"tools: {clients} stream(s), parsed / plain tokens/s", goal=0.98, alarm=None),
        Gate(f"tools: {clients} stream(s), plain / parsed CPU per token", goal=None, alarm=0.8),
    )
    for clients in (1, 8)
}


PLAIN = "bench/Thinker-plain"  # the same files, served with --tool-format PLAIN=none
WARM_UP_TOKENS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for both names."""
    hub = tmp_path_factory.mktemp("tools-bench") / "hub"
    files = build_family_model("qwen3_xml")
    install(hub, MODEL, files)
    install(hub, PLAIN, files)
    port = _free_port()
    cmd = [sys.executable, "-m", "mlxk", "serve", "--model", MODEL, "--port", str(port),
           "--tool-format", f"{PLAIN}=none"]  # fmt: skip
    proc, url = _start(cmd, hub, port)
    try:
        wait_until_up(url, proc)
        yield Served(url, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def _stream(client: httpx.Client, url: str, model: str, tokens: int, counts: list[int]) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [WEATHER],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        data = b"".join(response.iter_bytes())
    for line in data.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage"' in line:
            event = json.loads(line[6:])
            if event.get("usage") and not event.get("choices"):
                counts.append(int(event["usage"]["completion_tokens"]))


def _streams(client: httpx.Client, served: Served, model: str, clients: int, tokens: int) -> list[int]:
    counts: list[int] = []
    threads = [
        threading.Thread(target=_stream, args=(client, served.url, model, tokens, counts))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counts) == clients
    return counts


def _rate(client: httpx.Client, served: Served, model: str, clients: int) -> tuple[Rate, list[int]]:
    """Switches the server to ``model`` (untimed: the load and a short run at this concurrency),
    then times ``clients`` streams of TOKENS tokens."""
    _streams(client, served, model, clients, WARM_UP_TOKENS)
    cpu = cputime.tree_seconds(served.pid) if cputime.available() else 0.0
    began = time.perf_counter()
    counts = _streams(client, served, model, clients, TOKENS)
    elapsed = time.perf_counter() - began
    cpu = cputime.tree_seconds(served.pid) - cpu if cputime.available() else 0.0
    return Rate(sum(counts) / elapsed, cpu / sum(counts)), sorted(counts)


@pytest.mark.parametrize("clients", [1, 8])
def test_parsing_costs_at_most_two_percent(server: Served, clients: int) -> None:
    speed_gate, cpu_gate = GATES[clients]
    _cpu_alarm(cpu_gate)
    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=16)) as client:

        def measure() -> list[tuple[Rate, Rate]]:
            rounds = []
            for (a, counts_a), (b, counts_b) in paired(
                lambda: _rate(client, server, PLAIN, clients),
                lambda: _rate(client, server, MODEL, clients),
                ROUNDS,
            ):
                assert counts_a == counts_b  # greedy: the same tokens on both sides
                rounds.append((a, b))
            print(
                f"\ntools, {clients} stream(s), {TOKENS} tokens: plain "
                f"{statistics.median(a.tokens_per_s for a, _ in rounds):.0f} tok/s, parsed "
                f"{statistics.median(b.tokens_per_s for _, b in rounds):.0f} tok/s; CPU per token plain "
                f"{statistics.median(a.cpu_per_token for a, _ in rounds) * 1000:.3f} ms, parsed "
                f"{statistics.median(b.cpu_per_token for _, b in rounds) * 1000:.3f} ms"
            )
            return rounds

        def speed(rounds: list[tuple[Rate, Rate]]) -> float:
            return statistics.median(b.tokens_per_s / a.tokens_per_s for a, b in rounds)

        def work(rounds: list[tuple[Rate, Rate]]) -> float:
            return statistics.median(a.cpu_per_token / b.cpu_per_token for a, b in rounds)

        first = measure()
        enforce(speed_gate, first_then_fresh(first, measure, speed))
        enforce(cpu_gate, first_then_fresh(first, measure, work))
