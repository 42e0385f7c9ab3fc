"""Where ``mlxk serve`` may listen: each reason it cannot is a clear error (exit 1, a
validation_error envelope naming the host and port), and an IPv6 loopback address serves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxk.errors import ValidationError
from mlxk.server.listener import bind_listener
from tests.privfix import without
from tests.servefix import serve_env, start_server


def refused(cli: Any, *args: str) -> str:
    result = cli("serve", "--json", *args)
    envelope = json.loads(result.stdout)
    assert result.exit_code == 1 and envelope["status"] == "error", result.stdout
    assert envelope["error"]["type"] == "validation_error"
    return str(envelope["error"]["message"])


def test_a_host_name_that_does_not_resolve(cli: Any, hub: Path) -> None:
    message = refused(cli, "--host", "no-such-host.invalid")
    assert message.startswith("--host 'no-such-host.invalid' is not an address of this machine (")


def test_an_address_of_another_machine(cli: Any, hub: Path) -> None:
    assert refused(cli, "--host", "192.0.2.1") == "192.0.2.1 is not an address of this machine"  # TEST-NET-1


def test_an_address_the_system_will_not_bind_says_why(cli: Any, hub: Path) -> None:
    """A link-local IPv6 address needs an interface (fe80::1%eth0); without one the kernel says
    the argument is invalid, and that is what the user reads."""
    assert refused(cli, "--host", "fe80::1", "--port", "8123") == (
        "cannot listen on [fe80::1]:8123: Invalid argument"
    )


def test_a_privileged_port_without_the_privilege(hub: Path) -> None:
    """Run without the capability to bind ports below 1024 (as root, it is dropped for the child)."""
    prefix = without("-net_bind_service")
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "mlxk", "serve", "--json", "--port", "80"],
        capture_output=True,
        env=serve_env(hub),
        timeout=120,
    )
    envelope = json.loads(result.stdout)
    assert result.returncode == 1 and envelope["error"]["type"] == "validation_error"
    assert (
        envelope["error"]["message"]
        == "not allowed to listen on 127.0.0.1:80 (ports below 1024 need privileges)"
    )


def test_the_ipv6_loopback_serves(hub: Path, tmp_path: Path) -> None:
    server = start_server(hub, "--host", "::1", log=tmp_path / "serve.log")
    try:
        assert server.url == f"http://[::1]:{server.port}"
        assert httpx.get(server.url + "/health", timeout=10).status_code in (200, 503)
    finally:
        assert server.stop() == 0


def test_a_port_is_shared_only_among_listeners_that_all_asked_for_it() -> None:
    """``--reuse-port``: every listener on the port asked for it, so both bind; one that did not ask
    is refused with the message that says how to share. The listeners as ``serve`` binds them, in
    process (starting servers would add nothing to what the kernel decides here)."""
    first = bind_listener("127.0.0.1", 0, reuse_port=True)
    try:
        port = first.getsockname()[1]
        second = bind_listener("127.0.0.1", port, reuse_port=True)
        try:
            assert second.getsockname() == ("127.0.0.1", port)
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            with pytest.raises(ValidationError) as refused:
                bind_listener("127.0.0.1", port)
            assert str(refused.value) == (
                f"127.0.0.1:{port} is already in use (another server?); stop it, choose another "
                "--port, or start every server on it with --reuse-port to share it"
            )
        finally:
            second.close()
    finally:
        first.close()
