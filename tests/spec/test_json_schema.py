"""Real output of every command, validated against docs/json-api-schema.json (draft-07)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from benchmarks import cachegen as gen
from tests.cachefix import healthy_model

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "json-api-schema.json").read_text())
pytestmark = pytest.mark.usefixtures("core")


def validate(envelope: Any) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)


@pytest.fixture
def varied(hub: Path) -> Path:
    healthy_model(hub, "mlx-community/Chat-4bit")
    healthy_model(hub, "mlx-community/Base-4bit", chat=False)
    bert = {
        "config.json": b'{"model_type": "bert", "architectures": ["BertModel"]}',
        "model.safetensors": gen.safetensors_file(gen.tensor_entries(3, "F32")),
        "modules.json": b"[]",
        "README.md": gen.readme("sentence-transformers", ["sentence-transformers"]),
    }
    gen.add_model(hub, "sentence-transformers/all-MiniLM-L6-v2", bert)
    gen.add_model(hub, "TheBloke/Tiny-GGUF", {"tiny.Q4_0.gguf": b"GGUF" + bytes(60)})
    torch = {
        "config.json": gen.llama_config(quantized=False),
        "model.safetensors": gen.safetensors_file(gen.tensor_entries(3)),
    }
    gen.add_model(hub, "meta/Llama-torch", torch)
    broken = healthy_model(hub, "org/broken")
    broken.blob_of("model.safetensors").unlink()
    (hub / "models--org--garbage").write_bytes(b"junk")
    gen.add_model(
        hub, "org/odd-snapshot", gen.mlx_chat_model_files(tensors=3), commit="not-a-commit", ref=None
    )
    garbage_ref = healthy_model(hub, "org/garbage-ref")
    (garbage_ref.repo_dir / "refs" / "main").write_text("this is no commit\n")
    return hub


def test_list(cli, varied: Path) -> None:
    out = cli("list", "--json").json()
    validate(out)
    kinds = {m["name"]: (m["framework"], m["model_type"], m["capabilities"]) for m in out["data"]["models"]}
    assert kinds["sentence-transformers/all-MiniLM-L6-v2"][1:] == ("embedding", ["embeddings"])
    assert kinds["TheBloke/Tiny-GGUF"][0] == "GGUF"
    assert kinds["meta/Llama-torch"][0] == "PyTorch"
    assert kinds["mlx-community/Chat-4bit"] == ("MLX", "chat", ["text-generation", "chat"])


def test_health(cli, varied: Path) -> None:
    out = cli("health", "--json").json()
    validate(out)
    assert out["data"]["summary"]["unhealthy_count"] == 3


def test_hash_is_null_unless_a_commit(cli, varied: Path) -> None:
    models = {m["name"]: m for m in cli("list", "--json").json()["data"]["models"]}
    assert models["org/odd-snapshot"]["hash"] is None and models["org/odd-snapshot"]["health"] == "healthy"
    assert models["org/garbage-ref"]["hash"] is None and models["org/garbage-ref"]["health"] == "unhealthy"


@pytest.mark.parametrize("flags", [(), ("--files",), ("--config",), ("--files", "--config")])
def test_show(cli, varied: Path, flags: tuple[str, ...]) -> None:
    for name in ("mlx-community/Chat-4bit", "org/broken", "org/garbage", "TheBloke/Tiny-GGUF"):
        validate(cli("show", name, "--json", *flags).json())


def test_version(cli) -> None:
    validate(cli("--version", "--json").json())


@pytest.mark.parametrize(
    "args",
    [
        ("show", "zzz"),
        ("show", "mlx-community"),
        ("show", "a b"),
        ("show", "org/broken@ffff"),
        ("health", "zzz"),
        ("list", "--nope"),
        ("launch", "-n", "2"),
    ],
)
def test_errors(cli, varied: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, "--json")
    assert result.exit_code == 1
    validate(result.json())


def test_schema_is_strict_where_the_contract_is(cli, varied: Path) -> None:
    """The schema itself must reject what the contract forbids, or the tests above prove little."""
    good = cli("list", "--json").json()
    extra_key = copy.deepcopy(good)
    extra_key["data"]["models"][0]["extra"] = 1
    missing_key = copy.deepcopy(good)
    del missing_key["data"]["models"][0]["reason"]
    bad_time = copy.deepcopy(good)
    bad_time["data"]["models"][0]["last_modified"] = "2024-01-01T00:00:00+02:00"
    extra_envelope = {**good, "version": 1}
    for broken in (extra_key, missing_key, bad_time, extra_envelope):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)
