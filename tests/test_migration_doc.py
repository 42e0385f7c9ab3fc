"""docs/migration.md cannot rot: every line of its ``bash`` blocks runs here, against the example
cache the guide describes (built below), with the test Hub standing in for huggingface.co.

The conventions (also written at the end of the guide): a line is one command, ``VAR=value`` in
front sets its environment and ``echo TEXT |`` in front is its stdin; without a marker it must exit
0; ``# fails: TEXT`` must exit 1 with TEXT in its message; ``# terminal`` runs on a pseudo-terminal
and leaves the chat with /exit; ``# not run: WHY`` is skipped with its reason. Each block starts
from a fresh copy of the example cache.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import cachegen as gen
from tests.hubfix import model_files
from tests.hubserver import FakeHub
from tests.servefix import ServerProcess, _envelope, serve_env, wait_until_up

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"
CHAT = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
CHAT_MAIN = "a5339a41b2e3c4d5e6f708192a3b4c5d6e7f8091"
CHAT_OLDER = "e96f3b2c7d8e9f0a1b2c3d4e5f60718293a4b5c6"
BASE = "mlx-community/Llama-3.2-1B-4bit"
PYTORCH = "Qwen/Qwen2.5-0.5B-Instruct"
ON_THE_HUB = "mlx-community/Llama-3.2-1B-Instruct-4bit"
HUB_COMMIT = "3df9bfd0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6"
# the commands an install of mlxk puts on PATH -> the mlxk arguments they stand for
ENTRY_POINTS: dict[str, list[str]] = {
    "mlxk": [],
    "mlxk2": [],
    "mlxk-json": [],
    "mlx-knife": [],
    "mlx_knife": [],
    "mlx-run": ["run"],
}
_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=.*")
_MARKER = re.compile(r"(fails|terminal|not run)\b:?\s*(.*)")


@dataclass(frozen=True)
class Example:
    """One line of a bash block, understood."""

    text: str  # as written
    args: list[str] = field(default_factory=list)  # mlxk's arguments
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    expect: str = "ok"  # ok, fails, terminal, not run
    detail: str = ""  # the text a failure must show, or why a line is not run

    @property
    def serves(self) -> bool:
        words = [a for a in self.args if not a.startswith("-")]
        return bool(words) and words[0] in ("serve", "server")


def _split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the first ``#`` that starts a word outside quotes begins the comment."""
    for match in re.finditer(r"(^|\s)#", line):
        code = line[: match.start()]
        try:
            shlex.split(code)
        except ValueError:  # inside quotes
            continue
        return code.strip(), line[match.end() :].strip()
    return line.strip(), ""


