"""What clients and operators meet at the surface of ``mlxk serve``: the OpenAI calls that SDKs and
frameworks make (models.retrieve, context_length_exceeded, a list of prompts, any seed, top_p 0),
browser access (CORS preflights of the JavaScript SDKs, CORS on errors, '*'), names behind a proxy
(--allow-host), and what the process keeps to itself (GC on, no API key in the environment).
Real processes on loopback, driven by the official ``openai`` client or raw HTTP."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modelfix import install
from tests.servefix import ServerProcess, metric, serve_env, start_server

CHAT = "test/Tiny-Chat"
KEY = "open-sesame-7f3a"
AUTH = {"authorization": f"Bearer {KEY}"}
UI = "http://ui.local:5173"
PROXY = "tunnel.example"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    hub = tmp_path_factory.mktemp("surface") / "hub"
    install(hub, CHAT, tiny_models["chat"])
    return hub


@pytest.fixture(scope="module")
def server(module_hub: Path) -> Iterator[ServerProcess]:
    started = start_server(
        module_hub,
        "--model", CHAT, "--api-key", KEY, "--cors-origin", UI, "--allow-host", PROXY,
        log=module_hub.parent / "serve.log",
    )  # fmt: skip
    yield started
    assert started.stop() == 0


def client(server: ServerProcess) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_gc_is_on_in_the_served_process(server: ServerProcess) -> None:
    client(server).chat.completions.create(model=CHAT, messages=HELLO, max_tokens=8)
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert metric(text, "mlxk_python_gc_enabled") == 1
    assert (metric(text, 'python_gc_collections_total{generation="0"}') or 0) > 0


def test_gc_stays_off_only_for_the_short_cache_commands(cli: Any, hub: Path, tiny_models: Any) -> None:
    install(hub, CHAT, tiny_models["chat"])
    try:  # in process: each command starts from what a fresh process has, GC on
        gc.enable()
        assert cli("run", CHAT, "Hi", "--max-tokens", "3", "--json").exit_code == 0
        assert gc.isenabled()  # run (its interactive chat can last hours) collects its cycles
        assert cli("list", "--json").exit_code == 0
        assert not gc.isenabled()  # a short command gains from going without
    finally:
        gc.enable()


DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, urllib.request
    from mlxk.cli import main

    key, port, report = sys.argv[1], sys.argv[2], sys.argv[3]

    def look() -> None:  # once the server answers: what would a child of this process inherit?
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        leaked = sorted(name for name, value in os.environ.items() if key in value)
        with open(report, "w") as out:
            json.dump({"leaked": leaked}, out)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=look, daemon=True).start()
    sys.exit(main(["serve", "--port", port, "--api-key", key]))
    """
)


def test_the_api_key_is_not_handed_over_in_the_environment(module_hub: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, KEY, port, str(report)],
        env=serve_env(module_hub),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert json.loads(report.read_text()) == {"leaked": []}


def test_models_retrieve(server: ServerProcess) -> None:
    import openai

    model = client(server).models.retrieve(CHAT)
    assert model.id == CHAT and model.object == "model" and model.owned_by == "test"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("test/Not-Here")


def test_a_prompt_over_the_context_is_context_length_exceeded(server: ServerProcess) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "x" * 600}], max_tokens=4
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error" and "maximum context length is 512" in error["message"]


def test_cors_preflight_of_the_javascript_sdks_and_cors_on_errors(server: ServerProcess) -> None:
    asked = "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-retry-count"
    preflight = httpx.options(
        server.url + "/v1/chat/completions",
        headers={
            "origin": UI,
            "access-control-request-method": "POST",
            "access-control-request-headers": asked,
        },
    )
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == UI
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert allowed >= {h.strip() for h in asked.split(",")}
    assert "POST" in preflight.headers["access-control-allow-methods"]
    # an error answer carries the CORS headers: the page sees the 401, not an opaque failure
    refused = httpx.post(
        server.url + "/v1/chat/completions", json={"messages": HELLO}, headers={"origin": UI}
    )
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == UI
    assert refused.json()["error"]["code"] == "invalid_api_key"
    bad = httpx.post(
        server.url + "/v1/chat/completions", json={"messages": []}, headers={"origin": UI, **AUTH}
    )
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == UI
    foreign = httpx.get(server.url + "/v1/models", headers={"origin": "http://evil.example", **AUTH})
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers


def test_cors_origin_star_allows_every_origin_with_a_warning(module_hub: Path, tmp_path: Path) -> None:
    server = start_server(module_hub, "--cors-origin", "*", log=tmp_path / "serve.log")
    try:
        for origin in ("http://localhost:3000", "https://app.example"):
            answer = httpx.get(server.url + "/v1/models", headers={"origin": origin})
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
        assert "--cors-origin '*'" in server.stderr()
    finally:
        assert server.stop() == 0


def test_allow_host_names_a_proxy_in_front(server: ServerProcess) -> None:
    through_proxy = httpx.get(server.url + "/v1/models", headers={"host": f"{PROXY}:443", **AUTH})
    assert through_proxy.status_code == 200
    rebinding = httpx.get(server.url + "/v1/models", headers={"host": "attacker.example", **AUTH})
    assert rebinding.status_code == 403 and rebinding.json()["error"]["code"] == "forbidden_host"


def test_allow_host_refuses_what_is_not_a_host_name(module_hub: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--allow-host", "http://x.example/"],
        capture_output=True,
        env=serve_env(module_hub),
        timeout=120,
    )
    envelope = json.loads(result.stdout)
    assert result.returncode == 1 and envelope["error"]["type"] == "validation_error"
    assert "--allow-host takes a bare host name" in envelope["error"]["message"]


def test_completions_with_a_list_of_prompts_answer_each(server: ServerProcess) -> None:
    prompts = ["Hello", "Good bye", "x"]
    one_by_one = [
        client(server).completions.create(model=CHAT, prompt=p, max_tokens=5, temperature=0) for p in prompts
    ]
    together = client(server).completions.create(model=CHAT, prompt=prompts, max_tokens=5, temperature=0)
    assert [c.index for c in together.choices] == [0, 1, 2]
    assert [c.text for c in together.choices] == [r.choices[0].text for r in one_by_one]
    assert together.usage is not None and together.usage.completion_tokens == 15
    assert together.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in one_by_one if r.usage)
    texts = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in client(server).completions.create(
        model=CHAT, prompt=prompts, max_tokens=5, temperature=0, stream=True
    ):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert finished == {0, 1, 2} and list(texts.values()) == [c.text for c in together.choices]


def test_a_negative_seed_is_taken_and_repeats(server: ServerProcess) -> None:
    def sample(seed: int) -> str:
        answer = client(server).chat.completions.create(
            model=CHAT, messages=HELLO, max_tokens=16, temperature=1.0, seed=seed
        )
        return str(answer.choices[0].message.content)

    assert sample(-7) == sample(-7)
    assert sample(-(2**63)) == sample(-(2**63))


def test_top_p_zero_keeps_only_the_most_likely_token(server: ServerProcess) -> None:
    def text(**sampling: Any) -> str:
        answer = client(server).chat.completions.create(model=CHAT, messages=HELLO, max_tokens=16, **sampling)
        return str(answer.choices[0].message.content)

    greedy = text(temperature=0)
    assert [text(temperature=1.5, top_p=0, seed=seed) for seed in (1, 2, 3)] == [greedy] * 3
    assert text(temperature=1.5, top_p=0) == greedy  # unseeded too
