"""``mlxk serve --distributed`` at its edges, on two real ranks of MLX's ring backend over loopback
(the helpers of tests/test_distributed.py): a client that goes away mid-stream cancels the
generation on every rank and the group serves on; a model mlx-lm cannot shard, or one whose hosts
hold different snapshots, is refused at start on every rank; mlx-lm's own refusal of a checkpoint
(in ``sharded_load``) reaches the user."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks import cachegen as gen
from tests.modelfix import build_tiny_chat_model, drop_layer, install
from tests.servefix import metric, wait_for
from tests.test_distributed import (
    CHAT,
    ENDLESS,
    HELLO,
    LONG,
    MLXK_LAUNCH,
    Launched,
    _chat,
    _health,
    launch,
)

HOST = socket.gethostname()
SERVE = [sys.executable, "-m", "mlxk", "serve", "--json", "--port", "0", "--distributed"]


def _queue(url: str) -> int:
    return int(httpx.get(url + "/health", timeout=10).json()["queue"])


def _metrics(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def _finished(launched: Launched, timeout: float = 120) -> list[dict[str, Any]]:
    """Every envelope the ranks printed (the one ``launch`` read first), once the launcher has
    ended (the ranks with it)."""
    launched.proc.wait(timeout=timeout)
    assert launched.proc.stdout is not None
    rest = launched.proc.stdout.read().decode(errors="replace").splitlines()
    return [launched.envelope, *(json.loads(line) for line in rest if line.startswith("{"))]


@pytest.fixture
def cache(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Path:
    """The models of tests/test_distributed.py's ``cache``."""
    install(hub, CHAT, tiny_models["chat"])
    install(hub, LONG, build_tiny_chat_model(max_position_embeddings=10_000_000))
    return hub


@pytest.fixture
def long_group(cache: Path, tmp_path: Path) -> Iterator[Launched]:
    """Both ranks serving the model with room for a generation that never ends by itself."""
    launched = launch(cache, tmp_path / "launch.log", "--model", LONG)
    try:
        wait_for(lambda: _health(launched.url) == 200, "rank 0 to load its shard", 120)
        yield launched
    finally:
        launched.stop()


