"""``mlxk serve --distributed`` on two ranks of MLX's ring backend over loopback, started by
``mlx.launch`` as a user would: the tiny model is sharded tensor-parallel, rank 0 serves HTTP, and
the answers equal the single-process server's. A rank that dies ends the service within a bounded
time; a model missing on one rank stops the start, naming that host."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import ServerProcess, alive, descendants, metric, serve_env, start_server, wait_for
from tests.toolfix import WEATHER

CHAT, LONG, PIPELINE = "test/Tiny-Chat", "test/Tiny-Long", "test/Tiny-Pipeline"
LAUNCHER = Path(sys.executable).parent / "mlx.launch"
MLXK_LAUNCH = [sys.executable, "-m", "mlxk", "launch"]
HELLO = [{"role": "user", "content": "Hello"}]
ENDLESS = 500_000  # tokens: a generation still running whenever the test needs it to
# a stream of each protocol, by route (greedy: a sampled end-of-turn token could end one early)
GREEDY = {"model": LONG, "temperature": 0, "stream": True}
STREAMS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {**GREEDY, "messages": HELLO, "max_tokens": ENDLESS},
    "/v1/messages": {**GREEDY, "messages": HELLO, "max_tokens": ENDLESS},
    "/v1/responses": {**GREEDY, "input": "Hello", "max_output_tokens": ENDLESS},
}


@dataclass
class Launched:
    """``mlx.launch -n 2 --backend ring -- mlxk serve --distributed ...``: the launcher, and rank
    0's start-up envelope (its URL and pid)."""

    proc: subprocess.Popen[bytes]
    log: Path
    envelope: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.envelope["data"]["url"])

    def rank_pid(self, rank: int) -> int:
        for pid in descendants(self.proc.pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"MLX_RANK={rank}".encode() in environ and b"mlxk" in command:
                return pid
        raise AssertionError(f"no process of rank {rank}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """End the ranks and the launcher, by their ids: SIGTERM first (a rank drains and exits, and
        coverage.py saves what it measured there), SIGKILL for whatever outlives ``STOP_GRACE_S``."""
        stop_processes(self.proc, descendants(self.proc.pid))
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe is not None:
                pipe.close()


STOP_GRACE_S = 10.0  # how long the cleanup waits for the processes a SIGTERM asked to end


def stop_processes(launcher: subprocess.Popen[bytes] | None, ranks: set[int]) -> None:
    """SIGTERM to ``ranks`` (rank 0 drains and exits, the others leave when it tells them to), then
    to ``launcher`` once they are gone (a launcher ended first would leave the ranks' output pipes
    closed); SIGKILL to everything still running after ``STOP_GRACE_S``. Never waits longer."""
    deadline = time.monotonic() + STOP_GRACE_S
    _signal(ranks, signal.SIGTERM)
    _wait(lambda: not any(alive(pid) for pid in ranks), deadline)
    if launcher is not None and launcher.poll() is None:
        ranks |= descendants(launcher.pid)  # anything started meanwhile
        _signal({launcher.pid}, signal.SIGTERM)
        _wait(lambda: launcher.poll() is not None, deadline)
    if launcher is not None:
        ranks |= descendants(launcher.pid)
    _signal({pid for pid in ranks if alive(pid)}, signal.SIGKILL)
    if launcher is not None and launcher.poll() is None:
        launcher.kill()
    if launcher is not None:
        launcher.wait(timeout=30)


def _signal(pids: set[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait(condition: Callable[[], bool], deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def launch(
    hub: Path, log: Path, *args: str, command: list[str] | None = None, launcher: list[str] | None = None
) -> Launched:
    """Both ranks on loopback; waits for an envelope on the launcher's stdout (rank 0's, or the
    error every rank gives). ``launcher``: what starts the ranks instead of ``mlx.launch -n 2``
    (the rank command follows it)."""
    serve = command or [
        sys.executable,
        "-m",
        "mlxk",
        "serve",
        "--json",
        "--port",
        "0",
        "--distributed",
        *args,
    ]
    ring = ["--backend", "ring", "--starting-port", str(_free_port_pair())]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*(launcher or [str(LAUNCHER), "-n", "2"]), *ring, "--", *serve],
            stdout=subprocess.PIPE,
            stderr=stderr,
            # a pipe that stays open: at the end of its stdin, mlx.launch's loop would spin a core
            stdin=subprocess.PIPE,
            env=serve_env(hub),
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else b""
    if not line:
        stop_processes(proc, descendants(proc.pid))
        proc.stdout.close()
        raise AssertionError(f"no envelope from the launcher: {log.read_text(errors='replace')}")
    return Launched(proc, log, json.loads(line))


def _free_port_pair() -> int:
    """A port whose next one is free too (the ring backend listens on consecutive ports)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    install(hub, LONG, build_tiny_chat_model(max_position_embeddings=10_000_000))
    return hub


@pytest.fixture
def group(cache: Path, tmp_path: Path) -> Iterator[Launched]:
    launched = launch(cache, tmp_path / "launch.log", "--model", CHAT)
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        yield launched
    finally:
        launched.stop()


@pytest.fixture
def single(cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(cache, "--model", CHAT, log=tmp_path / "single.log")
    try:
        yield server
    finally:
        server.stop(timeout=STOP_GRACE_S)  # SIGTERM (its coverage is saved), SIGKILL if it outlives that


def _health(url: str) -> int:
    try:
        return httpx.get(url + "/health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _chat(url: str, **extra: Any) -> dict[str, Any]:
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 40, "temperature": 0, **extra}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _streamed(
    url: str,
    content: str = "Hello",
    max_tokens: int = 40,
    started: threading.Event | None = None,
    model: str = CHAT,
) -> tuple[str, str | None]:
    """The text of a streamed answer and its finish reason (``started``: set at its first text)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    text, finish = [], None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            text.append(choice["delta"].get("content") or "")
            if started is not None and text[-1]:
                started.set()
            finish = choice["finish_reason"] or finish
    return "".join(text), finish


def test_two_ranks_answer_as_one_process_does(group: Launched, single: ServerProcess) -> None:
    health = httpx.get(group.url + "/health").json()
    assert health["group"] == {"size": 2, "backend": "ring", "rank": 0}
    text = httpx.get(group.url + "/metrics").text
    assert metric(text, "mlxk_group_size") == 2 and metric(text, 'mlxk_group_info{backend="ring"}') == 1

    alone = _chat(single.url)["choices"][0]["message"]["content"]
    sharded = _chat(group.url)
    assert sharded["choices"][0]["message"]["content"] == alone
    assert sharded["usage"]["completion_tokens"] == 40
    assert _streamed(group.url) == (alone, "length")
    tools = {"tools": [WEATHER], "tool_choice": "auto"}  # a request with tools crosses to rank 1 whole
    assert _chat(group.url, **tools)["choices"][0] == _chat(single.url, **tools)["choices"][0]
    seeded = {"temperature": 0.9, "seed": 7}  # sampling on both ranks picks the same tokens
    assert (
        _chat(group.url, **seeded)["choices"][0]["message"]
        == _chat(single.url, **seeded)["choices"][0]["message"]
    )


def test_four_concurrent_streams_on_two_ranks(group: Launched, single: ServerProcess) -> None:
    prompts = ["Hello", "What is MLX?", "Tell me a story", "abc"]
    expected = {p: _streamed(single.url, p, 30) for p in prompts}  # one at a time, on one process
    results: dict[str, tuple[str, str | None]] = {}
    errors: list[BaseException] = []

    def stream(prompt: str) -> None:
        try:
            results[prompt] = _streamed(group.url, prompt, 30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert all(finish == "length" for _text, finish in results.values())
    # batched on the ranks (a batch sums in another order than one sequence): the same first tokens
    assert all(results[p][0][:8] == expected[p][0][:8] for p in prompts), (results, expected)
    assert _chat(group.url)["usage"]["completion_tokens"] == 40  # the group serves on


def test_a_rank_that_dies_ends_the_service_within_a_bounded_time(cache: Path, tmp_path: Path) -> None:
    # MLX raises for a lost peer in most places, but a step already queued may wait for ever: the
    # group timeout bounds that (60 s by default; 5 here)
    launched = launch(cache, tmp_path / "launch.log", "--model", LONG, "--group-timeout", "5")
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        rank0 = int(launched.envelope["data"]["pid"])
        body = {"model": LONG, "messages": HELLO, "max_tokens": ENDLESS, "temperature": 0}
        whole: list[httpx.Response] = []
        streamed: dict[str, list[str]] = {}  # each protocol's stream, line by line
        started = {path: threading.Event() for path in STREAMS}

        def answer() -> None:  # a whole answer, open when the rank dies
            whole.append(httpx.post(launched.url + "/v1/chat/completions", json=body, timeout=120))

        def stream(path: str) -> None:
            lines = streamed.setdefault(path, [])
            with httpx.stream("POST", launched.url + path, json=STREAMS[path], timeout=120) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    started[path].set()

        readers = [threading.Thread(target=answer)]
        readers[0].start()
        wait_for(lambda: httpx.get(launched.url + "/health").json()["queue"] == 1, "the answer to start")
        readers += [threading.Thread(target=stream, args=(path,)) for path in STREAMS]
        for reader in readers[1:]:
            reader.start()
        assert all(event.wait(60) for event in started.values())
        os.kill(launched.rank_pid(1), signal.SIGKILL)
        for reader in readers:
            reader.join(60)
            assert not reader.is_alive(), "an open request never ended"
        # the whole answer: 503 with OpenAI's error object
        assert whole[0].status_code == 503
        assert whole[0].json()["error"]["code"] == "group_lost"
        # each stream (its 200 sent long ago) ends with its protocol's error event: not cut short,
        # and not ended as if whole
        chat = streamed["/v1/chat/completions"]
        assert "data: [DONE]" not in chat
        error = json.loads(chat[-2][6:])["error"]  # the last event (and the blank line after it)
        assert error["type"] == "server_error" and error["code"] == "group_lost"
        assert "lost a rank (rank 1" in error["message"]
        messages = streamed["/v1/messages"]
        assert messages[-3] == "event: error"
        assert json.loads(messages[-2][6:])["error"]["type"] == "overloaded_error"  # Anthropic's 503
        responses = streamed["/v1/responses"]
        assert responses[-3] == "event: response.failed"
        assert json.loads(responses[-2][6:])["response"]["error"]["code"] == "group_lost"
        assert _health(launched.url) in (503, 0)  # refused, or the process is gone already
        wait_for(lambda: not alive(rank0), "rank 0 to exit", 60)
        launched.proc.wait(timeout=60)
        log = launched.stderr()
        assert "lost a rank (rank 1" in log
        assert "Node with rank 0 exited with code 1" in log
    finally:
        launched.stop()


def test_a_model_missing_on_one_rank_stops_the_start_naming_that_host(cache: Path, tmp_path: Path) -> None:
    empty = tmp_path / "rank1-hub"
    empty.mkdir()
    # each rank reads its own cache: rank 1's has no model (a host where it was never pulled)
    script = f'if [ "$MLX_RANK" = 1 ]; then export HF_HUB_CACHE={empty}; fi; exec "$@"'
    serve = [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--distributed", "--model", CHAT]
    launched = launch(cache, tmp_path / "launch.log", command=["sh", "-c", script, "sh", *serve])
    try:
        launched.proc.wait(timeout=120)
        envelope = launched.envelope
        assert envelope["status"] == "error"
        message = envelope["error"]["message"]
        assert f"{socket.gethostname()} (rank 1)" in message and CHAT in message
        assert "(rank 0)" not in message  # rank 0 has it: only the host with the problem is named
        # neither rank serves: each exits non-zero (or is ended by the launcher once the other has)
        assert re.search(r"rank 0 exited with code -?[1-9]", launched.stderr())
        assert re.search(r"rank 1 exited with code -?[1-9]", launched.stderr())
    finally:
        launched.stop()


def test_a_stop_signal_to_every_rank_drains_then_all_exit_0(cache: Path, tmp_path: Path) -> None:
    tokens = 300  # several seconds on two ranks here: still running when the signals come
    launched = launch(cache, tmp_path / "launch.log", "--model", LONG, "--drain-timeout", "600")
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        ranks = [launched.rank_pid(0), launched.rank_pid(1)]
        answers: list[tuple[str, str | None]] = []
        started = threading.Event()

        def stream() -> None:
            answers.append(_streamed(launched.url, "Hello", tokens, started, LONG))

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        for pid in ranks:  # as Ctrl-C on mlx.launch's terminal, or an orchestrator, does
            os.kill(pid, signal.SIGTERM)
        reader.join(120)
        text, finish = answers[0]
        assert finish == "length" and len(text) == tokens  # the open stream ran to its end (a char a token)
        launched.proc.wait(timeout=60)
        assert "exited with code" not in launched.stderr()  # the launcher reports only failures
        assert "rank 1 stops with rank 0" in launched.stderr()
    finally:
        launched.stop()


def test_mlxk_launch_serves_on_the_hosts_of_a_hostfile_and_a_sigterm_drains_every_rank(
    cache: Path, tmp_path: Path
) -> None:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))  # both on this machine
    serve = [
        "serve",
        "--json",
        "--port",
        "0",
        "--model",
        LONG,
        "--drain-timeout",
        "600",
    ]  # --distributed: added
    launched = launch(
        cache, tmp_path / "launch.log", command=serve, launcher=[*MLXK_LAUNCH, "--hostfile", str(hostfile)]
    )
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        assert httpx.get(launched.url + "/health").json()["group"] == {
            "size": 2,
            "backend": "ring",
            "rank": 0,
        }
        assert _chat(launched.url, model=LONG)["usage"]["completion_tokens"] == 40
        answers: list[tuple[str, str | None]] = []
        started = threading.Event()
        reader = threading.Thread(
            target=lambda: answers.append(_streamed(launched.url, "Hi", 300, started, LONG))
        )
        reader.start()
        assert started.wait(60)
        # the way an orchestrator stops it: mlxk launch passes the signal to every rank, which drain
        os.kill(launched.proc.pid, signal.SIGTERM)
        reader.join(120)
        text, finish = answers[0]
        assert finish == "length" and len(text) == 300  # the open stream ran to its end
        assert launched.proc.wait(timeout=60) == 0  # every rank exited 0
        assert "rank 1 stops with rank 0" in launched.stderr()
    finally:
        launched.stop()


def test_a_rank_that_hangs_while_idle_ends_the_service(cache: Path, tmp_path: Path) -> None:
    # nothing is generated: only the heartbeat of the idle group can find that rank 1 stopped
    # answering (as a host cut off the network would), within the group timeout
    serve = ["serve", "--json", "--port", "0", "--model", CHAT, "--group-timeout", "3"]
    launched = launch(cache, tmp_path / "launch.log", command=serve, launcher=[*MLXK_LAUNCH, "-n", "2"])
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        rank0, rank1 = launched.rank_pid(0), launched.rank_pid(1)
        os.kill(rank1, signal.SIGSTOP)
        wait_for(lambda: _health(launched.url) != 200, "rank 0 to find the hung rank", 60)
        assert _health(launched.url) in (503, 0)  # refused, or the process is gone already
        wait_for(lambda: not alive(rank0), "rank 0 to exit", 60)
        # mlx.launch waits for a stopped rank to end for ever: let it go on, to find rank 0 gone
        # and exit by itself (SIGKILL if it has not within STOP_GRACE_S)
        os.kill(rank1, signal.SIGCONT)
        stop_processes(None, {rank1})
        assert launched.proc.wait(timeout=60) == 1  # mlxk launch: a rank failed
        log = launched.stderr()
        assert "lost a rank (rank 1" in log and "made no progress for 3 s" in log
        assert "Node with rank 0 exited with code 1" in log
    finally:
        launched.stop()


def test_rank_0_finds_a_rank_that_died_while_idle_by_itself(cache: Path, tmp_path: Path) -> None:
    # the ranks started without a launcher (as MLX documents for the ring backend), so that none
    # ends rank 0 when rank 1 exits: rank 0's own heartbeat has to find it
    port = _free_port_pair()
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    # the group timeout bounds the watchdog's path (the default, 60 s, would take the whole wait below
    # where the ring backend does not raise for the dead peer)
    serve = [
        *[sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--distributed"],
        *["--model", CHAT, "--group-timeout", "5"],
    ]
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    ranks = []
    for rank, log in enumerate(logs):
        with log.open("wb") as stderr:
            env = serve_env(cache, MLX_RANK=str(rank), MLX_HOSTFILE=str(ring))
            ranks.append(subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=stderr, env=env))
    try:
        stdout = ranks[0].stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], 120)
        url = json.loads(stdout.readline())["data"]["url"] if ready else ""
        wait_for(lambda: _health(url) == 200, "rank 0 to load its shard", 120)
        ranks[1].kill()
        ranks[1].wait(timeout=30)
        assert ranks[0].wait(timeout=60) == 1  # with no request to send: found by the heartbeat
        assert "lost a rank (rank 1" in logs[0].read_text(errors="replace")
    finally:
        stop_processes(None, {proc.pid for proc in ranks if proc.poll() is None})
        for proc in ranks:
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_model_sharded_as_a_pipeline_answers_as_one_process_does(cache: Path, tmp_path: Path) -> None:
    from mlx_lm.models import qwen3_next

    # the family mlx-lm can only split by layers: its model has pipeline() and no shard()
    assert hasattr(qwen3_next.Qwen3NextModel, "pipeline") and not hasattr(qwen3_next.Model, "shard")
    install(cache, PIPELINE, build_tiny_chat_model(pipeline_only=True))
    single = start_server(cache, "--model", PIPELINE, log=tmp_path / "single.log")
    try:
        prompts = ["Hello", "What is MLX?", "abc"]
        alone = {p: _streamed(single.url, p, 30, model=PIPELINE) for p in prompts}
    finally:
        single.stop(timeout=STOP_GRACE_S)
    launched = launch(cache, tmp_path / "launch.log", "--model", PIPELINE)
    try:
        wait_for(lambda: _health(launched.url) == 200, "the ranks to load their layers", 120)
        assert _streamed(launched.url, "Hello", 30, model=PIPELINE) == alone["Hello"]
        results: dict[str, tuple[str, str | None]] = {}
        threads = [
            threading.Thread(
                target=lambda p=p: results.__setitem__(p, _streamed(launched.url, p, 30, model=PIPELINE))
            )
            for p in prompts
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # batched on the ranks: the same first tokens (a batch sums in another order than one sequence)
        assert all(results[p][1] == "length" and results[p][0][:8] == alone[p][0][:8] for p in prompts)
    finally:
        launched.stop()
