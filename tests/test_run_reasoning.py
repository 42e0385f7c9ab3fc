"""``mlxk run`` with a thinking model: a tiny real model with Qwen3's official chat template
(tests.familyfix) that writes a scripted answer (tests.scripted): reasoning, then the answer.

On a terminal the reasoning is shown dimmed before the answer; on a pipe stdout holds the answer
alone and the reasoning goes to stderr; ``--hide-reasoning`` drops it; ``--json`` has it in its own
field; ``--no-thinking`` switches the template's thinking off.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.familyfix import build_family_model
from tests.modelfix import install
from tests.test_run import SCHEMA, Terminal

THINKER = "test/Tiny-Thinker"
THOUGHT, ANSWER = "Paris is the capital. Say it.", "The capital of France is Paris."
SCRIPTS = {"capital": f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}<|im_end|>"}
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def thinker_files() -> dict[str, bytes]:
    return build_family_model("hermes")


@pytest.fixture
def scripts(hub: Path, thinker_files: dict[str, bytes], tmp_path: Path) -> Path:
    install(hub, THINKER, thinker_files)
    path = tmp_path / "scripts.json"
    path.write_text(json.dumps(SCRIPTS))
    return path


def run(scripts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``mlxk run`` (the real CLI, its stdout a pipe) with the scripted answers installed."""
    return subprocess.run(
        [sys.executable, "-m", "tests.scripted", str(scripts), "run", THINKER, *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def run_json(scripts: Path, *args: str) -> dict[str, Any]:
    proc = run(scripts, QUESTION, "--json", *args)
    envelope = json.loads(proc.stdout)
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    assert proc.returncode == 0, envelope
    data: dict[str, Any] = envelope["data"]
    return data


def test_json_has_the_reasoning_in_its_own_field(scripts: Path) -> None:
    data = run_json(scripts)
    assert (data["response"], data["reasoning"], data["finish_reason"]) == (ANSWER, THOUGHT, "stop")
    hidden = run_json(scripts, "--hide-reasoning")
    assert (hidden["response"], hidden["reasoning"]) == (ANSWER, None)


def test_a_pipe_gets_the_answer_and_stderr_the_reasoning(scripts: Path) -> None:
    proc = run(scripts, QUESTION)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ANSWER + "\n"
    assert f"{THOUGHT}\n" in proc.stderr and "\x1b[" not in proc.stderr
    hidden = run(scripts, QUESTION, "--hide-reasoning")
    assert hidden.stdout == ANSWER + "\n"
    assert THOUGHT not in hidden.stderr


def test_no_reasoning_is_2_0s_name_for_hide_reasoning(scripts: Path) -> None:
    hidden = run(scripts, QUESTION, "--no-reasoning")
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout == ANSWER + "\n"
    assert THOUGHT not in hidden.stderr


def test_no_stream_prints_the_answer_alone_on_stdout(scripts: Path) -> None:
    proc = run(scripts, QUESTION, "--no-stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ANSWER + "\n"
    assert THOUGHT in proc.stderr


def test_a_terminal_shows_the_reasoning_dimmed_before_the_answer(scripts: Path) -> None:
    term = terminal(scripts, QUESTION)
    seen = term.read_until(ANSWER.encode()).replace(b"\r\n", b"\n").decode()
    assert term.close() == 0
    dim_start, dim_end = seen.index("\x1b[2m"), seen.rindex("\x1b[22m")
    shown = seen[dim_start:dim_end].replace("\x1b[2m", "").replace("\x1b[22m", "")
    assert shown == THOUGHT
    assert seen[dim_end:].startswith(f"\x1b[22m\n\n{ANSWER}")
    hidden = terminal(scripts, QUESTION, "--hide-reasoning")
    seen = hidden.read_until(ANSWER.encode()).decode()
    assert hidden.close() == 0
    assert THOUGHT not in seen and "\x1b[2m" not in seen


def test_no_thinking_closes_the_think_block_in_the_prompt(scripts: Path) -> None:
    """Qwen3's template renders an empty think block when thinking is off: six tokens more (the
    tokenizer is character-level), and the output then starts as content."""
    on, off = run_json(scripts), run_json(scripts, "--no-thinking")
    assert off["prompt_tokens"] - on["prompt_tokens"] == len(["<think>", "\n", "\n", "</think>", "\n", "\n"])
    refused = run(scripts, QUESTION, "--json", "--no-thinking", "--no-chat-template")
    assert refused.returncode != 0
    assert "--no-thinking" in json.loads(refused.stdout)["error"]["message"]


def terminal(scripts: Path, *args: str) -> Terminal:
    """``mlxk run`` on a pseudo-terminal, with the scripted answers installed."""
    return Terminal("run", THINKER, *args, program=("-m", "tests.scripted", str(scripts)))


# a thinking model whose answer never comes (the token budget ends inside its reasoning): the
# reasoning is still ended by a line feed where it was shown, and stdout (the answer alone, on a
# pipe) stays empty; and a chat opened with a first prompt (mlxk.cli.chat)
CUT = ("--max-tokens", "12")  # "<think>", "\n", then ten characters of the thought


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
