"""``mlxk serve``'s options refused at start with what they take (exit 1, validation_error), before
anything listens or loads; and the warning of a server that other machines can reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.servefix import start_server

REFUSED = [
    (("--port", "70000"), "--port takes a whole number from 0 to 65535, not '70000'"),
    (("--port=-1",), "--port takes a whole number from 0 to 65535, not '-1'"),
    (("--idle-timeout", "0"), "--idle-timeout takes a whole number from 1 to 3600, not '0'"),
    (("--max-body-bytes", "10"), "--max-body-bytes takes a whole number from 1024 to 2147483648, not '10'"),
    (("--max-tokens", "lots"), "--max-tokens takes a whole number from 1 to"),
    (("--distributed", "--backend", "pigeon"), "--backend takes one of any, "),
    (("--distributed",), "--distributed needs --model (the model to shard over the ranks)"),
    (("--single-model",), "--single-model needs --model"),
    (("--tool-format", "org/model"), "--tool-format takes MODEL=FORMAT with FORMAT one of "),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_options_say_what_they_take(cli: Any, hub: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("serve", "--json", *args)
    envelope = json.loads(result.stdout)
    assert result.exit_code == 1 and envelope["error"]["type"] == "validation_error"
    assert envelope["error"]["message"].startswith(message)


def test_a_server_on_every_interface_says_so(hub: Path, tmp_path: Path) -> None:
    server = start_server(hub, "--host", "0.0.0.0", log=tmp_path / "serve.log")
    try:
        assert server.envelope["data"]["host"] == "0.0.0.0"
    finally:
        assert server.stop() == 0
    assert "Warning: listening on 0.0.0.0: the server is reachable from other machines" in server.stderr()
