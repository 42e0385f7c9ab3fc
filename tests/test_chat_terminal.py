"""``mlxk run MODEL`` as a chat on a terminal: what the prompt does with blank lines, /help and
Ctrl-C, and a turn that no longer fits the model's context (said, and the chat goes on)."""

from __future__ import annotations

import os
import platform
import signal
import time
from pathlib import Path

import pytest

from mlxk.cli.chat import HELP
from tests.modelfix import build_tiny_chat_model, install
from tests.test_run import Terminal

GREEDY = ("--temperature", "0")
READ = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())  # the read system call's number


def wait_until_reading(pid: int, timeout: float = 60.0) -> None:
    """Until the process is blocked reading the terminal: a Ctrl-C sent between the prompt's write
    and that read waits, unseen, for the next line (as in any Python program), so the test sends it
    only once the chat is waiting, as a person would."""
    if READ is None or not Path(f"/proc/{pid}/syscall").exists():
        pytest.skip("which system call a process waits in is read from Linux's /proc on x86_64 or aarch64")
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/syscall").read_text().split()[0] != READ:
        assert time.monotonic() < deadline, "the chat never waited for a line"
        time.sleep(0.01)


CHAT, SMALL = "test/Tiny-Chat", "test/Tiny-Small-Context"


def test_blank_lines_help_and_ctrl_c_at_the_prompt(
    hub: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    install(hub, CHAT, tiny_models["chat"])
    term = Terminal("run", CHAT, *GREEDY, "--max-tokens", "4")
    term.read_until(b">>> ")
    term.send(b"   \n")  # nothing to answer: the next prompt
    term.read_until(b">>>    \r\n>>> ")
    term.send(b"/help\n")
    term.read_until(f"/help\r\n{HELP}".encode())
    wait_until_reading(term.proc.pid)
    mark = len(term.seen)
    os.killpg(term.proc.pid, signal.SIGINT)  # Ctrl-C while the chat waits for a line: it says how to leave
    term.read_until(f"({HELP})".encode())
    term.read_until(b">>> ")
    assert len(term.seen) > mark
    term.send(b"/exit\n")
    assert term.close() == 0


def test_a_turn_longer_than_the_context_is_an_error_and_the_chat_goes_on(hub: Path) -> None:
    install(hub, SMALL, build_tiny_chat_model(max_position_embeddings=64))
    term = Terminal("run", SMALL, *GREEDY, "--max-tokens", "2")
    term.read_until(b">>> ")
    term.send(b"x" * 100 + b"\n")
    term.read_until(b"(/clear starts the conversation afresh)")
    mark = len(term.seen)
    term.send(b"Hi\n")  # the refused turn is not in the history: this one fits
    term.read_until(b">>> ")
    assert b"Error" not in term.seen[mark:]
    term.send(b"/exit\n")
    assert term.close() == 0
