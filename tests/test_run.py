"""``mlxk run`` on real tiny models: streaming, --json, stops, stdin, pipes, chat on a terminal, errors."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from benchmarks import cachegen as gen
from tests.modelfix import build_tiny_chat_model, drop_tensor, install

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())
CHAT, STOP, RAW, LONG = "test/Tiny-Chat", "test/Tiny-Stop", "test/Tiny-Raw", "test/Tiny-Long"
GREEDY = ("--temperature", "0")


@pytest.fixture
def models(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install(hub, CHAT, tiny_models["chat"])
    install(hub, STOP, tiny_models["stop"])
    install(hub, RAW, tiny_models["raw"])
    return hub


@pytest.fixture
def long_model(hub: Path) -> str:
    """A model with a huge context: an answer that streams long enough to be interrupted."""
    from tests.modelfix import build_tiny_chat_model

    install(hub, LONG, build_tiny_chat_model(max_position_embeddings=10_000_000))
    return LONG


def run_json(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("run", *args, "--json")
    envelope = result.json()
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    assert result.exit_code == 0, envelope
    data: dict[str, Any] = envelope["data"]
    return data


def mlxk(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlxk", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_streamed_text_equals_the_json_response(cli: Any, models: Path) -> None:
    streamed = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "30")
    data = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "30")
    assert streamed.exit_code == 0
    assert streamed.stdout.rstrip("\n") == data["response"].rstrip("\n") and data["response"]
    assert (data["finish_reason"], data["tokens_generated"]) == ("length", 30)
    assert data["prompt"] == "Hello" and data["prompt_tokens"] > 5  # the chat template around it
    assert data["tokens_per_second"] > 0 and data["generation_time_s"] > 0


def test_the_stop_model_finishes_with_stop(cli: Any, models: Path) -> None:
    data = run_json(cli, STOP, "Hello", *GREEDY)
    assert (data["response"], data["finish_reason"], data["tokens_generated"]) == ("", "stop", 0)


def test_a_multi_token_stop_string_is_never_printed(cli: Any, models: Path) -> None:
    full = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "60")["response"]
    body = full.strip()
    stop = body[len(body) // 2 : len(body) // 2 + 3]
    cut = full.find(stop)
    data = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "60", "--stop", stop)
    assert (data["response"], data["finish_reason"]) == (full[:cut], "stop")
    streamed = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "60", "--stop", "zzz", "--stop", stop)
    assert stop not in streamed.stdout and streamed.stdout.rstrip("\n") == full[:cut].rstrip("\n")


def test_chat_template_or_raw(cli: Any, models: Path) -> None:
    templated = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "5")
    raw = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "5", "--no-chat-template")
    assert raw["prompt_tokens"] == 5 < templated["prompt_tokens"]  # one token per character
    plain = run_json(cli, RAW, "Hello", *GREEDY, "--max-tokens", "5")  # no template in the model at all
    assert plain["prompt_tokens"] == 5


def test_system_prompt_goes_into_the_template(cli: Any, models: Path) -> None:
    without = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "3")
    with_system = run_json(cli, CHAT, "Hello", *GREEDY, "--max-tokens", "3", "--system", "Be brief.")
    assert with_system["prompt_tokens"] > without["prompt_tokens"] + len("Be brief.")


def test_seeded_sampling_is_repeatable(cli: Any, models: Path) -> None:
    args = (CHAT, "Hello", "--temperature", "1.0", "--seed", "11", "--max-tokens", "20")
    assert run_json(cli, *args)["response"] == run_json(cli, *args)["response"]


def test_verbose_reports_speed_on_stderr(cli: Any, models: Path) -> None:
    result = cli("run", CHAT, "Hello", *GREEDY, "--max-tokens", "5", "--verbose")
    assert "tokens/s" in result.stderr and "peak memory" in result.stderr and "load:" in result.stderr


@pytest.mark.parametrize(
    "option",
    [
        ("--temperature", "-1"),
        ("--temperature", "nan"),
        ("--temperature", "2.5"),  # the one table of bounds: as over HTTP
        ("--max-tokens", "0"),
        ("--max-tokens", "ten"),
        ("--top-p", "-0.1"),
        ("--top-p", "1.5"),
        ("--top-k", "-3"),
        ("--min-p", "2"),
        ("--repetition-penalty", "0"),
        ("--repetition-penalty", "20"),
        ("--seed", "x"),
        ("--stop", ""),
    ],
)
def test_bad_options_are_refused_before_loading(cli: Any, models: Path, option: tuple[str, str]) -> None:
    result = cli("run", CHAT, "Hello", *option, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (1, "validation_error")


def test_model_errors_before_loading(cli: Any, models: Path, hub: Path) -> None:
    def error(spec: str) -> tuple[int, str, str]:
        result = cli("run", spec, "Hello", "--json")
        envelope = result.json()
        return result.exit_code, envelope["error"]["type"], envelope["error"]["message"]

    assert error("nothing-like-this")[:2] == (1, "model_not_found")
    assert error("tiny")[:2] == (1, "ambiguous_match")
    broken = gen.add_model(hub, "test/Broken", gen.mlx_chat_model_files(tensors=3), real_hash=True)
    broken.blob_of("model.safetensors").unlink()
    assert error("test/Broken")[:2] == (1, "model_unhealthy")
    odd = gen.mlx_chat_model_files(tensors=3)
    odd["config.json"] = json.dumps({"model_type": "no-such-architecture"}).encode()
    gen.add_model(hub, "test/Odd", odd, real_hash=True)
    assert error("test/Odd")[:2] == (1, "model_incompatible")
    bert = {
        "config.json": b'{"model_type": "bert", "architectures": ["BertModel"]}',
        "model.safetensors": gen.safetensors_file(gen.tensor_entries(3, "F32")),
        "README.md": gen.readme("sentence-transformers", ["sentence-transformers"]),
    }
    gen.add_model(hub, "test/Embedder", bert, real_hash=True)
    code, kind, message = error("test/Embedder")
    assert (code, kind) == (1, "model_incompatible") and "embedding" in message


def test_a_model_mlx_lm_cannot_load_is_an_execution_error(cli: Any, hub: Path) -> None:
    """A snapshot the cache's checks pass (valid headers, an index that agrees) but whose weights
    lack a tensor: health calls it healthy, run loads it and says which model failed and why."""
    install(hub, "test/Missing-Norm", drop_tensor(build_tiny_chat_model(), "model.norm.weight"))
    health = cli("health", "test/Missing-Norm", "--json").json()
    assert health["data"]["summary"]["healthy_count"] == 1
    result = cli("run", "test/Missing-Norm", "Hello", "--json")
    error = result.json()["error"]
    assert (result.exit_code, error["type"]) == (1, "execution_error")
    assert error["message"] == (
        "loading test/Missing-Norm failed: ValueError: Missing 1 parameters: model.norm.weight."
    )


def test_a_model_bigger_than_memory_is_refused(cli: Any, models: Path, hub: Path) -> None:
    from mlxk.cache.runnable import total_memory_bytes

    total = total_memory_bytes()
    assert total is not None
    size = total * 2
    files = gen.mlx_chat_model_files(tensors=3)
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    head = len(header).to_bytes(8, "little") + header
    files["model.safetensors"] = gen.Sparse(head, len(head) + size)  # a sparse file: no disk used
    gen.add_model(hub, "test/Huge", files)
    result = cli("run", "test/Huge", "Hello", "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (1, "insufficient_memory")


# --- whole processes: stdin, pipes, a terminal -------------------------------------------------


def test_stdin_with_dash_and_an_instruction(models: Path) -> None:
    proc = mlxk("run", CHAT, "-", "summarize", *GREEDY, "--max-tokens", "5", "--json", input="a document\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"]["prompt"] == "a document\n\n\nsummarize"


def test_piped_stdin_is_the_prompt(models: Path) -> None:
    proc = mlxk("run", CHAT, *GREEDY, "--max-tokens", "5", "--json", input="from a pipe")
    assert json.loads(proc.stdout)["data"]["prompt"] == "from a pipe"


def test_output_to_a_pipe_that_closes_early_is_not_an_error(models: Path) -> None:
    cmd = f"{sys.executable} -m mlxk run {CHAT} Hello --temperature 0 --max-tokens 5000 | head -c 3"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert len(proc.stdout) == 3


def test_plain_text_on_a_pipe(models: Path) -> None:
    proc = mlxk("run", CHAT, "Hello", *GREEDY, "--max-tokens", "20")
    assert proc.returncode == 0 and "\x1b[" not in proc.stdout


def test_no_prompt_and_no_terminal_is_an_error(models: Path) -> None:
    proc = mlxk("run", CHAT, "--json", stdin=subprocess.DEVNULL)
    assert json.loads(proc.stdout)["error"]["type"] == "validation_error"


class Terminal:
    """mlxk on a pseudo-terminal (stdin and stdout), as a person would use it."""

    def __init__(self, *args: str, program: tuple[str, ...] = ("-m", "mlxk")) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, *program, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float = 60.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            assert time.monotonic() < deadline, f"no {marker!r} in {self.seen[-500:]!r}"
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    break
        return self.seen

    def read_until_size(self, size: int, timeout: float = 60.0) -> bytes:
        """Until ``size`` bytes in all have come."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < size:
            assert time.monotonic() < deadline, f"only {len(self.seen)} of {size} bytes: {self.seen[-500:]!r}"
            if select.select([self.master], [], [], 0.1)[0]:
                self.seen += os.read(self.master, 65536)
        return self.seen

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code


