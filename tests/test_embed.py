"""``mlxk embed`` and ``POST /v1/embeddings`` with the real all-MiniLM-L6-v2 (from its PyPI package)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from mlxk.server.app import ServerSettings
from tests.minilm import install_minilm
from tests.modelfix import install
from tests.servefix import Client, run_in_process

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CHAT = "test/Tiny-Chat"
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())
FOOD, BREAD, HORSE = "A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."


@pytest.fixture
def cache(hub: Path, minilm_files: dict[str, bytes], tiny_models: dict[str, dict[str, bytes]]) -> Path:
    install_minilm(hub)
    install(hub, CHAT, tiny_models["chat"])
    return hub


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_embed_json_envelope(cli: Any, cache: Path) -> None:
    result = cli("embed", MINILM, FOOD, BREAD, HORSE, "--json")
    envelope = result.json()
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    data = envelope["data"]
    assert (
        result.exit_code == 0 and data["dimensions"] == 384 and data["count"] == 3 and data["model"] == MINILM
    )
    food, bread, horse = (e["embedding"] for e in data["embeddings"])
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in (food, bread, horse))
    assert cosine(food, bread) > cosine(food, horse) + 0.3


def test_embed_jsonl_by_default_with_pass_through(cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text(
        json.dumps({"text": FOOD, "id": 7}) + "\n\n" + json.dumps({"text": HORSE, "tag": "x"}) + "\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlxk", "embed", MINILM, "--file", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (
        [r["text"] for r in records] == [FOOD, HORSE] and records[0]["id"] == 7 and records[1]["tag"] == "x"
    )
    assert records[0]["metadata"]["dimensions"] == 384 and records[0]["metadata"]["model"] == MINILM
    assert len(records[0]["metadata"]["revision"]) == 40


def test_embed_lines_from_stdin_and_raw_vectors(cache: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlxk", "embed", MINILM, "--no-normalize", "--json"],
        input=f"{FOOD}\n{BREAD}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(proc.stdout)["data"]
    assert data["count"] == 2 and data["normalized"] is False
    norm = math.sqrt(sum(x * x for x in data["embeddings"][0]["embedding"]))
    assert abs(norm - 1) > 0.01  # pooled, not normalized


def test_embed_truncates_long_text_and_says_so(cli: Any, cache: Path) -> None:
    result = cli("embed", MINILM, "word " * 2000, "--json")
    entry = result.json()["data"]["embeddings"][0]
    assert entry["truncated"] is True and "truncated" in result.stderr


@pytest.mark.parametrize(
    ("args", "error_type"),
    [
        ((CHAT, "hello"), "model_incompatible"),
        (("nothing-like-it", "hello"), "model_not_found"),
        ((MINILM, "--batch-size", "0", "x"), "validation_error"),
    ],
)
def test_embed_errors(cli: Any, cache: Path, args: tuple[str, ...], error_type: str) -> None:
    result = cli("embed", *args, "--json")
    assert result.exit_code == 1 and result.json()["error"]["type"] == error_type


def test_embed_bad_files(cli: Any, cache: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert cli("embed", MINILM, "--file", str(empty), "--json").json()["error"]["type"] == "validation_error"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"no_text": 1}\n')
    assert cli("embed", MINILM, "--file", str(bad), "--json").json()["error"]["type"] == "validation_error"
    assert (
        cli("embed", MINILM, "--file", str(tmp_path / "missing"), "--json").json()["error"]["type"]
        == "validation_error"
    )


# --- the server -------------------------------------------------------------------------------


def serve(cache: Path, scenario: Callable[[Client], Awaitable[Any]], **options: Any) -> Any:
    return run_in_process(ServerSettings(hub_root=str(cache), **options), scenario)


def test_embeddings_endpoint_shapes_and_formats(cache: Path) -> None:
    async def scenario(call: Client) -> None:
        r = await call("POST", "/v1/embeddings", json={"model": MINILM, "input": [FOOD, BREAD]})
        body = r.json()
        assert r.status_code == 200 and body["object"] == "list" and body["model"] == MINILM
        assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 10
        single = (await call("POST", "/v1/embeddings", json={"model": MINILM, "input": FOOD})).json()
        b64 = (
            await call(
                "POST", "/v1/embeddings", json={"model": MINILM, "input": FOOD, "encoding_format": "base64"}
            )
        ).json()
        decoded = struct.unpack("<384f", base64.b64decode(b64["data"][0]["embedding"]))
        assert max(abs(a - b) for a, b in zip(decoded, single["data"][0]["embedding"], strict=True)) < 1e-6
        assert (
            max(
                abs(a - b)
                for a, b in zip(single["data"][0]["embedding"], body["data"][0]["embedding"], strict=True)
            )
            < 1e-4
        )
        ok = await call("POST", "/v1/embeddings", json={"model": MINILM, "input": FOOD, "dimensions": 384})
        assert ok.status_code == 200
        models = {m["id"]: m for m in (await call("GET", "/v1/models")).json()["data"]}
        assert models[MINILM]["capabilities"] == ["embeddings"] and CHAT in models

    serve(cache, scenario, model=CHAT)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": [1, 2, 10**9]}, "input"),
        ({"input": [[101, 102], [101, -1, 102]]}, "input"),
        ({"input": [[101, 102], []]}, "input"),
        ({"input": [101, "x"]}, "input"),
        ({"input": [True, False]}, "input"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
        ({"input": "word " * 2000}, "input"),
        ({"input": "x", "model": "/etc/passwd"}, "model"),
        ({"input": "x", "model": CHAT}, "model"),
    ],
)
def test_embeddings_bad_requests(cache: Path, body: dict[str, Any], param: str) -> None:
    async def scenario(call: Client) -> httpx.Response:
        return await call("POST", "/v1/embeddings", json={"model": MINILM, **body})

    r = serve(cache, scenario, model=CHAT)
    assert 400 <= r.status_code < 500 and r.json()["error"]["param"] == param


def test_concurrent_requests_are_batched_and_get_their_own_vectors(cache: Path) -> None:
    texts = [FOOD, BREAD, HORSE, "Another sentence.", "And one more, a little longer than the rest of them."]

    async def scenario(call: Client) -> tuple[list[Any], list[Any]]:
        alone = [(await call("POST", "/v1/embeddings", json={"input": t})).json() for t in texts]
        together = await asyncio.gather(*(call("POST", "/v1/embeddings", json={"input": t}) for t in texts))
        return alone, [r.json() for r in together]

    alone, together = serve(cache, scenario, embedding_model=MINILM)
    for a, b in zip(alone, together, strict=True):
        diff = max(
            abs(x - y) for x, y in zip(a["data"][0]["embedding"], b["data"][0]["embedding"], strict=True)
        )
        assert diff < 1e-4


def test_generation_and_embeddings_share_one_mlx_thread(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat stream and embedding requests at once: every MLX call of both runs on the engine thread
    (the embedding batches between two decoding steps), and each answer is still right."""
    import threading

    from mlxk.generation.batch import BatchRunner
    from mlxk.server.embeddings import EmbeddingWorker

    threads: dict[str, set[str]] = {"generation": set(), "embedding": set()}
    step, embed = BatchRunner.step, EmbeddingWorker._embed

    def recorded_step(self: Any) -> None:
        threads["generation"].add(threading.current_thread().name)
        step(self)

    def recorded_embed(self: Any, jobs: Any, model: str) -> None:
        threads["embedding"].add(threading.current_thread().name)
        embed(self, jobs, model)

    monkeypatch.setattr(BatchRunner, "step", recorded_step)
    monkeypatch.setattr(EmbeddingWorker, "_embed", recorded_embed)

    async def scenario(call: Client) -> tuple[Any, list[Any]]:
        chat = call("POST", "/v1/chat/completions", json={"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40, "stream": True})  # fmt: skip
        vectors = [call("POST", "/v1/embeddings", json={"model": MINILM, "input": t}) for t in (FOOD, BREAD)]
        answers = await asyncio.gather(chat, *vectors)
        return answers[0], [r.json() for r in answers[1:]]

    chat, (food, bread) = serve(cache, scenario, model=CHAT)
    assert chat.status_code == 200 and chat.text.endswith("data: [DONE]\n\n")
    assert threads == {"generation": {"mlxk-engine"}, "embedding": {"mlxk-engine"}}
    similarity = sum(
        a * b for a, b in zip(food["data"][0]["embedding"], bread["data"][0]["embedding"], strict=True)
    )
    assert similarity > 0.6
