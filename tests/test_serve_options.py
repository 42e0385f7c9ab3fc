"""``mlxk serve``'s options refused at start with what they take (exit 1, validation_error), before
anything listens or loads; and the warning of a server that other machines can reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
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
    (("--allow-host", "https://proxy.example"), "--allow-host takes a bare host name, without scheme, "),
    (("--allow-host", ""), "--allow-host takes a host name of 1 to 253 characters, not ''"),
    (("--model-alias", "claude-*"), "--model-alias takes PATTERN=MODEL, not 'claude-*'"),
    (("--model-alias", "=org/model"), "--model-alias takes PATTERN=MODEL, not '=org/model'"),
    (("--model-alias", "claude-*=../x"), "--model-alias 'claude-*=../x': '../x' is not a model name ("),
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


@pytest.mark.parametrize("option", ["--model", "--tool-format"])
def test_a_model_not_in_the_cache_is_refused_at_start(cli: Any, hub: Path, option: str) -> None:
    value = "org/absent" if option == "--model" else "org/absent=none"
    result = cli("serve", "--json", option, value)
    envelope = json.loads(result.stdout)
    assert result.exit_code == 1 and envelope["error"]["type"] == "model_not_found", envelope
    assert "org/absent" in envelope["error"]["message"]


def test_a_chat_model_mlx_lm_cannot_run_is_refused_with_its_reason(cli: Any, hub: Path) -> None:
    """Not with the reason it is no embedding model either: it is a chat model, and why it cannot
    run is what the user needs (the same reason run gives)."""
    files = gen.mlx_chat_model_files(tensors=4)
    config = json.loads(files["config.json"])  # type: ignore[arg-type]
    files["config.json"] = json.dumps({**config, "model_type": "nosuchtype"}).encode()
    gen.add_model(hub, "org/Strange-4bit", files, real_hash=True)
    served = json.loads(cli("serve", "--json", "--model", "org/Strange-4bit").stdout)["error"]
    ran = json.loads(cli("run", "org/Strange-4bit", "hello", "--json").stdout)["error"]
    assert served["type"] == ran["type"] == "model_incompatible"
    assert served["message"] == ran["message"]
    assert served["message"].startswith("org/Strange-4bit cannot run with this mlx-lm: ")
    assert "'nosuchtype'" in served["message"]


@pytest.mark.parametrize("key", [None, "k3y"])
def test_a_server_open_to_every_web_page_says_so(hub: Path, tmp_path: Path, key: str | None) -> None:
    args = ("--cors-origin", "*", "--no-ui", *(("--api-key", key) if key else ()))
    server = start_server(hub, *args, log=tmp_path / "serve.log")
    assert server.stop() == 0
    warning = "Warning: --cors-origin '*': every web page open in a browser here can use this server"
    lines = server.stderr().splitlines()
    assert (warning if key else f"{warning} (no --api-key protects it)") in lines


def test_an_embedding_model_mlxk_cannot_run_is_refused_at_start(cli: Any, hub: Path) -> None:
    """An embedding model is served for /v1/embeddings, not refused for not generating; one of a
    kind mlxk has no forward pass for is refused with that reason."""
    from tests.embedfix import build_tiny_qwen3_embedding

    files = build_tiny_qwen3_embedding("st")
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps({**config, "model_type": "t5"}).encode()
    gen.add_model(hub, "org/T5-Embedding", files, real_hash=True)
    result = cli("serve", "--json", "--model", "org/T5-Embedding")
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 1 and error["type"] == "model_incompatible"
    assert error["message"].startswith(
        "org/T5-Embedding is an embedding model of an unsupported kind, not an embedding model mlxk can run"
    )


def test_an_embedding_model_given_at_start_answers_embeddings(hub: Path, tmp_path: Path) -> None:
    import httpx

    from tests.embedfix import HIDDEN, build_tiny_qwen3_embedding

    gen.add_model(hub, "org/Tiny-Embedding", build_tiny_qwen3_embedding("st"), real_hash=True)
    server = start_server(hub, "--model", "org/Tiny-Embedding", "--no-ui", log=tmp_path / "serve.log")
    try:
        assert server.envelope["data"]["model"] == "org/Tiny-Embedding"
        answer = httpx.post(server.url + "/v1/embeddings", json={"input": "hello"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"][0]["embedding"]) == HIDDEN  # the model given at start, by default
    finally:
        assert server.stop() == 0
