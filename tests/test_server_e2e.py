"""``mlxk serve`` as a real process on a loopback port, driven by the official ``openai`` client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import install
from tests.servefix import wait_until_up

CHAT = "test/Tiny-Chat"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    def client(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, **kwargs)


@pytest.fixture
def served(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Iterator[Served]:
    install(hub, CHAT, tiny_models["chat"])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "serve", "--model", CHAT, "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, proc)
    yield Served(proc, url)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_startup_envelope(served: Served) -> None:
    assert served.proc.stdout is not None
    envelope = json.loads(served.proc.stdout.readline())
    assert envelope["command"] == "server" and envelope["data"]["url"] == served.url


def test_openai_client_chat_stream_usage_and_stop(served: Served) -> None:
    client = served.client()
    whole = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0
    )
    text = whole.choices[0].message.content
    assert (
        whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12 and len(text) == 12
    )
    parts, usage = [], None
    for chunk in client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == text and usage is not None and usage.total_tokens == whole.usage.total_tokens
    stopped = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=12,
        temperature=0,
        stop=[text[4:6]],
    )
    assert stopped.choices[0].message.content == text[: text.find(text[4:6])]
    assert stopped.choices[0].finish_reason == "stop"
    completion = client.completions.create(model=CHAT, prompt="Hello", max_tokens=5, temperature=0)
    assert len(completion.choices[0].text) == 5
    assert [m.id for m in client.models.list().data] == [CHAT]


def test_openai_client_sees_errors(served: Served) -> None:
    import openai

    client = served.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="org/not-cached", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], n=9)
    assert caught.value.body["param"] == "n"  # type: ignore[index]


def test_eight_streams_at_once_and_one_leaves(served: Served) -> None:
    client = served.client()
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            parts = []
            for n, chunk in enumerate(
                client.chat.completions.create(
                    model=CHAT,
                    messages=[{"role": "user", "content": "Hello"}],
                    max_tokens=60,
                    temperature=0,
                    stream=True,
                )
            ):
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if i == 0 and n == 3:
                    return  # this client goes away mid-stream
            results[i] = "".join(parts)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == 7 and len(set(results.values())) == 1  # greedy: all the same
    assert httpx.get(served.url + "/health").json()["queue"] == 0


def test_sigterm_ends_open_streams_and_exits(served: Served) -> None:
    with httpx.stream(
        "POST",
        served.url + "/v1/chat/completions",
        json={
            "model": CHAT,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 400,
            "stream": True,
        },
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        next(lines)
        served.proc.send_signal(signal.SIGTERM)
        for _ in lines:
            pass  # the stream ends (cleanly or cut), it does not hang
    assert served.proc.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url + "/health", timeout=2)
    assert os.path.exists(f"/proc/{served.proc.pid}") is False or served.proc.returncode is not None