def test_a_client_that_goes_away_mid_stream_cancels_on_every_rank_and_the_group_serves_on(
    long_group: Launched,
) -> None:
    group = long_group
    before = _chat(group.url, model=LONG)  # what the group answers when nothing else is going on
    body = {**{"model": LONG, "messages": HELLO, "temperature": 0}, "max_tokens": ENDLESS, "stream": True}
    received = 0
    with httpx.stream("POST", group.url + "/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                received += 1
                if received == 3:  # the generation runs on both ranks: the client leaves
                    break
    assert received == 3
    # the closed connection cancels the job: rank 0 shares the cancel, every rank drops the
    # sequence, and the queue drains (the 500,000 tokens asked for would take hours here)
    wait_for(lambda: _queue(group.url) == 0, "the cancelled generation to leave the queue", 60)
    # counted as cancelled (just after the queue shrinks, on the engine thread)
    cancelled = 'mlxk_generations_total{finish_reason="cancelled"}'
    wait_for(lambda: metric(_metrics(group.url), cancelled) == 1, "the cancel to be counted", 60)
    assert metric(_metrics(group.url), "mlxk_queue_depth") == 0
    # the ranks are still in step (a rank still stepping the cancelled sequence would hang the next
    # collective or mix up the answer): the next answer is whole and the same as before
    after = _chat(group.url, model=LONG)
    assert after["choices"][0]["message"] == before["choices"][0]["message"]
    assert after["usage"]["completion_tokens"] == 40 and after["choices"][0]["finish_reason"] == "length"
    assert _health(group.url) == 200 and _queue(group.url) == 0


def test_a_family_mlx_lm_cannot_shard_is_refused_at_start_on_every_rank(cache: Path, tmp_path: Path) -> None:
    from mlx_lm.models import gemma

    # the family: its model has no shard(), its inner model no pipeline()
    assert not hasattr(gemma.Model, "shard") and not hasattr(gemma.GemmaModel, "pipeline")
    name = "test/Tiny-Gemma"
    install(cache, name, build_tiny_chat_model(unshardable=True))
    launched = launch(cache, tmp_path / "launch.log", "--model", name)
    try:
        envelopes = _finished(launched)
        assert len(envelopes) == 2  # one from each rank, the same error
        why = "mlx-lm can shard gemma models neither tensor- nor pipeline-parallel"
        for envelope in envelopes:
            assert envelope["status"] == "error"
            message = envelope["error"]["message"]
            assert message.startswith(f"--distributed: cannot serve {name}: ")
            assert f"{HOST} (rank 0): {why}" in message and f"{HOST} (rank 1): {why}" in message
        assert re.search(r"rank 0 exited with code -?[1-9]", launched.stderr())
        assert re.search(r"rank 1 exited with code -?[1-9]", launched.stderr())
    finally:
        launched.stop()


def test_hosts_with_different_snapshots_of_a_model_are_refused_at_start(cache: Path, tmp_path: Path) -> None:
    # rank 1's host holds the same repository at another commit (other weights)
    other_hub = tmp_path / "rank1-hub"
    other_hub.mkdir()
    (snapshot,) = (cache / ("models--" + CHAT.replace("/", "--")) / "snapshots").iterdir()
    mine = snapshot.name
    theirs = gen.add_model(
        other_hub, CHAT, build_tiny_chat_model(seed=7), real_hash=True, commit="b" * 40
    ).commit
    assert mine != theirs
    script = f'if [ "$MLX_RANK" = 1 ]; then export HF_HUB_CACHE={other_hub}; fi; exec "$@"'
    serve = [*SERVE, "--model", CHAT]
    launched = launch(cache, tmp_path / "launch.log", command=["sh", "-c", script, "sh", *serve])
    try:
        envelopes = _finished(launched)
        assert len(envelopes) == 2
        expected = (
            f"--distributed: cannot serve {CHAT}: the hosts have different snapshots of {CHAT}: "
            f"{HOST} (rank 0) {mine[:12]}, {HOST} (rank 1) {theirs[:12]}"
        )
        assert all(e["status"] == "error" and e["error"]["message"] == expected for e in envelopes)
        assert re.search(r"rank 0 exited with code -?[1-9]", launched.stderr())
        assert re.search(r"rank 1 exited with code -?[1-9]", launched.stderr())
    finally:
        launched.stop()


def test_mlx_lm_refusing_a_checkpoint_short_of_a_layer_reaches_the_user(cache: Path, tmp_path: Path) -> None:
    # a pipeline-only family (qwen3_next, 4 layers) whose weights and index lack layer 3: the cache's
    # checks pass (every file named by the index is whole), mlx-lm's sharded_load refuses it
    name = "test/Tiny-Short"
    install(cache, name, drop_layer(build_tiny_chat_model(pipeline_only=True), 3))
    launched = launch(cache, tmp_path / "launch.log", "--model", name)
    try:
        envelopes = _finished(launched)
        # rank 1 loads its layers before it follows rank 0, and its command ends with mlx-lm's
        # refusal as the error envelope (rank 0 announced its URL before loading: see the report)
        refusal = "The checkpoint has no weights for layers [3]. Convert the model with mlx_lm.convert first."
        errors = [e["error"] for e in envelopes if e["status"] == "error"]
        assert errors and all(e == {"type": "model_incompatible", "message": refusal} for e in errors), (
            envelopes
        )
        log = launched.stderr()
        assert "Node with rank 1 exited with code 1" in log, log
        assert "Traceback" not in log  # a refusal, not a crash
    finally:
        launched.stop()


def test_mlxk_launch_reports_the_rank_that_refused_the_checkpoint(cache: Path, tmp_path: Path) -> None:
    # the same refusal under mlxk launch: its exit status says a rank failed (mlx.launch's own is 0
    # once the other rank has drained at its SIGTERM)
    name = "test/Tiny-Short"
    install(cache, name, drop_layer(build_tiny_chat_model(pipeline_only=True), 3))
    serve = ["serve", "--json", "--port", "0", "--model", name]
    launched = launch(cache, tmp_path / "launch.log", command=serve, launcher=[*MLXK_LAUNCH, "-n", "2"])
    try:
        envelopes = _finished(launched)
        assert launched.proc.returncode == 1
        assert any(e["status"] == "error" and e["error"]["type"] == "model_incompatible" for e in envelopes)
        assert "Node with rank 1 exited with code 1" in launched.stderr()
    finally:
        launched.stop()
