"""A bounded load test of ``mlxk serve`` on loopback: 64 clients at once, for 60 s (10 s in quick
mode), each sending chat completions back to back. Nothing but 200, 429 or 503 may come back;
p50/p99 latency of the successful requests is reported."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import httpx

from benchmarks.conftest import QUICK
from benchmarks.test_bench_serve import MODEL, Served, hub, server

__all__ = ["hub", "server"]  # the module fixtures: a tiny model, and a real `mlxk serve` on a free port

CLIENTS = 64
SECONDS = 10 if QUICK else 60


async def _client(url: str, until: float, statuses: Counter[int], latencies: list[float]) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 32,
        "temperature": 0.7,
    }
    async with httpx.AsyncClient(timeout=120) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            response = await client.post(url + "/v1/chat/completions", json=body)
            statuses[response.status_code] += 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 10)


def test_sixty_four_clients(server: Served) -> None:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def main() -> None:
        until = time.monotonic() + SECONDS
        await asyncio.gather(*(_client(server.url, until, statuses, latencies) for _ in range(CLIENTS)))

    asyncio.run(main())
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"\n{CLIENTS} clients for {SECONDS} s: {dict(statuses)}; "
        f"{len(latencies) / SECONDS:.1f} answers/s, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert set(statuses) <= {200, 429, 503} and statuses[200] > 0
    health = httpx.get(server.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["queue"] == 0
