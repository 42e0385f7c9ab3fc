"""What MLX-Knife 1.x and 2.0 users type: it works with the same meaning, or fails with a message
that names what to use instead (docs/migration.md lists them all)."""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.cachegen import add_model
from mlxk.cli.legacy import RETIRED_COMMANDS, RETIRED_OPTIONS, serve_env_options, with_legacy_environment
from tests.cachefix import healthy_model
from tests.modelfix import install
from tests.servefix import ServerProcess, _envelope, serve_env, wait_until_up

QWEN = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
CHAT = "test/Tiny-Chat"
GREEDY = ("--temperature", "0")


@pytest.fixture
def cache(hub: Path) -> Path:
    healthy_model(hub, QWEN)
    return hub


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize(
    "line",
    [
        "list",
        "list --all",
        "list --health",
        "list --all --health",
        "list --verbose",
        "list --all --verbose",
        "list --verbose --health",
        "list Qwen2.5",
        "list --verbose Qwen2.5",
        "list --framework mlx",
        "list --framework MLX --all --health --verbose Qwen",
        "health",
        "health --all",
        "health Qwen2.5-0.5B-Instruct-4bit",
        "show Qwen2.5-0.5B-Instruct-4bit",
        "show Qwen2.5-0.5B-Instruct-4bit --files",
        "show Qwen2.5-0.5B-Instruct-4bit --config",
        "show Qwen2.5-0.5B-Instruct-4bit --files --config",
    ],
)
def test_lines_of_the_old_readmes_work(cli: Any, cache: Path, line: str) -> None:
    result = cli(*line.split())
    assert result.exit_code == 0, result.stderr
    assert "Qwen2.5-0.5B-Instruct-4bit" in result.stdout and result.stderr == ""


@pytest.mark.usefixtures("core")
def test_health_all_is_health_and_refuses_a_model_too(cli: Any, cache: Path) -> None:
    assert cli("health", "--all", "--json").stdout == cli("health", "--json").stdout
    both = cli("health", "qwen", "--all", "--json")
    assert both.exit_code == 1 and both.json()["error"]["type"] == "validation_error"


@pytest.mark.usefixtures("core")
def test_rm_force_and_a_snapshot(cli: Any, cache: Path) -> None:
    commit = cli("list", "--json").json()["data"]["models"][0]["hash"]
    removed = cli("rm", f"{QWEN}@{commit[:8]}", "--force", "--json")
    assert removed.exit_code == 0 and removed.json()["data"]["action"] == "deleted"
    healthy_model(cache, QWEN)
    assert cli("rm", QWEN, "--force").exit_code == 0 and cli("list", "--json").json()["data"]["count"] == 0


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("clone", "hf download"),
        ("convert", "mlx_lm.convert"),
        ("push", "hf upload"),
        ("embed-serve", "mlxk serve --model"),
    ],
)
def test_retired_commands_name_what_replaces_them(cli: Any, hub: Path, command: str, names: str) -> None:
    for args in ((command, "org/model", "./ws"), ("--json", command, "org/model")):
        result = cli(*args)
        assert result.exit_code == 1 and result.stdout == ""
        assert names in result.stderr and "docs/migration.md" in result.stderr
        assert "does not exist" not in result.stderr
    assert set(RETIRED_COMMANDS) == {"clone", "convert", "push", "embed-serve"}


RETIRED = [(command, option) for command, options in RETIRED_OPTIONS.items() for option in options]


@pytest.mark.parametrize(("command", "option"), RETIRED)
def test_retired_options_name_what_to_do_instead(cli: Any, hub: Path, command: str, option: str) -> None:
    args = [command, *({"run": [QWEN, "hi"], "show": [QWEN], "embed": [QWEN, "hi"]}.get(command, [])), option]
    human = cli(*args)
    assert human.exit_code == 1 and human.stderr.startswith(f"Error: {option}: ")
    assert "docs/migration.md" in human.stderr and "does not exist" not in human.stderr
    envelope = cli(*args, "--json").json()
    assert envelope["error"]["type"] == "validation_error"
    assert envelope["command"] == ("server" if command == "serve" else command)
    assert envelope["error"]["message"] == human.stderr.removeprefix("Error: ").strip()