def test_interactive_chat_keeps_history_clears_and_exits(models: Path) -> None:
    term = Terminal("run", CHAT, *GREEDY, "--max-tokens", "8")
    term.read_until(b">>> ")
    term.send(b"Hello\n")
    term.read_until(b">>> ", timeout=60)
    mark = len(term.seen)
    term.send(b"/clear\n")
    term.read_until(b"forgotten")
    term.read_until(b">>> ")
    assert len(term.seen) > mark
    term.send(b"/exit\n")
    assert term.close() == 0


def test_ctrl_c_stops_an_answer_and_ctrl_d_leaves(long_model: str) -> None:
    term = Terminal("run", long_model, *GREEDY, "--max-tokens", "1000000")
    term.read_until(b">>> ")
    mark = len(term.seen)
    term.send(b"Hello\n")
    # the line's echo (with the line editor's control codes) is a few bytes; beyond 64 the answer
    # is streaming (a million tokens would take minutes)
    term.read_until_size(mark + 64)
    os.killpg(term.proc.pid, signal.SIGINT)
    term.read_until(b"(stopped)")
    term.read_until(b">>> ")
    term.send(b"\x04")  # Ctrl-D
    assert term.close() == 0


def test_ctrl_c_of_a_one_shot_answer_exits_cleanly(long_model: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "run", long_model, "Hello", *GREEDY, "--max-tokens", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(20)  # it is generating
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"Traceback" not in err and b"interrupted" in err


def test_text_that_is_not_utf8_is_read_not_refused(models: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlxk", "run", CHAT, "-", *GREEDY, "--max-tokens", "3", "--json"],
        input=b"caf\xe9 au lait",
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["data"]["prompt"] == "caf\ufffd au lait"
