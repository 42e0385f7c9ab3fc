"""What the CLI does with the less common ways of giving it input: stdin named '-' (``embed``), a
terminal where a pipe was expected, flags mixed with ``--version``, retired options after ``--``,
and what ``rm`` and ``show`` print in cases the main tests do not set up.
"""

from __future__ import annotations

import json
import math
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mlxk
from benchmarks import cachegen as gen
from mlxk.cache.locks import RepoLock
from tests.cachefix import healthy_model
from tests.minilm import REPO as MINILM
from tests.minilm import install_minilm
from tests.test_rm import NAME
from tests.test_terminal_questions import Terminal as PromptTerminal

DEADLINE_S = 120
BAD_JSONL = b'{"text": not json\n'


def mlxk_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mlxk", *args], input=stdin, capture_output=True, timeout=DEADLINE_S
    )


class Terminal:
    """``mlxk ARGS`` with a pty as stdin, stdout and stderr, as a person at a terminal runs it."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk", *args], stdin=slave, stdout=slave, stderr=slave
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, marker: bytes) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while marker not in self.seen:
            assert time.monotonic() < deadline, self.seen
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the command ended and everything it wrote was read
                    chunk = b""
                assert chunk, self.seen
                self.seen += chunk

    def close(self) -> int:
        code = self.proc.wait(timeout=DEADLINE_S)
        os.close(self.master)
        return code


# --- --version with other flags, retired options after -- ---------------------------------------


def test_version_mixed_with_other_flags(cli: Any) -> None:
    verbose = cli("--version", "-v")  # not the fast path: the full application answers
    assert verbose.exit_code == 0 and verbose.stdout.startswith(f"mlxk {mlxk.__version__}")
    quiet = cli("--version", "-q")
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_a_retired_option_after_double_dash_is_not_named(cli: Any, hub: Path) -> None:
    # -c was 2.0's chat flag; after -- it is no option at all, so the error is about --bogus
    after = cli("run", "org/model", "--bogus", "--", "-c")
    assert after.exit_code == 1 and '"--bogus" does not exist' in after.stderr
    assert "a chat starts" not in after.stderr
    before = cli("run", "org/model", "--bogus", "-c")
    assert before.exit_code == 1 and "a chat starts" in before.stderr


# --- embed: stdin as '-', an empty --instruct, a terminal ---------------------------------------


@pytest.mark.parametrize("args", [["--file", "-"], ["-f", "-"], ["--file=-"], ["-"]])
def test_embed_reads_stdin_when_told_dash(hub: Path, args: list[str]) -> None:
    # stdin is read (and its bad line refused) before any model is looked for
    proc = mlxk_cli("embed", "org/model", *args, "--json", stdin=BAD_JSONL)
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error == {"type": "validation_error", "message": "line 1 starts like JSON but is not valid JSON"}


def test_embed_dash_after_double_dash_is_a_text(hub: Path) -> None:
    proc = mlxk_cli("embed", "org/model", "--json", "--", "--file", "-", stdin=BAD_JSONL)
    # two texts ("--file" and "-"), no stdin read: the model is looked for, and is not there
    assert proc.returncode == 1 and b"model_not_found" in proc.stdout


def test_embed_from_stdin_dash_equals_texts_given(
    cli: Any, hub: Path, minilm_files: dict[str, bytes]
) -> None:
    install_minilm(hub, minilm_files)
    food, horse = "A man is eating food.", "A man is riding a horse."
    given = [e["embedding"] for e in cli("embed", MINILM, food, horse, "--json").json()["data"]["embeddings"]]
    for args in (["-"], ["--file", "-"]):
        proc = mlxk_cli("embed", MINILM, *args, "--json", stdin=f"{food}\n{horse}\n".encode())
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)["data"]
        assert [e["text"] for e in data["embeddings"]] == [food, horse]
        for a, b in zip(given, (e["embedding"] for e in data["embeddings"]), strict=True):
            assert math.dist(a, b) < 1e-4


def test_embed_refuses_an_empty_instruction(cli: Any, hub: Path) -> None:
    result = cli("embed", "org/model", "a text", "--instruct", "  ", "--json")
    assert result.exit_code == 1
    assert result.json()["error"] == {
        "type": "validation_error",
        "message": "--instruct takes a task description, not an empty text",
    }


def test_embed_with_nothing_to_read_on_a_terminal(hub: Path) -> None:
    terminal = Terminal("embed", "org/model")  # no texts, no --file, stdin a terminal: nothing waits
    terminal.read_until(b"nothing to embed: give texts, --file, or pipe them on stdin")
    assert terminal.close() == 1


def test_run_reads_a_dash_prompt_from_the_terminal(hub: Path) -> None:
    terminal = Terminal("run", "org/model", "-")
    terminal.read_until(b"(reading the prompt from the terminal; end it with Ctrl-D)")
    os.write(terminal.master, b"Hello\n\x04")  # the prompt, then the end of input
    terminal.read_until(b"no model in the cache matches")  # only then is the model looked for
    assert terminal.close() == 1


# --- health, show and rm in cases the main tests leave out --------------------------------------


def test_health_of_an_empty_cache(cli: Any, hub: Path) -> None:
    result = cli("health")
    assert result.exit_code == 0 and result.stdout == "No models in the cache.\n"


def test_show_files_names_unknown_files_other(cli: Any, hub: Path) -> None:
    files = {**gen.mlx_chat_model_files(tensors=4), ".gitattributes": b"*.safetensors filter=lfs\n"}
    gen.add_model(hub, NAME, files)
    data = cli("show", NAME, "--files", "--json").json()["data"]
    types = {f["name"]: f["type"] for f in data["files"]}
    assert types[".gitattributes"] == "other" and types["config.json"] == "config"


def test_rm_dry_run_names_a_held_lock(cli: Any, hub: Path) -> None:
    import fcntl

    healthy_model(hub, NAME)
    lock = hub / ".locks" / ("models--" + NAME.replace("/", "--")) / "download.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        result = cli("rm", NAME, "--dry-run")
    assert result.exit_code == 0
    assert "  held lock: download.lock (a download in progress?)" in result.stdout


def test_rm_refuses_when_a_pull_starts_while_it_asks(hub: Path) -> None:
    repo = healthy_model(hub, NAME)
    terminal = PromptTerminal("rm", NAME)
    terminal.wait_for(b"[y/N] ")
    # a pull takes the model's lock while the person reads the question
    pull = RepoLock(str(hub), repo.repo_dir.name)
    assert pull.acquire(wait=False)
    try:
        code, out = terminal.answer(b"y\n")
    finally:
        pull.release(remove=True)
    assert code == 1 and out == ""
    assert b"is in use by another process (held locks: mlxk.lock)" in terminal.seen
    assert os.path.isdir(repo.repo_dir / "snapshots")
