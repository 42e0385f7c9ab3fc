"""Decoder-based embedding models (mlxk.embedding.decoder) on tiny random Qwen3 models built offline
(tests.embedfix), against an independent numpy forward pass in float64; their detection by
``list``, ``mlxk embed`` (``--query``, ``--instruct``, ``--dimensions``) and ``/v1/embeddings``
(token arrays, ``dimensions``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest

from mlxk.embedding.common import DEFAULT_TASK, Embedder
from mlxk.embedding.loader import load_embedder
from mlxk.errors import ValidationError
from mlxk.server.app import ServerSettings
from tests.embedfix import QUERY_PROMPT, build_tiny_qwen3_embedding
from tests.minilm import REPO as MINILM
from tests.minilm import install_minilm
from tests.modelfix import install
from tests.servefix import Client, run_in_process

Array = np.ndarray[Any, Any]
NAMES = {
    "st": "test/Qwen3-Embedding-Tiny",
    "bare": "test/tiny-qwen3-bare",
    "mlx": "mlx-test/Qwen3-Embedding-Tiny-mlx",
}
TEXTS = [
    "hello world",
    "A man is eating food.",
    "x",
    "a somewhat longer text, with punctuation; and digits 123",
]
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())


@pytest.fixture(scope="module")
def tiny_embedders() -> dict[str, dict[str, bytes]]:
    return {variant: build_tiny_qwen3_embedding(variant) for variant in NAMES}


@pytest.fixture
def cache(hub: Path, tiny_embedders: dict[str, dict[str, bytes]]) -> Path:
    for variant, name in NAMES.items():
        install(hub, name, tiny_embedders[variant])
    return hub


def snapshot(hub: Path, variant: str) -> str:
    return str(next((hub / f"models--{NAMES[variant].replace('/', '--')}" / "snapshots").iterdir()))


# ---- the numpy reference ---------------------------------------------------------------------


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    return np.asarray(x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight)


def _rope(x: Array, theta: float) -> Array:
    """RoPE on (heads, length, head_dim), the halves layout (not interleaved)."""
    half = x.shape[-1] // 2
    freqs = theta ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = np.arange(x.shape[1])[:, None] * freqs[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def reference_hidden(p: Mapping[str, Array], config: Mapping[str, Any], ids: list[int]) -> Array:
    """Qwen3's final normed hidden states for one sequence, float64, weights under bare names."""
    heads, kv_heads, size = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    x = p["embed_tokens.weight"][ids]
    length = len(ids)
    causal = np.triu(np.full((length, length), -np.inf), k=1)
    for n in range(config["num_hidden_layers"]):
        w = {k.removeprefix(f"layers.{n}."): v for k, v in p.items() if k.startswith(f"layers.{n}.")}
        h = _rms_norm(x, w["input_layernorm.weight"], eps)
        q = (h @ w["self_attn.q_proj.weight"].T).reshape(length, heads, size).transpose(1, 0, 2)
        k = (h @ w["self_attn.k_proj.weight"].T).reshape(length, kv_heads, size).transpose(1, 0, 2)
        v = (h @ w["self_attn.v_proj.weight"].T).reshape(length, kv_heads, size).transpose(1, 0, 2)
        q = _rope(_rms_norm(q, w["self_attn.q_norm.weight"], eps), theta)
        k = _rope(_rms_norm(k, w["self_attn.k_norm.weight"], eps), theta)
        out = np.zeros((heads, length, size))
        for head in range(heads):
            kv = head // (heads // kv_heads)
            scores = q[head] @ k[kv].T / math.sqrt(size) + causal
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[head] = (scores / scores.sum(axis=1, keepdims=True)) @ v[kv]
        x = x + out.transpose(1, 0, 2).reshape(length, heads * size) @ w["self_attn.o_proj.weight"].T
        h = _rms_norm(x, w["post_attention_layernorm.weight"], eps)
        gate, up = h @ w["mlp.gate_proj.weight"].T, h @ w["mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w["mlp.down_proj.weight"].T
    return _rms_norm(x, p["norm.weight"], eps)


def reference_vectors(folder: str, texts: list[str]) -> list[Array]:
    """Last-token vectors, L2-normalized, of ``texts`` tokenized by ``tokenizers`` directly."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = json.loads(Path(folder, "config.json").read_text())
    params = {
        k.removeprefix("model."): v.astype(np.float64)
        for k, v in load_file(f"{folder}/model.safetensors").items()
    }
    tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
    out = []
    for text in texts:
        last = reference_hidden(params, config, tokenizer.encode(text).ids)[-1]
        out.append(last / np.linalg.norm(last))
    return out


# ---- the embedder ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, tiny_embedders: dict[str, dict[str, bytes]]
) -> dict[str, tuple[str, Embedder]]:
    hub = tmp_path_factory.mktemp("decoders") / "hub"
    hub.mkdir()
    out = {}
    for variant, name in NAMES.items():
        install(hub, name, tiny_embedders[variant])
        folder = snapshot(hub, variant)
        out[variant] = (folder, load_embedder(folder))
    return out


@pytest.mark.parametrize("variant", list(NAMES))
def test_vectors_match_an_independent_numpy_forward_pass(
    loaded: dict[str, tuple[str, Embedder]], variant: str
) -> None:
    folder, embedder = loaded[variant]
    assert (embedder.model_type, embedder.pooling, embedder.dimensions) == ("qwen3", "lasttoken", 64)
    queries = [QUERY_PROMPT + t for t in TEXTS]
    result = embedder.embed(TEXTS + queries, batch_size=3)
    expected = reference_vectors(folder, TEXTS + queries)
    for got, want in zip(result.vectors, expected, strict=True):
        assert np.max(np.abs(np.asarray(got) - want)) < 1e-5
    # the tokenizer appends <|endoftext|>, whose state is the vector
    assert result.token_counts[:4] == [len(t) + 1 for t in TEXTS]


def test_padding_in_a_batch_changes_nothing(loaded: dict[str, tuple[str, Embedder]]) -> None:
    _, embedder = loaded["st"]
    alone = [embedder.embed([t]).vectors[0] for t in TEXTS]
    together = embedder.embed(TEXTS, batch_size=len(TEXTS)).vectors
    assert np.max(np.abs(np.asarray(alone) - np.asarray(together))) < 1e-5


def test_query_prompt_and_instructions(loaded: dict[str, tuple[str, Embedder]]) -> None:
    _, st = loaded["st"]
    assert st.query_prompt() == QUERY_PROMPT
    assert st.query_prompt("Find code") == "Instruct: Find code\nQuery:"
    _, plain = loaded["mlx"]  # no prompts file: Qwen3-Embedding's format and default task
    assert plain.query_prompt() == f"Instruct: {DEFAULT_TASK}\nQuery:"
    prefixed = st.embed(["what is mlx"], prefix=st.query_prompt("Find code")).vectors[0]
    literal = st.embed(["Instruct: Find code\nQuery:what is mlx"]).vectors[0]
    assert prefixed == literal


def test_matryoshka_dimensions_cut_and_renormalize(loaded: dict[str, tuple[str, Embedder]]) -> None:
    _, embedder = loaded["st"]
    raw = np.asarray(embedder.embed(TEXTS, normalize=False).vectors)
    short = embedder.embed(TEXTS, dimensions=16)
    assert short.dimensions == 16
    want = raw[:, :16] / np.linalg.norm(raw[:, :16], axis=1, keepdims=True)
    assert np.max(np.abs(np.asarray(short.vectors) - want)) < 1e-6
    for bad in (0, 65):
        with pytest.raises(ValidationError, match="from 1 to 64"):
            embedder.embed(TEXTS, dimensions=bad)


def test_token_ids_give_the_vectors_of_their_text(loaded: dict[str, tuple[str, Embedder]]) -> None:
    _, embedder = loaded["st"]
    ids, _ = embedder.tokenize(TEXTS)
    assert embedder.embed_ids(ids).vectors == embedder.embed(TEXTS).vectors
    with pytest.raises(ValidationError, match=r"input 1: token 2 \(100\)"):
        embedder.embed_ids([[5, 6], [5, 6, embedder.vocab_size]])


# ---- list, show, embed -------------------------------------------------------------------------


def test_list_calls_each_layout_an_embedding_model(cli: Any, cache: Path) -> None:
    models = {m["name"]: m for m in cli("list", "--json").json()["data"]["models"]}
    for name in NAMES.values():
        assert models[name]["model_type"] == "embedding" and models[name]["capabilities"] == ["embeddings"]
    shown = cli("show", NAMES["bare"], "--json").json()["data"]
    assert shown["model"]["model_type"] == "embedding"


def test_embed_command_query_instruct_dimensions(cli: Any, cache: Path) -> None:
    name = NAMES["st"]
    doc = cli("embed", name, "what is mlx", "--json").json()
    assert doc["status"] == "success" and doc["data"]["dimensions"] == 64
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft7Validator)
    query = cli("embed", name, "what is mlx", "--query", "--json").json()["data"]["embeddings"][0]
    task = cli("embed", name, "what is mlx", "--instruct", "Find code", "--json").json()["data"][
        "embeddings"
    ][0]
    literal = cli("embed", name, "Instruct: Find code\nQuery:what is mlx", "--json").json()["data"][
        "embeddings"
    ][0]
    assert task["embedding"] == literal["embedding"]
    assert query["embedding"] != doc["data"]["embeddings"][0]["embedding"] != task["embedding"]
    assert query["tokens"] == len(QUERY_PROMPT) + len("what is mlx") + 1
    short = cli("embed", name, "what is mlx", "--dimensions", "8", "--json").json()["data"]
    vector = short["embeddings"][0]["embedding"]
    assert short["dimensions"] == 8 and len(vector) == 8 and abs(math.fsum(v * v for v in vector) - 1) < 1e-6


def test_embed_command_refusals(cli: Any, cache: Path, minilm_files: dict[str, bytes]) -> None:
    install_minilm(cache, minilm_files)
    errors = [
        cli("embed", MINILM, "x", "--instruct", "Find code", "--json"),
        cli("embed", MINILM, "x", "--dimensions", "128", "--json"),
        cli("embed", NAMES["st"], "x", "--dimensions", "65", "--json"),
        cli("embed", NAMES["st"], "x", "--dimensions", "abc", "--json"),
    ]
    assert [e.json()["error"]["type"] for e in errors] == ["validation_error"] * 4
    assert "task instruction" in errors[0].json()["error"]["message"]
    assert "384 dimensions only" in errors[1].json()["error"]["message"]


# ---- the server --------------------------------------------------------------------------------


def test_endpoint_dimensions_and_token_arrays(cache: Path, minilm_files: dict[str, bytes]) -> None:
    install_minilm(cache, minilm_files)
    name = NAMES["st"]
    folder = snapshot(cache, "st")
    from tokenizers import Tokenizer

    ids = [Tokenizer.from_file(f"{folder}/tokenizer.json").encode(t).ids for t in TEXTS[:2]]

    async def scenario(call: Client) -> dict[str, httpx.Response]:
        async def post(**body: Any) -> httpx.Response:
            return await call("POST", "/v1/embeddings", json={"model": name, **body})

        return {
            "texts": await post(input=TEXTS[:2]),
            "ids": await post(input=ids),
            "one_ids": await post(input=ids[0]),
            "short": await post(input=TEXTS[:2], dimensions=16),
            "too_long": await post(input=TEXTS[0], dimensions=65),
            "bad_id": await post(input=[ids[0], [*ids[1], 10**6]]),
            "bert_dims": await call(
                "POST", "/v1/embeddings", json={"model": MINILM, "input": "x", "dimensions": 100}
            ),
            "bert_ids": await call(
                "POST", "/v1/embeddings", json={"model": MINILM, "input": [[101, 7592, 102]]}
            ),
        }

    r = run_in_process(ServerSettings(hub_root=str(cache)), scenario)
    texts = [d["embedding"] for d in r["texts"].json()["data"]]
    assert [d["embedding"] for d in r["ids"].json()["data"]] == texts
    # alone rather than in a padded batch of two: equal up to float32 rounding
    assert np.max(np.abs(np.asarray(r["one_ids"].json()["data"][0]["embedding"]) - texts[0])) < 1e-5
    assert r["ids"].json()["usage"]["prompt_tokens"] == sum(len(row) for row in ids)
    short = [d["embedding"] for d in r["short"].json()["data"]]
    assert [len(v) for v in short] == [16, 16]
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-6 for v in short)
    for key, param, words in [
        ("too_long", "dimensions", "from 1 to 64"),
        ("bad_id", "input", f"input[1][{len(ids[1])}] is token id 1000000"),
        ("bert_dims", "dimensions", "384 dimensions only"),
    ]:
        error = r[key].json()["error"]
        assert r[key].status_code == 400 and error["param"] == param and words in error["message"], key
    assert r["bert_ids"].status_code == 200 and len(r["bert_ids"].json()["data"][0]["embedding"]) == 384
