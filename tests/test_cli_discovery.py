"""How a newcomer finds the commands: every way of asking lists every command and exits 0."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from mlxk.cli.app import COMMANDS

# what a user can type, and the command each name runs
TYPED = {name: ("serve" if name == "server" else name) for name in COMMANDS}


def listed_commands(text: str) -> dict[str, str]:
    """name -> the rest of its line, from the "Available commands:" section."""
    lines = text.splitlines()
    start = lines.index("Available commands:") + 1
    found = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        name, _, rest = line.strip().partition(" ")
        found[name] = rest.strip()
    return found


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["commands"], ["help"], ["--no-ansi"]])
def test_every_way_of_asking_lists_every_command(cli: Any, hub: Any, argv: list[str]) -> None:
    result = cli(*argv)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    listed = listed_commands(result.stdout)
    for name in TYPED.values():
        assert name in listed, (name, result.stdout)
    assert listed["serve"].startswith("[server] ")  # the alias is shown where its command is
    assert {"help", "commands"} <= listed.keys()


@pytest.mark.parametrize("name", sorted(TYPED))
def test_help_for_each_command(cli: Any, hub: Any, name: str) -> None:
    result = cli("help", name)
    assert result.exit_code == 0, result.stderr
    assert f"  {TYPED[name]} [options]" in result.stdout  # the usage of the command it runs
    assert cli(name, "--help").stdout == result.stdout


def test_server_is_serve_with_its_json_name(cli: Any, hub: Any) -> None:
    result = cli("server", "--no-such-option", "--json")
    assert result.exit_code == 1
    envelope = result.json()
    assert envelope["command"] == "server" and envelope["error"]["type"] == "validation_error"


def test_unknown_command_is_a_clean_error(cli: Any, hub: Any) -> None:
    result = cli("help", "nope")
    assert result.exit_code == 1
    assert 'The command "nope" does not exist.' in result.stderr and "Traceback" not in result.stderr


def test_bare_mlxk_as_a_process(hub: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "mlxk"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert set(TYPED.values()) <= listed_commands(proc.stdout).keys()
