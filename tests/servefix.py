"""Real ``mlxk serve`` processes (started, waited for, stopped by their id) and the in-process app,
for the end-to-end tests and the server benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from mlxk.server.app import App, ServerSettings

Client = Callable[..., Awaitable[httpx.Response]]


def wait_until_up(
    url: str, proc: subprocess.Popen[bytes], *, path: str = "/health", timeout: float = 60.0
) -> None:
    """Until ``GET url+path`` answers 200 (any answer when ``path`` is not /health); fails when the
    process exits first or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the server process exited"
        try:
            response = httpx.get(url + path, timeout=1)
            if response.status_code == 200 or path != "/health":
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)


def served(app: App, scenario: Callable[[App], Awaitable[Any]]) -> Any:
    """Run ``scenario(app)`` through ASGI in this process, with the app's threads started, then
    stop them."""

    async def main() -> Any:
        app.start()
        try:
            return await scenario(app)
        finally:
            await asyncio.to_thread(app.close)

    return asyncio.run(main())


def run_in_process(settings: ServerSettings, scenario: Callable[[Client], Awaitable[Any]]) -> Any:
    """Start the app (its engine and embedding threads), run ``scenario`` with a client speaking
    to it through httpx's ASGI transport, stop the threads; returns what the scenario returned."""

    async def main() -> Any:
        app = App(settings)
        app.start()
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:

                async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                    return await client.request(method, path, **kwargs)

                return await scenario(call)
        finally:
            await asyncio.to_thread(app.close)

    return asyncio.run(main())


class ServerProcess:
    """A real ``mlxk serve`` started on a free loopback port (``--port 0``); its stderr goes to a
    file (a pipe nobody reads would fill up and stall the server's logging)."""

    def __init__(self, proc: subprocess.Popen[bytes], envelope: dict[str, Any], log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.envelope = envelope
        self.url: str = envelope["data"]["url"]
        self.port: int = envelope["data"]["port"]
        self.log = log

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the server by its id and wait for it (SIGKILL if it outlives ``timeout``)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)


def serve_env(hub: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLXK_"))}
    env.update(HF_HUB_CACHE=str(hub), MLXK_CACHE_DIR=str(hub.parent / "mlxk"), HF_HUB_OFFLINE="1", **extra)
    return env


def start_server(
    hub: Path,
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
    ready: bool = True,
    descriptors: int | None = None,
    program: tuple[str, ...] = ("-m", "mlxk"),
) -> ServerProcess:
    """``mlxk serve --json --port 0 ARGS`` on ``hub``; waits for its start-up envelope and (with
    ``ready``) for /health to answer 200. Fails (the process stopped by its id) when it exits first.
    ``descriptors``: the soft limit on open files the process starts with; ``program``: what
    Python runs instead of ``-m mlxk`` (``-m tests.scripted SCRIPTS``: the CLI with scripted
    answers)."""

    def limit(soft: int = descriptors or 0) -> None:  # in the child, before it runs Python
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *program, "serve", "--json", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env if env is not None else serve_env(hub),
            preexec_fn=limit if descriptors is not None else None,
        )
    try:
        envelope = _envelope(proc, log)
        server = ServerProcess(proc, envelope, log)
        if ready:
            wait_until_up(server.url, proc)
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise
    return server


def _envelope(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"mlxk serve gave no start-up envelope: {log.read_text(errors='replace')}")
    envelope: dict[str, Any] = json.loads(line)
    if envelope["status"] != "success":
        proc.wait(timeout=30)
    return envelope


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` now (Linux: from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds; fails with ``what`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def metric(text: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels, exactly) in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line[len(name) + 1 :])
    return None
