"""What ``mlxk list`` says a model is (``model_type`` and ``capabilities``), read from its config,
its README front matter and its files, for the kinds of snapshot the Hub holds besides chat models:
vision-language models, audio models, and encoders described only by their card or their files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen

WEIGHTS = gen.safetensors_file(gen.tensor_entries(2, dims=(8, 8)))


def snapshot(config: dict[str, Any], readme: bytes = b"", **files: bytes) -> dict[str, Any]:
    return {
        "config.json": json.dumps(config).encode(),
        "README.md": readme or gen.readme(),
        "model.safetensors": WEIGHTS,
        **{name.replace("__", "."): content for name, content in files.items()},
    }


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
KINDS = [
    # a vision-language model: its config has a vision tower
    ("org/VL-Chat", snapshot({**LLAMA, "vision_config": {"hidden_size": 8}}, chat_template__jinja=b"{{ x }}"), "chat", ["text-generation", "chat", "vision"]),
    # ... or its card says so
    ("org/Captioner", snapshot(LLAMA, gen.readme(pipeline="image-to-text")), "base", ["text-generation", "vision"]),
    # ... or it has an image processor next to its tokenizer
    ("org/Pixels", snapshot(LLAMA, preprocessor_config__json=b"{}", tokenizer_config__json=b"{}"), "base", ["text-generation", "vision"]),
    # audio: by its architecture, or by its card
    ("org/Whisper-Tiny", snapshot({"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper"}), "audio", ["audio"]),
    ("org/Speaker", snapshot(LLAMA, gen.readme(pipeline="text-to-speech")), "audio", ["audio"]),
    # encoders: a BERT architecture under another model_type, a card's pipeline or tag, its files
    ("org/Bert-Like", snapshot({"architectures": "CustomBertModel", "model_type": "custom"}), "embedding", ["embeddings"]),
    ("org/Features", snapshot({"model_type": "custom"}, gen.readme(pipeline="feature-extraction")), "embedding", ["embeddings"]),
    ("org/Sentences", snapshot({"model_type": "custom"}, gen.readme(tags=("mlx", "Sentence-Transformers"))), "embedding", ["embeddings"]),
    ("org/Modules", snapshot({"model_type": "custom"}, modules__json=b"[]"), "embedding", ["embeddings"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "files", "model_type", "capabilities"), KINDS, ids=[k[0] for k in KINDS])
def test_model_type_and_capabilities(
    cli: Any, hub: Path, core: str, name: str, files: dict[str, Any], model_type: str, capabilities: list[str]
) -> None:
    gen.add_model(hub, name, files)
    result = cli("list", "--all", "--json")
    (model,) = json.loads(result.stdout)["data"]["models"]
    assert (model["name"], model["model_type"], model["capabilities"]) == (name, model_type, capabilities)
