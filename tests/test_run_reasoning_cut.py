"""``mlxk run`` with a thinking model whose answer never comes (the token budget ends inside its
reasoning), and a chat opened with a first prompt (mlxk.cli.chat): the same tiny Qwen3-template model
and scripted answer as tests/test_run_reasoning.py.

A reasoning cut short is still ended by a line feed where it was shown, and stdout, which holds the
answer alone on a pipe, stays empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.familyfix import build_family_model
from tests.modelfix import install
from tests.test_run_reasoning import ANSWER, QUESTION, SCRIPTS, THINKER, THOUGHT, run, terminal

CUT = ("--max-tokens", "12")  # "<think>", "\n", then ten characters of the thought


@pytest.fixture(scope="module")
def thinker_files() -> dict[str, bytes]:
    return build_family_model("hermes")


@pytest.fixture
def scripts(hub: Path, thinker_files: dict[str, bytes], tmp_path: Path) -> Path:
    install(hub, THINKER, thinker_files)
    path = tmp_path / "scripts.json"
    path.write_text(json.dumps(SCRIPTS))
    return path


def test_reasoning_cut_short_on_a_pipe_leaves_stdout_empty(scripts: Path) -> None:
    proc = run(scripts, QUESTION, *CUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # no answer, and no empty line standing for one
    assert f"{THOUGHT[:10]}\n" in proc.stderr and THOUGHT[:11] not in proc.stderr


def test_reasoning_cut_short_on_a_terminal_ends_its_dimmed_line(scripts: Path) -> None:
    term = terminal(scripts, QUESTION, *CUT)
    term.read_until(b"\x1b[22m\r\n")  # the last dimmed piece, then the line feed
    assert term.close() == 0
    seen = term.seen.replace(b"\r\n", b"\n").decode()
    shown = seen.replace("\x1b[2m", "").replace("\x1b[22m", "")
    assert shown.endswith(f"{THOUGHT[:10]}\n") and ANSWER not in shown
    assert seen.endswith("\x1b[22m\n")  # the dim is over before the line ends


def test_a_chat_opened_with_a_prompt_answers_it_first(scripts: Path) -> None:
    term = terminal(scripts, QUESTION, "-i", "--hide-reasoning")
    term.read_until(f">>> {QUESTION}".encode())
    term.read_until(ANSWER.encode())
    term.read_until(b"\n>>> ")  # then the prompt, for the next turn
    term.send(b"\x04")  # Ctrl-D: the chat ends
    assert term.close() == 0
    assert THOUGHT not in term.seen.decode()
