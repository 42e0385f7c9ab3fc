"""Beyond one process: what sharding over 2 ranks and sharing the batch between them cost, and
what HAProxy with 2 replicas gives at 16 streams. Full mode only; the numbers are printed, not
gated: on this 2-core machine two ranks or two replicas share the same cores (no speed-up is
possible, the memory per rank is what halves), and the ring backend's loopback collectives take
milliseconds under load, so only the ratio of paired rounds says something.

- tokens/s of the tiny model: 1 process vs 2 ranks (tensor parallel), and on 2 ranks the step
  time with the batch changes shared (``LockstepRunner``) vs without (the issue's goal: <= 5 %);
- aggregate tokens/s of 16 streams: one ``mlxk serve`` vs HAProxy (docs/scale-out.md's config)
  before two;
- an idle group (``mlxk launch -n 2``): the CPU seconds of each process over 30 s, and the time of
  a one-token request that finds the group idle (the other ranks asleep between heartbeats).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.gates import QUICK
from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import ServerProcess, descendants, serve_env, start_server, wait_for
from tests.test_distributed import MLXK_LAUNCH, launch
from tests.test_scale_out_doc import (
    GUIDE,
    _free_port,
    _haproxy,
    _open_files_up_to_the_hard_limit,
    haproxy_config,
    on_ports,
)

pytestmark = pytest.mark.skipif(QUICK, reason="full mode only: printed numbers, no gate")
MODEL = "bench/Tiny"
LAUNCHER = Path(sys.executable).parent / "mlx.launch"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scale") / "hub"
    root.mkdir()
    install(root, MODEL, build_tiny_chat_model(max_position_embeddings=100_000))
    return root


def _rows(command: list[str], hub: Path) -> list[dict[str, Any]]:
    done = subprocess.run(command, capture_output=True, text=True, env=serve_env(hub), timeout=900)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows, done.stderr[-2000:]
    return rows


def test_one_rank_vs_two_and_the_cost_of_sharing(hub: Path) -> None:
    snapshot = str(next((hub / f"models--{MODEL.replace('/', '--')}" / "snapshots").iterdir()))
    for streams in (1, 4):
        args = ["-m", "benchmarks.lockstep_steps", snapshot, str(streams), "200", "5"]
        alone = _rows([sys.executable, *args], hub)
        ranks = _rows(
            [
                str(LAUNCHER),
                "-n",
                "2",
                "--backend",
                "ring",
                "--starting-port",
                str(_free_port()),
                "--",
                sys.executable,
                *args,
            ],
            hub,
        )
        one = statistics.median(streams * 200 / r["seconds"] for r in alone)
        plain = [r for r in ranks if r["mode"] == "plain"]
        shared = [r for r in ranks if r["mode"] == "lockstep"]
        two = statistics.median(streams * 200 / r["seconds"] for r in plain)
        two_shared = statistics.median(streams * 200 / r["seconds"] for r in shared)
        cost = statistics.median(
            (s["seconds"] / s["steps"]) / (p["seconds"] / p["steps"]) - 1
            for p, s in zip(plain, shared, strict=True)
        )
        print(
            f"\n{streams} stream(s): 1 process {one:.0f} tok/s; 2 ranks {two:.0f} tok/s, with the batch shared "
            f"{two_shared:.0f} tok/s; sharing adds {cost * 100:+.1f} % to a step (median of paired rounds)"
        )


@pytest.fixture(scope="module")
def servers(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    started = [start_server(hub, "--model", MODEL, "--no-ui", log=logs / f"r{i}.log") for i in (1, 2)]
    try:
        yield started
    finally:
        for server in started:
            server.stop(signal.SIGKILL)


async def _load(url: str, streams: int, seconds: float) -> float:
    """Aggregate completion tokens/s of ``streams`` clients streaming for ``seconds``."""
    tokens = 0
    deadline = time.monotonic() + seconds
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while time.monotonic() < deadline:
            async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"usage":{' in line:
                        tokens += json.loads(line[6:])["usage"]["completion_tokens"]

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=streams)) as http:
        await asyncio.gather(*(client(http) for _ in range(streams)))
    return tokens / (time.monotonic() - started)


def test_haproxy_with_two_replicas_vs_one_server_at_16_streams(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    haproxy = _haproxy()
    ports = {"frontend": _free_port(), "r1": servers[0].port, "r2": servers[1].port}
    config = tmp_path / "haproxy.cfg"
    config.write_text(on_ports(haproxy_config(GUIDE.read_text(encoding="utf-8")), ports))
    proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_open_files_up_to_the_hard_limit)  # fmt: skip
    front = f"http://127.0.0.1:{ports['frontend']}"
    try:
        wait_for(lambda: _up(front), "HAProxy")
        pairs = []
        for _ in range(3):  # paired rounds: one server, then both behind HAProxy
            one = asyncio.run(_load(servers[0].url, 16, 8))
            two = asyncio.run(_load(front, 16, 8))
            pairs.append((one, two))
        ratio = statistics.median(two / one for one, two in pairs)
        print(f"\n16 streams: one server {statistics.median(p[0] for p in pairs):.0f} tok/s, HAProxy + 2 replicas "
              f"{statistics.median(p[1] for p in pairs):.0f} tok/s ({ratio:.2f}x, median of paired rounds)")  # fmt: skip
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_idle_group_and_a_request_that_finds_it_idle(hub: Path, tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads CPU times from /proc")
    serve = ["serve", "--json", "--port", "0", "--model", MODEL, "--no-ui"]
    launched = launch(hub, tmp_path / "launch.log", command=serve, launcher=[*MLXK_LAUNCH, "-n", "2"])
    try:
        wait_for(lambda: _up(launched.url), "the group", 120)
        shim = next(p for p in descendants(launched.proc.pid) if b"mlxk.cli.launcher" in _cmdline(p))
        processes = {"mlx.launch": shim, "rank 0": launched.rank_pid(0), "rank 1": launched.rank_pid(1)}
        time.sleep(3)  # past the start-up's last requests
        before = {name: _cpu_s(pid) for name, pid in processes.items()}
        time.sleep(30)
        used = {name: _cpu_s(pid) - before[name] for name, pid in processes.items()}
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        gaps = random.Random(1)
        times = []
        with httpx.Client(timeout=60) as http:
            for _ in range(30):
                time.sleep(gaps.uniform(0.3, 1.3))
                started = time.perf_counter()
                assert http.post(launched.url + "/v1/chat/completions", json=body).status_code == 200
                times.append(time.perf_counter() - started)
        times.sort()
        print(
            "\nidle group, CPU s over 30 s: "
            + ", ".join(f"{name} {seconds:.2f}" for name, seconds in used.items())
            + f"; a 1-token request after 0.3-1.3 s idle: median {statistics.median(times) * 1000:.0f} ms, "
            f"p90 {times[26] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
        )
    finally:
        launched.stop()


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
