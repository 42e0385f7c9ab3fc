"""``mlxk serve`` against clients that hold connections, trickle bytes, send broken bodies or poke
at ``/metrics``: it keeps answering, closes what sends nothing, and counts without being steered.
Real processes on loopback; every socket is closed and every server stopped by its id."""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.modelfix import install
from tests.servefix import ServerProcess, descendants, metric, start_server

CHAT = "test/Tiny-Chat"
KEY = "sesame"
AUTH = {"authorization": f"Bearer {KEY}"}
HOLDERS = 1_200  # more connections than Granian's default limit (1,024) and many systems' descriptor limit
# a line of the Prometheus text format: a comment, or a sample whose label values are quoted and escaped
SAMPLE = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="([^"\\\n]|\\[\\"n])*",?)*\})? -?[0-9.e+]+|[-+]Inf|NaN'
)


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    return hub


@pytest.fixture
def server(cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    started = start_server(cache, "--model", CHAT, "--api-key", KEY, log=tmp_path / "serve.log")
    yield started
    started.stop()


def _connect(port: int, timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _head(port: int, method: str, path: str, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one whole response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"the connection closed after {data!r}"
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        part = sock.recv(65536)
        assert part, "the connection closed mid-body"
        body += part
    return int(head.split()[1]), body


def _closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server closes the connection (True) or the socket's timeout passes (False)."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_idle_and_trickling_connections_never_starve_health(cache: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HOLDERS * 2 + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"this test needs {wanted} descriptors; the hard limit is {hard}")
    # idle connections live a minute here: a server that cannot serve them all at once would keep
    # the later clients waiting that long, far beyond the bound on each answer below
    server = start_server(
        cache, "--model", CHAT, "--api-key", KEY, "--idle-timeout", "60", log=tmp_path / "s.log"
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held: list[socket.socket] = []
    try:
        for i in range(HOLDERS):
            sock = _connect(server.port, timeout=20)
            held.append(sock)
            if i % 2:  # a body that trickles in (with the key: it gets past the 401 and is read)
                extra = f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n"
                sock.sendall(_head(server.port, "POST", "/v1/chat/completions", extra) + b'{"mo')
            else:  # an idle keep-alive connection after one answered request
                sock.sendall(_head(server.port, "GET", "/health"))
                assert _response(sock)[0] == 200
        health = httpx.get(server.url + "/health", timeout=20)
        assert health.status_code == 200
        chat = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            headers=AUTH,
            timeout=30,
        )
        assert chat.status_code == 200
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        server.stop()


def test_the_descriptor_limit_is_raised_at_start(cache: Path, tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if wanted <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    # with a model: mlx-lm, loaded with it, sets limits of its own that must not undo ours
    server = start_server(cache, "--model", CHAT, log=tmp_path / "serve.log", descriptors=256)
    try:
        for pid in {server.pid, *descendants(server.pid)}:  # whichever process serves
            limits = Path(f"/proc/{pid}/limits").read_text()
            soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
            assert int(soft) == wanted
    finally:
        server.stop()


LIMITS_PROBE = """
import json, resource, sys
from mlxk.server.limits import raise_descriptor_limit
resource.setrlimit(resource.RLIMIT_NOFILE, tuple(json.loads(sys.argv[1])))
given = raise_descriptor_limit(wanted=int(sys.argv[2]))
print(json.dumps([given, *resource.getrlimit(resource.RLIMIT_NOFILE)]))
"""


@pytest.mark.parametrize(
    ("start", "wanted", "after"),
    [
        ((2_000, 2_000), 1_000, [2_000, 2_000, 2_000]),  # above what it wants: kept, never lowered
        ((256, 1_000), 65_536, [1_000, 1_000, 1_000]),  # wants more than the hard limit: up to it only
    ],
)
def test_the_descriptor_limit_is_only_ever_raised(
    start: tuple[int, int], wanted: int, after: list[int]
) -> None:
    """[the limit it returns, soft, hard] after the call, in a process of its own (the limits are
    the process's). Both starts are at or below any hard limit a test process has (importing mlx-lm
    lowers it to 4,096): setting a lower hard limit needs no privilege."""
    probe = subprocess.run(
        [sys.executable, "-c", LIMITS_PROBE, json.dumps(start), str(wanted)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == after


def test_idle_slow_and_stalled_connections_are_closed(cache: Path, tmp_path: Path) -> None:
    server = start_server(
        cache, "--idle-timeout", "2", "--body-timeout", "3", log=tmp_path / "serve.log", ready=False
    )
    try:
        with _connect(server.port) as idle:  # keep-alive after a request, then nothing
            idle.sendall(_head(server.port, "GET", "/health"))
            assert _response(idle)[0] in (200, 503)
            assert _closed_by_server(idle)
        with _connect(server.port) as slow_head:  # headers that never end
            slow_head.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _closed_by_server(slow_head)
        with _connect(server.port) as slow_body:  # a body that stops coming
            slow_body.sendall(_head(server.port, "POST", "/v1/completions", "Content-Length: 100\r\n") + b"{")
            status, body = _response(slow_body)
            assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
            assert _closed_by_server(slow_body)
    finally:
        server.stop()


def test_a_malformed_chunked_body_is_a_400_the_app_counts(server: ServerProcess) -> None:
    with _connect(server.port) as sock:
        sock.sendall(
            _head(
                server.port,
                "POST",
                "/v1/chat/completions",
                f"Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n",
            )
            + b"zz\r\n{}\r\n0\r\n\r\n"
        )
        status, body = _response(sock)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_body"
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert metric(text, 'mlxk_requests_total{route="/v1/chat/completions",status="400"}') == 1
    assert "POST /v1/chat/completions 400" in server.stderr()


def test_metrics_labels_are_a_fixed_set_and_escaped(server: ServerProcess) -> None:
    # percent-encoded: the server sees the decoded path, quotes and newlines included
    hostile = [quote(p) for p in ('/x"} 1\nmlxk_injected_total 1\n#', "/v1/models\\", "/\u00e9t\u00e9")]
    paths = hostile + [f"/probe/{i}" for i in range(300)]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i, path in enumerate(paths):
            client.get(path, headers=AUTH if i % 2 else {})  # 404s, and 401s without the key
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    lines = text.splitlines()
    assert all(line.startswith("# ") or SAMPLE.fullmatch(line) for line in lines), [
        line for line in lines if not (line.startswith("# ") or SAMPLE.fullmatch(line))
    ]
    assert not any(line.startswith("mlxk_injected_total") for line in lines)
    series = [line for line in lines if line.startswith("mlxk_requests_total{")]
    assert metric(text, 'mlxk_requests_total{route="unmatched",status="401"}') == 152
    assert metric(text, 'mlxk_requests_total{route="unmatched",status="404"}') == 151
    assert len(series) <= 4


def test_time_to_first_token_is_counted_for_every_generation(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        for i in range(6):
            if i % 2:
                with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                    assert r.status_code == 200 and list(r.iter_lines())[-2:] == ["data: [DONE]", ""]
            else:
                assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert (
            client.post(
                "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 3, "temperature": 0}
            ).status_code
            == 200
        )
        text = client.get("/metrics").text
    assert metric(text, "mlxk_time_to_first_token_seconds_count") == 8
    assert metric(text, 'mlxk_time_to_first_token_seconds_bucket{le="+Inf"}') == 8
    buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "_seconds_bucket{" in line]
    assert buckets == sorted(buckets)
    assert metric(text, 'mlxk_generations_total{finish_reason="length"}') == 8
    assert metric(text, "mlxk_completion_tokens_total") == 6 * 6 + 2 * 3


def test_a_stop_does_not_wait_for_a_trickling_body(server: ServerProcess) -> None:
    with _connect(server.port) as sock:
        extra = f"Authorization: Bearer {KEY}\r\nContent-Length: 50\r\n"
        sock.sendall(_head(server.port, "POST", "/v1/completions", extra) + b"{")
        assert server.stop(signal.SIGTERM) == 0
        status, body = _response(sock)
    assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
