"""``mlxk serve`` throughput over real HTTP: one stream vs eight at once (continuous batching).

A real ``mlxk serve`` process on a loopback port serving the tests' tiny llama; clients stream
chat completions with httpx from threads. Goals (medians of paired rounds): eight concurrent
streams give >= 3x the aggregate tokens/s of one stream.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.conftest import QUICK
from tests.modelfix import build_tiny_chat_model, install

MODEL = "bench/Tiny"
TOKENS = 128 if QUICK else 256
ROUNDS = 3 if QUICK else 5
MIN_BATCH_GAIN = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    hub = tmp_path_factory.mktemp("serve-bench") / "hub"
    install(hub, MODEL, build_tiny_chat_model(max_position_embeddings=4096))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(hub), MLXK_CACHE_DIR=str(hub.parent / "memo"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "serve", "--model", MODEL, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _stream(url: str, counts: list[int]) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if '"usage"' in line and '"choices":[]' in line:
                counts.append(int(line.split('"completion_tokens":')[1].split(",")[0]))


def _aggregate(url: str, clients: int) -> float:
    counts: list[int] = []
    threads = [threading.Thread(target=_stream, args=(url, counts)) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert len(counts) == clients and all(c == TOKENS for c in counts)
    return sum(counts) / elapsed


def test_eight_streams_beat_one(server: str) -> None:
    _aggregate(server, 2)  # warm up (compiled kernels for batch shapes)
    gains, singles, eights = [], [], []
    for _ in range(ROUNDS):
        one = _aggregate(server, 1)
        eight = _aggregate(server, 8)
        singles.append(one)
        eights.append(eight)
        gains.append(eight / one)
    print(
        f"\nserve, {TOKENS} tokens per stream: 1 stream {statistics.median(singles):.0f} tok/s, "
        f"8 streams {statistics.median(eights):.0f} tok/s aggregate ({statistics.median(gains):.2f}x)"
    )
    assert statistics.median(gains) >= MIN_BATCH_GAIN