def parse(line: str) -> Example:
    code, comment = _split_comment(line)
    marker = _MARKER.match(comment)
    expect, detail = (marker.group(1), marker.group(2).strip()) if marker else ("ok", "")
    if expect == "not run":
        assert detail, f"`# not run` needs a reason: {line}"
        return Example(line, expect=expect, detail=detail)
    words = shlex.split(code)
    stdin = None
    if words[:1] == ["echo"] and "|" in words:
        bar = words.index("|")
        stdin, words = " ".join(words[1:bar]) + "\n", words[bar + 1 :]
    env = {}
    while words and _ASSIGNMENT.fullmatch(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words and words[0] in ENTRY_POINTS, f"not an mlxk command (mark it `# not run: WHY`): {line}"
    assert not {"|", ">", "<", ">>", "&&", ";"} & set(words), f"shell syntax the test cannot run: {line}"
    return Example(line, [*ENTRY_POINTS[words[0]], *words[1:]], env, stdin, expect, detail)


def bash_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """(heading above it, lines) of every ```bash block, continuation lines joined."""
    blocks = []
    heading = "top"
    for match in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```", markdown, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
            continue
        text = match.group(2).replace("\\\n", " ")
        blocks.append(
            (
                heading,
                [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")],
            )
        )
    return blocks


BLOCKS = bash_blocks(GUIDE.read_text(encoding="utf-8"))


def _block_id(block: tuple[str, list[str]]) -> str:
    return re.sub(r"[^a-z0-9]+", "-", block[0].lower()).strip("-")


# -- the example cache and the test Hub ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_cache(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    """The models of the guide's table: a runnable tiny chat model with two snapshots, an MLX base
    model and a PyTorch one."""
    hub = tmp_path_factory.mktemp("migration") / "hub"
    hub.mkdir()
    gen.add_model(hub, CHAT, tiny_models["chat"], commit=CHAT_OLDER, ref=None, real_hash=True)
    gen.add_model(hub, CHAT, tiny_models["chat"], commit=CHAT_MAIN, real_hash=True, mtime=gen.OLD_MTIME + 60)
    gen.add_model(hub, BASE, gen.mlx_chat_model_files(tensors=8, chat=False))
    pytorch = {
        "config.json": gen.llama_config(quantized=False),
        "README.md": gen.readme(library="transformers", tags=()),
        "model.safetensors": gen.safetensors_file([("lm_head.weight", "F32", (8, 8))]),
    }
    gen.add_model(hub, PYTORCH, pytorch)
    return hub


@pytest.fixture(scope="module")
def test_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    server = FakeHub(tmp_path_factory.mktemp("fakehub"))
    server.add_commit(ON_THE_HUB, model_files(), commit=HUB_COMMIT)
    with server:
        yield server
    assert server.errors == []


@pytest.fixture
def cache(example_cache: Path, test_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the example cache for one block, mlxk and huggingface_hub pointed at it."""
    hub = tmp_path / "hf" / "hub"
    shutil.copytree(example_cache, hub, symlinks=True)
    for name in ("HF_HOME", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "MLXK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("MLXK2_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MLXK_CACHE_DIR", str(tmp_path / "mlxk"))
    monkeypatch.setenv("HF_ENDPOINT", test_hub.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return hub


# -- running one line ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    output: str  # stdout and stderr


def in_process(example: Example, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    from mlxk.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    with monkeypatch.context() as patch:
        for name, value in example.env.items():
            patch.setenv(name, value)
        patch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="utf-8", write_through=True))
        patch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding="utf-8", write_through=True))
        if example.stdin is not None:
            patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(example.stdin.encode())))
        code = main(list(example.args))
        # read before the context ends: the replaced streams close their buffers when dropped
        return Outcome(code, out.getvalue().decode() + err.getvalue().decode())


def _free_port_args(args: list[str]) -> list[str]:
    """The line's options with any port replaced by 0 (a free one: the machine is shared)."""
    result: list[str] = []
    for i, arg in enumerate(args):
        if i and args[i - 1] in ("--port", "-p"):
            result.append("0")
        elif arg.startswith("--port="):
            result.append("--port=0")
        else:
            result.append(arg)
    return (
        result
        if any(a in ("--port", "-p") or a.startswith("--port=") for a in args)
        else [*result, "--port", "0"]
    )


def _option(args: list[str], env: dict[str, str], names: tuple[str, ...], variable: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(names[0] + "="):
            return arg.split("=", 1)[1]
    return env.get(variable)


def start_serving(example: Example, hub: Path, log: Path) -> subprocess.Popen[bytes]:
    """The server the line describes, on a free port, with its start-up envelope on stdout."""
    env = serve_env(hub, **example.env)
    if "MLXK2_PORT" in env:
        env["MLXK2_PORT"] = "0"
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "mlxk", *_free_port_args(example.args), "--json"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )


def finish_serving(example: Example, proc: subprocess.Popen[bytes], log: Path) -> Outcome:
    """Check the server came up as the line asks, stop it: it must exit 0."""
    try:
        server = ServerProcess(proc, _envelope(proc, log), log)
        data = server.envelope["data"]
        host = _option(example.args, example.env, ("--host",), "MLXK2_HOST") or "127.0.0.1"
        model = _option(example.args, example.env, ("--model", "-m"), "MLXK2_PRELOAD_MODEL")
        assert data["host"] == host, data
        assert (model is None and data["model"] is None) or (model or "?") in (data["model"] or ""), data
        wait_until_up(f"http://127.0.0.1:{server.port}", proc)
        return Outcome(server.stop(), server.stderr())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def on_a_terminal(example: Example, hub: Path, tmp_path: Path) -> Outcome:
    """The chat on a pseudo-terminal, as a person runs it: /exit once it asks for a message."""
    master, slave = pty.openpty()
    env = serve_env(hub, **example.env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", *example.args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        while b">>> " not in seen and proc.poll() is None:
            assert time.monotonic() < deadline, seen[-500:]
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        os.write(master, b"/exit\n")  # typed ahead when an answer is still coming: read at the next prompt
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        os.close(master)
    return Outcome(code, seen.decode(errors="replace"))


# -- the tests ----------------------------------------------------------------------------------------------


def test_the_guide_has_examples_of_every_old_command() -> None:
    lines = [parse(line) for _, block in BLOCKS for line in block]
    commands = {e.args[0] for e in lines if e.args}
    assert {"list", "show", "health", "pull", "rm", "run", "server", "serve", "embed"} <= commands
    assert {"clone", "convert", "push", "embed-serve"} <= commands
    assert {"fails", "terminal", "not run"} <= {e.expect for e in lines}


def test_the_parser_reads_the_conventions() -> None:
    line = 'echo "a b" | MLXK2_X=1 mlx-run M - "c # d"   # fails: the text'
    assert parse(line) == Example(
        line, ["run", "M", "-", "c # d"], {"MLXK2_X": "1"}, "a b\n", "fails", "the text"
    )
    assert parse("mlxk list  # a comment").expect == "ok"
    assert parse("pip install mlxk   # not run: from PyPI").expect == "not run"
    with pytest.raises(AssertionError, match="not an mlxk command"):
        parse("pip install mlxk")
    with pytest.raises(AssertionError, match="shell syntax"):
        parse("mlxk list --json | jq .")
    with pytest.raises(AssertionError, match="needs a reason"):
        parse("mlxk list  # not run:")


@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_every_line_of_the_block_does_what_the_guide_says(
    block: tuple[str, list[str]], cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = [parse(line) for line in block[1]]
    # servers start together (each on a free port): their start-up overlaps, the cache is only read
    servers = {
        number: start_serving(example, cache, tmp_path / f"serve-{number}.log")
        for number, example in enumerate(examples)
        if example.serves and example.expect == "ok"
    }
    try:
        for number, (line, example) in enumerate(zip(block[1], examples, strict=True)):
            if example.expect == "not run":
                continue
            if example.expect == "terminal":
                outcome = on_a_terminal(example, cache, tmp_path)
            elif number in servers:
                outcome = finish_serving(example, servers.pop(number), tmp_path / f"serve-{number}.log")
            else:
                outcome = in_process(example, monkeypatch)
            if example.expect == "fails":
                assert outcome.code == 1, f"{line}\n{outcome.output}"
                assert example.detail and example.detail in outcome.output, f"{line}\n{outcome.output}"
                assert "Traceback" not in outcome.output
            else:
                assert outcome.code == 0, f"{line}\n{outcome.output}"
                if "--json" in example.args and not example.serves:
                    envelope: dict[str, Any] = orjson.loads(outcome.output.splitlines()[0])
                    assert envelope["status"] == "success", line
    finally:  # a failed line leaves no server behind
        for proc in servers.values():
            proc.kill()
            proc.wait(timeout=30)