@pytest.mark.usefixtures("core")
def test_1x_tokenizer_framework_names_the_filter_that_lists_those_repos(cli: Any, cache: Path) -> None:
    """1.x's `--framework tokenizer` were repos under 10 MB without MLX or GGUF weights: the message
    names a filter, and that filter lists exactly such a repo."""
    tokenizer_only = {"tokenizer.json": b"{}", "tokenizer_config.json": b"{}", "config.json": b"{}"}
    add_model(cache, "google-bert/bert-base-uncased", tokenizer_only)
    for spelling in ("tokenizer", "Tokenizer"):
        result = cli("list", "--framework", spelling)
        assert result.exit_code == 1 and "docs/migration.md" in result.stderr
    named = result.stderr.split("`")[1]
    assert named == "mlxk list --filter 'size<10MB' --filter 'framework!=mlx,gguf'"
    listed = cli(*shlex.split(named)[1:], "--json").json()["data"]["models"]
    assert [m["name"] for m in listed] == ["google-bert/bert-base-uncased"]


@pytest.mark.usefixtures("core")
def test_wildcards_are_refused_with_what_to_type(cli: Any, cache: Path) -> None:
    """2.0's README cleaned up with `rm "test-model-*" --force`; no version matched wildcards."""
    for args in (("rm", "Qwen2.5-*", "--force"), ("show", "Qwen2.5-*", "--json"), ("run", "Qwen2.5-*", "hi")):
        result = cli(*args)
        assert result.exit_code == 1
        assert "wildcards are not names" in result.stderr + result.stdout
    assert cli("list", "--json").json()["data"]["count"] == 1


def test_an_option_given_a_value_is_still_recognised(cli: Any, hub: Path) -> None:
    result = cli("run", QWEN, "--image=cat.jpg", "--chunk", "5", "describe")
    assert result.exit_code == 1 and "--image: mlxk runs text models only" in result.stderr


def test_an_unknown_option_keeps_the_usual_message(cli: Any, hub: Path) -> None:
    result = cli("run", QWEN, "hi", "--no-such-thing")
    assert result.exit_code == 1
    assert (
        'The option "--no-such-thing" does not exist' in result.stderr and "Usage: mlxk run" in result.stderr
    )


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("line", ["run ./workspace hello", "show ./workspace --files", "health ./workspace"])
def test_workspace_paths_name_the_cache(cli: Any, cache: Path, line: str) -> None:
    result = cli(*line.split(), "--json")
    assert result.exit_code == 1 and "docs/migration.md" in result.json()["error"]["message"]


# -- 2.0's MLXK2_* server variables ------------------------------------------------------------------------


def test_serve_variables_become_options_unless_given() -> None:
    env = {
        "MLXK2_HOST": "0.0.0.0",
        "MLXK2_PORT": "9000",
        "MLXK2_PRELOAD_MODEL": "org/model",
        "MLXK2_MAX_TOKENS": "4096",
        "MLXK2_LOG_LEVEL": "debug",
        "MLXK2_LOG_JSON": "1",
    }
    assert serve_env_options([], env) == [
        "--host=0.0.0.0",
        "--port=9000",
        "--model=org/model",
        "--max-tokens=4096",
        "--log-level=debug",
        "--log-json",
    ]
    given = ["--port", "8080", "-m", "x", "--host=::1", "--max-tokens=5", "--log-level", "info", "--log-json"]
    assert serve_env_options(given, env) == []
    assert serve_env_options(["-p8080"], {"MLXK2_PORT": "9000"}) == []
    assert serve_env_options([], {"MLXK2_LOG_JSON": "0", "MLXK2_PORT": ""}) == []
    assert with_legacy_environment(["--json", "server"], env)[:2] == ["--json", "server"]
    assert with_legacy_environment(["list", "--json"], env) == ["list", "--json"]
    assert with_legacy_environment(["serve", "--", "x"], env) == ["serve", "--", "x"]


def test_mlxk2_reload_fails_with_its_message(cli: Any, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXK2_RELOAD", "1")
    result = cli("serve")
    assert result.exit_code == 1 and "MLXK2_RELOAD" in result.stderr and "no auto-reload" in result.stderr


@pytest.fixture
def chat_cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    return hub


def start(hub: Path, tmp_path: Path, *args: str, **env: str) -> ServerProcess:
    log = tmp_path / f"serve-{len(list(tmp_path.glob('serve-*')))}.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk", "serve", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=serve_env(hub, **env),
        )
    server = ServerProcess(proc, _envelope(proc, log), log)
    wait_until_up(server.url, proc)
    return server


