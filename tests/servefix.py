"""Waiting for a server process to answer, for the end-to-end tests and the server benchmarks."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
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
            await asyncio.to_thread(app.worker.stop)
            await asyncio.to_thread(app.embedder.stop)

    return asyncio.run(main())
