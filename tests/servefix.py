"""Waiting for a server process to answer, for the end-to-end tests and the server benchmarks."""

from __future__ import annotations

import subprocess
import time

import httpx


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