def completion_tokens(server: ServerProcess) -> int:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
    answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["finish_reason"] == "length", answer
    return int(answer["usage"]["completion_tokens"])


def test_serve_max_tokens_and_the_2_0_variables(chat_cache: Path, tmp_path: Path) -> None:
    """MLXK2_PORT (0: any free port, not the default 8000) and MLXK2_MAX_TOKENS are honoured, and
    --max-tokens on the command line wins over the variable, as in 2.0."""
    server = start(chat_cache, tmp_path, MLXK2_PORT="0", MLXK2_MAX_TOKENS="3")
    try:
        assert server.port not in (0, 8000)
        assert completion_tokens(server) == 3
    finally:
        assert server.stop() == 0
    server = start(chat_cache, tmp_path, "--port", "0", "--max-tokens", "5", MLXK2_MAX_TOKENS="3")
    try:
        assert completion_tokens(server) == 5
    finally:
        assert server.stop() == 0


# -- run -----------------------------------------------------------------------------------------------------


def mlxk(*args: str, exe: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [exe] if exe else [sys.executable, "-m", "mlxk"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_no_stream_prints_the_same_answer_whole(cli: Any, chat_cache: Path) -> None:
    streamed = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "12")
    whole = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "12", "--no-stream")
    assert whole.exit_code == streamed.exit_code == 0
    assert whole.stdout == streamed.stdout and whole.stdout.endswith("\n")


def test_prompt_option_is_a_prompt(cli: Any, chat_cache: Path) -> None:
    positional = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "8", "--json").json()["data"]
    option = cli("run", CHAT, "--prompt", "Hello", *GREEDY, "--max-tokens", "8", "--json").json()["data"]
    assert option["prompt"] == "Hello" and option["response"] == positional["response"]
    # stdin first, the option's text after it (2.0: `mlx-run MODEL - --prompt TEXT`)
    piped = mlxk(
        "run", CHAT, "-", "--prompt", "Summarize.", *GREEDY, "--max-tokens", "4", "--json", input="notes"
    )
    assert json.loads(piped.stdout)["data"]["prompt"] == "notes\n\nSummarize."


def test_interactive_needs_a_terminal(cli: Any, chat_cache: Path) -> None:
    for args in (("-i",), ("--interactive", "--json")):
        result = cli("run", CHAT, "Hello", *args)
        assert (
            result.exit_code == 1
            and "-i/--interactive: a chat needs a terminal" in result.stderr + result.stdout
        )


def test_interactive_answers_the_prompt_then_chats(chat_cache: Path) -> None:
    from tests.test_run import Terminal

    term = Terminal("run", CHAT, "Hello", "-i", *GREEDY, "--max-tokens", "8")
    term.read_until(b">>> Hello")
    deadline = time.monotonic() + 60
    while term.seen.count(b">>> ") < 2:  # the first answer is out when the chat asks for the next turn
        assert time.monotonic() < deadline, term.seen[-500:]
        if select.select([term.master], [], [], 0.1)[0]:
            term.seen += os.read(term.master, 65536)
    term.send(b"/exit\n")
    assert term.close() == 0


def test_entry_points_of_1x_and_2_0(chat_cache: Path) -> None:
    bindir = Path(sys.executable).parent
    missing = [n for n in ("mlx-run", "mlx-knife", "mlx_knife") if not (bindir / n).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed into this environment (pip install -e .)")
    env = os.environ.copy()
    expected = mlxk("run", CHAT, "Hello", *GREEDY, "--max-tokens", "6", env=env)
    via_mlx_run = mlxk(CHAT, "Hello", *GREEDY, "--max-tokens", "6", exe=str(bindir / "mlx-run"), env=env)
    assert via_mlx_run.returncode == 0 and via_mlx_run.stdout == expected.stdout
    for name in ("mlx-knife", "mlx_knife"):
        listed = mlxk("list", "--json", exe=str(bindir / name), env=env)
        assert json.loads(listed.stdout)["data"]["models"][0]["name"] == CHAT
