"""``mlxk launch``: its input is checked before anything starts (one clear error, or the ``launch``
envelope), and its exit status says whether every rank ended well, which ``mlx.launch`` alone does
not (it exits 0 whatever its ranks did). Serving through it: tests/test_distributed.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servefix import serve_env

MLXK = [sys.executable, "-m", "mlxk"]


def _hostfile(tmp_path: Path, hosts: Any) -> str:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(hosts))
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "2"], "needs the command every rank runs after --"),
        (["-n", "2", "--"], "needs the command every rank runs after --"),
        (["-n", "2", "--", "run", "test/Tiny-Chat"], "starts serve on every rank"),
        (["--", "serve", "--model", "x"], "needs 2 or more ranks, not 1"),
        (["--hosts", "10.0.0.1,,10.0.0.2", "--", "serve"], "--hosts takes host names separated by commas"),
        (["-n", "0", "--", "serve"], "--repeat-hosts takes a whole number from 1 to 1024, not '0'"),
        (["-n", "2", "--backend", "tcp", "--", "serve"], "--backend takes one of ring, jaccl"),
        (["-n", "2", "--env", "A B=1", "--", "serve"], "--env takes KEY=VALUE"),
        (["-n", "2", "-p", "70000", "--", "serve"], "--starting-port takes a whole number from 1 to 65535"),
        (
            ["--hostfile", "/no/such/hosts.json", "--", "serve"],
            "--hostfile '/no/such/hosts.json': no such file",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_starts(
    cli: Any, hub: Path, args: list[str], message: str
) -> None:
    result = cli("launch", *args)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    envelope = cli("launch", "--json", *args).json()
    assert envelope["command"] == "launch" and envelope["status"] == "error"
    assert envelope["error"]["type"] == "validation_error" and message in envelope["error"]["message"]


def test_run_is_refused_by_name(cli: Any, hub: Path) -> None:
    result = cli("launch", "-n", "2", "--", "run", "test/Tiny-Chat", "hi")
    assert "not 'run'" in result.stderr  # only serve runs on a distributed group


def test_a_hostfile_is_read_as_mlx_launch_reads_it(cli: Any, hub: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    result = cli("launch", "--hostfile", str(broken), "--", "serve")
    assert result.exit_code == 1 and f"Failed to parse hostfile {broken}" in result.stderr
    one = _hostfile(tmp_path, [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}])
    assert "needs 2 or more ranks, not 1" in cli("launch", "--hostfile", one, "--", "serve").stderr
    two = _hostfile(tmp_path, [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2)
    # the hostfile lists every rank: -n (which mlx.launch would ignore beside it) is refused
    assert "without --hosts or -n" in cli("launch", "--hostfile", two, "-n", "2", "--", "serve").stderr


def test_serve_options_before_the_double_dash_get_a_hint(cli: Any, hub: Path) -> None:
    result = cli("launch", "-n", "2", "serve", "--model", "x")
    assert result.exit_code == 1
    assert 'The option "--model" does not exist: the command every rank runs goes after --' in result.stderr


def test_an_error_of_mlx_launch_itself_is_the_launch_error(hub: Path, tmp_path: Path) -> None:
    # the ring backend connects by IP: mlx.launch refuses hosts named only by ssh name, before any
    # rank starts (and would exit 0 on its own)
    hostfile = _hostfile(tmp_path, [{"ssh": "localhost"}, {"ssh": "localhost"}])
    proc = subprocess.run(
        [
            *MLXK,
            "launch",
            "--json",
            "--hostfile",
            hostfile,
            "--backend",
            "ring",
            "--",
            "serve",
            "--model",
            "x",
        ],
        capture_output=True,
        text=True,
        env=serve_env(hub),
        timeout=120,
    )
    assert proc.returncode == 1
    envelope = json.loads(proc.stdout)
    assert envelope["command"] == "launch" and envelope["error"]["type"] == "execution_error"
    assert (
        envelope["error"]["message"]
        == "mlx.launch: The ring backend requires IPs to be provided instead of hostnames"
    )


def test_ranks_that_fail_to_start_make_launch_exit_1(hub: Path) -> None:
    # both ranks join the group, find no model in their (empty) caches and exit 1; mlx.launch
    # itself would exit 0 here
    proc = subprocess.run(
        [
            *MLXK,
            "launch",
            "--json",
            "-n",
            "2",
            "--backend",
            "ring",
            "--",
            "serve",
            "--port",
            "0",
            "--model",
            "x",
        ],
        capture_output=True,
        text=True,
        env=serve_env(hub),
        timeout=180,
    )
    assert proc.returncode == 1, proc.stderr
    envelopes = [json.loads(line) for line in proc.stdout.splitlines()]
    assert envelopes and all(e["command"] == "server" and e["status"] == "error" for e in envelopes)
    assert "--distributed: cannot serve x" in envelopes[0]["error"]["message"]  # --distributed was added
    assert "Node with rank 0 exited with code 1" in proc.stderr
