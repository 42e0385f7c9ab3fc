"""What a rank other than 0 of ``serve --distributed`` does on its own: it reads the answers in the
format ``--tool-format`` names, as rank 0 does; it ends when rank 0 is lost, naming why; and a second
stop signal ends it at once. The two ranks are started without a launcher (as MLX documents for the
ring backend), so that each rank's exit and stderr are its own."""

from __future__ import annotations

import contextlib
import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import install
from tests.servefix import ServerProcess, alive, serve_env, start_server, wait_for
from tests.test_distributed import STOP_GRACE_S, _free_port_pair, stop_processes

CHAT = "test/Tiny-Chat"
FORMAT = ("--tool-format", f"{CHAT}=none")


@dataclass
class Ranks:
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    url: str

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def tail(self, rank: int) -> str:
        """The end of the rank's log, for a failure's message."""
        return self.log(rank)[-3000:]


def health(url: str) -> int:
    try:
        return httpx.get(url + "/health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def chat(url: str) -> dict[str, Any]:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 40,
        "temperature": 0,
    }
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    return hub


@contextlib.contextmanager
def started_ranks(cache: Path, tmp_path: Path, *, loaded: bool) -> Iterator[Ranks]:
    """Rank 0 and rank 1 of a ring group on this host, once rank 0 has announced its address
    (before either loads its shard) or, with ``loaded``, once rank 0 serves (both hold their shard)."""
    port = _free_port_pair()
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    serve = [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--distributed", "--model", CHAT]
    serve += [*FORMAT, "--group-timeout", "3"]
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    procs = []
    for rank, log in enumerate(logs):
        with log.open("wb") as stderr:
            # a crash in native code (MLX's backend) leaves every thread's Python stack in the log
            env = serve_env(cache, MLX_RANK=str(rank), MLX_HOSTFILE=str(ring), PYTHONFAULTHANDLER="1")
            procs.append(subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=stderr, env=env))
    try:
        stdout = procs[0].stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], 120)
        url = json.loads(stdout.readline())["data"]["url"] if ready else ""
        if loaded:
            wait_for(lambda: health(url) == 200, "rank 0 to load its shard", 120)
        yield Ranks(procs, logs, url)
    finally:
        # SIGTERM first (each rank drains and exits, and what coverage.py measured there is saved)
        stop_processes(None, {proc.pid for proc in procs if proc.poll() is None})
        for proc in procs:
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def ranks(cache: Path, tmp_path: Path) -> Iterator[Ranks]:
    with started_ranks(cache, tmp_path, loaded=True) as started:
        yield started


@pytest.fixture
def single(cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(cache, "--model", CHAT, *FORMAT, log=tmp_path / "single.log")
    try:
        yield server
    finally:
        server.stop(timeout=STOP_GRACE_S)


def test_a_group_with_a_tool_format_answers_as_one_process_does(ranks: Ranks, single: ServerProcess) -> None:
    mine, theirs = chat(ranks.url), chat(single.url)
    assert mine["choices"][0]["message"] == theirs["choices"][0]["message"]
    assert mine["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]


def kill_rank_0_then_rank_1_exits_1_saying_so(ranks: Ranks) -> None:
    ranks.procs[0].kill()
    ranks.procs[0].wait(timeout=30)
    assert ranks.procs[1].wait(timeout=60) == 1, ranks.tail(1)
    assert "mlxk serve: rank 1: the distributed group lost a rank (rank 0" in ranks.log(1)


def test_a_rank_that_loses_rank_0_exits_1_saying_so(ranks: Ranks) -> None:
    kill_rank_0_then_rank_1_exits_1_saying_so(ranks)


def test_a_rank_that_loses_rank_0_while_loading_its_shard_exits_1_saying_so(
    cache: Path, tmp_path: Path
) -> None:
    # rank 0 announces its address before it loads, so rank 1 is still loading (it cannot pass
    # mlx-lm's closing barrier without rank 0): the loss comes up inside the load, not in a step
    with started_ranks(cache, tmp_path, loaded=False) as ranks:
        kill_rank_0_then_rank_1_exits_1_saying_so(ranks)


def test_a_second_stop_signal_ends_a_rank_at_once(ranks: Ranks) -> None:
    rank1 = ranks.procs[1]
    # rank 0 serves once both ranks hold their shard; rank 1 takes stop signals a moment later
    wait_for(lambda: catches(rank1.pid, signal.SIGTERM), "rank 1 to take stop signals")
    rank1.send_signal(signal.SIGTERM)
    wait_for(lambda: "rank 1 stops with rank 0" in ranks.log(1), "rank 1 to take the first signal")
    assert rank1.poll() is None  # the first signal leaves it waiting for rank 0
    rank1.send_signal(signal.SIGTERM)
    assert rank1.wait(timeout=60) == 1, ranks.tail(1)
    wait_for(lambda: not alive(ranks.procs[0].pid), "rank 0 to find rank 1 gone", 60)
    assert ranks.procs[0].wait(timeout=30) == 1, ranks.tail(0)
    assert "lost a rank (rank 1" in ranks.log(0)
