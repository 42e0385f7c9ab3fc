"""``mlxk serve`` under a mixed load: 200 idle keep-alive connections (reopened as the server closes
them), clients whose request bodies trickle in, and normal clients asking for chat completions,
for 60 s after a warm-up of 20 s (15 s after 10 s with ``MLXK_BENCH_QUICK=1``; ``MLXK_LOAD_SECONDS``
sets any length, e.g. 600 for the ten-minute memory run). Goals: ``/health`` answers every probe of
a new client throughout, normal clients get only 200 or 429, and the server's resident memory is
flat once warm (its allocator caches filled, the prompt cache full): the median of the last quarter
of the measured run at most 10 % above that of its first quarter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from benchmarks.conftest import QUICK
from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import ServerProcess, start_server

MODEL = "bench/Tiny"
SECONDS = float(os.environ.get("MLXK_LOAD_SECONDS") or (15 if QUICK else 60))
WARMUP_S = 10 if QUICK else 20
IDLE = 200
SLOW = 20  # clients trickling a body, a byte every SLOW_GAP_S
SLOW_GAP_S = 0.5
NORMAL = 8
PROBE_EVERY_S = 0.2
MAX_MEMORY_GROWTH = 1.10


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)
    slow: Counter[str] = field(default_factory=Counter)
    idle_reopened: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("load-mixed")
    hub = root / "hub"
    install(hub, MODEL, build_tiny_chat_model(max_position_embeddings=4096))
    started = start_server(hub, "--model", MODEL, "--max-queue", "64", log=root / "serve.log")
    yield started
    started.stop(signal.SIGTERM)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _idle(port: int, until: float, tally: Tally) -> None:
    """One idle keep-alive connection after a request, reopened whenever the server closes it."""
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    first = True
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            tally.idle_reopened += 0 if first else 1
            first = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(), timeout=max(until - time.monotonic(), 0.01))
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.1)
        finally:
            writer.close()


async def _slow(port: int, until: float, tally: Tally) -> None:
    """A chat request whose body arrives a byte at a time, until the server answers (408: too
    slow) or the run ends; its status line is read while the bytes go out."""
    body = b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}'
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(reader.readline())
        try:
            writer.write(head)
            for byte in body:
                if answer.done() or time.monotonic() >= until:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.wait({answer}, timeout=SLOW_GAP_S)
            await asyncio.wait({answer}, timeout=max(until - time.monotonic(), 0.01))
        except OSError:
            pass  # the server closed the connection while a byte went out: its answer says why
        finally:
            if answer.done() and not answer.exception():
                status = answer.result().split(b" ")
                tally.slow[status[1].decode() if len(status) > 1 else "closed"] += 1
            else:
                tally.slow["unanswered at the end"] += 1
                answer.cancel()
            writer.close()


async def _normal(url: str, until: float, tally: Tally, index: int) -> None:
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32, "temperature": 0.7}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            if index % 2:
                async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                    async for _ in r.aiter_lines():
                        pass
                    status = r.status_code
            else:
                status = (await client.post("/v1/chat/completions", json=body)).status_code
            tally.statuses[status] += 1
            if status == 200:
                tally.latencies.append(time.perf_counter() - started)
            else:
                await asyncio.sleep(0.1)


# /health from a new client (a new connection, raw HTTP/1.1) every interval, in a process of its
# own: the latencies are the server's, not those of this process's busy event loop
PROBER = """
import json, socket, sys, time
port, seconds, every, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
request = f"GET /health HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n".encode()
results = []
until = time.monotonic() + seconds
while time.monotonic() < until:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            status = sock.recv(64).split(b" ")[1].decode()
    except (OSError, IndexError) as exc:
        status = type(exc).__name__
    results.append([time.perf_counter() - started, status])
    time.sleep(every)
with open(out, "w") as f:
    json.dump(results, f)
"""


async def _probe(port: int, until: float, tally: Tally, out: Path) -> None:
    prober = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBER, str(port), str(until - time.monotonic()), str(PROBE_EVERY_S), str(out)
    )
    try:
        await asyncio.wait_for(prober.wait(), timeout=WARMUP_S + SECONDS + 60)
    finally:
        if prober.returncode is None:
            prober.kill()
            await prober.wait()
    for seconds, status in json.loads(out.read_text()):
        if status == "200":
            tally.probes.append(seconds)
        else:
            tally.probe_failures.append(str(status))


async def _memory(pid: int, begin: float, until: float, tally: Tally) -> None:
    await asyncio.sleep(max(begin - time.monotonic(), 0.0))
    while time.monotonic() < until:
        tally.rss.append((time.monotonic() - begin, _rss(pid)))
        await asyncio.sleep(1.0)


def test_health_answers_and_memory_stays_flat_under_mixed_load(server: ServerProcess, tmp_path: Path) -> None:
    tally = Tally()

    async def main() -> None:
        begin = time.monotonic() + WARMUP_S  # memory counts from here
        until = begin + SECONDS
        await asyncio.gather(
            *(_idle(server.port, until, tally) for _ in range(IDLE)),
            *(_slow(server.port, until, tally) for _ in range(SLOW)),
            *(_normal(server.url, until, tally, i) for i in range(NORMAL)),
            _probe(server.port, until, tally, tmp_path / "probes.json"),
            _memory(server.pid, begin, until, tally),
        )

    asyncio.run(main())
    quarter = max(1, len(tally.rss) // 4)
    warm = statistics.median(rss for _, rss in tally.rss[:quarter])
    last = statistics.median(rss for _, rss in tally.rss[-quarter:])
    latencies = sorted(tally.latencies)
    probes = sorted(tally.probes)
    step = max(1, len(tally.rss) // 10)
    print(
        f"\nmixed load for {WARMUP_S} + {SECONDS:.0f} s: {IDLE} idle connections (reopened {tally.idle_reopened} times), "
        f"{SLOW} slow bodies {dict(tally.slow)}, {NORMAL} normal clients {dict(tally.statuses)} "
        f"(p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms); "
        f"/health {len(probes)} probes, failures {dict(Counter(tally.probe_failures))}, "
        f"p50 {statistics.median(probes) * 1000:.1f} ms, max {probes[-1] * 1000:.0f} ms\n"
        f"RSS (MB) every {step} s: {[round(rss / 2**20) for _, rss in tally.rss[::step]]}; "
        f"first quarter {warm / 2**20:.0f} MB, last quarter {last / 2**20:.0f} MB ({last / warm:.3f}x)"
    )
    assert tally.probe_failures == [] and len(probes) > 0
    assert set(tally.statuses) <= {200, 429} and tally.statuses[200] > 0
    assert last <= warm * MAX_MEMORY_GROWTH
    health = httpx.get(server.url + "/health", timeout=5)
    assert health.status_code == 200
