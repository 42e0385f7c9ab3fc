"""How a snapshot's kind is read from its files (mlxk.cache.detect), and the name rules
(mlxk.cache.names) that the main tests leave: wildcards, search patterns, Hub revisions. Pure rules,
no cache needed: each case states the kind (or the refusal) a user would see in ``mlxk list``."""

from __future__ import annotations

from typing import Any

import pytest

from mlxk.cache.detect import Kind, detect_kind
from mlxk.cache.names import name_problem, split_remote_spec, validate_pattern
from mlxk.errors import ValidationError

TEXT = ("text-generation",)
CHAT = ("text-generation", "chat")
EMBED = ("embeddings",)

# (name, config.json, README front matter, file names) -> (model type, capabilities)
CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any], set[str], str, tuple[str, ...]]] = [
    # a decoder saved as the bare transformer, architectures given as one string
    ("org/qwen3-base", {"architectures": "Qwen3Model", "model_type": "qwen3"}, {}, set(), "embedding", EMBED),
    # the same with a language-model head: a text model
    ("org/qwen3-base", {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}, {}, set(), "base", TEXT),
    # a head, but the name says it embeds
    ("org/Linq-Embed-Mistral", {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, {}, set(),
     "embedding", EMBED),
    # architectures that are neither a list nor a string count as none
    ("org/thing", {"architectures": 7, "model_type": "llama"}, {}, set(), "base", TEXT),
    # a BERT of a model_type we do not list, by its architecture
    ("org/custom-bert", {"architectures": ["CustomBertForMaskedLM"], "model_type": "custombert"}, {}, set(),
     "embedding", EMBED),
    ("org/x", {"model_type": "llama"}, {"pipeline_tag": "feature-extraction"}, set(), "embedding", EMBED),
    ("org/x", {"model_type": "llama"}, {"tags": ["Sentence-Transformers"]}, set(), "embedding", EMBED),
    ("org/x", {"model_type": "llama"}, {}, {"sentence_bert_config.json"}, "embedding", EMBED),
    ("org/x", {"model_type": "whisper", "architectures": ["WhisperModel"]}, {}, set(), "audio", ("audio",)),
    ("org/x", {"model_type": "llama"}, {"pipeline_tag": "text-to-speech"}, set(), "audio", ("audio",)),
    ("org/x", {"model_type": "llava", "vision_config": {}}, {}, set(), "base", (*TEXT, "vision")),
    ("org/x", None, {"pipeline_tag": "image-text-to-text"}, set(), "base", (*TEXT, "vision")),
    ("org/x", {"model_type": "llama"}, {}, {"preprocessor_config.json", "tokenizer_config.json"}, "base",
     (*TEXT, "vision")),
    ("org/x", {"model_type": "llama"}, {}, {"preprocessor_config.json"}, "base", TEXT),
    ("org/x", {"model_type": "llama"}, {}, {"chat_template.jinja"}, "chat", CHAT),
    ("org/Llama-3-8B-Instruct", {"model_type": "llama"}, {}, set(), "chat", CHAT),
    ("org/gemma-2-2b-it", {"model_type": "gemma2"}, {}, set(), "chat", CHAT),
    ("org/bert-base-Italian", {"model_type": "llama"}, {}, set(), "base", TEXT),  # "-It…" is no "-it"
]  # fmt: skip


@pytest.mark.parametrize(("name", "config", "front", "files", "model_type", "capabilities"), CASES)
def test_kind_of_a_snapshot(
    name: str,
    config: dict[str, Any] | None,
    front: dict[str, Any],
    files: set[str],
    model_type: str,
    capabilities: tuple[str, ...],
) -> None:
    kind = detect_kind(name, config, front, files, {".safetensors"}, False)
    assert kind == Kind("PyTorch", model_type, capabilities)


def test_a_chat_template_in_the_tokenizer_config_makes_a_chat_model() -> None:
    assert detect_kind("org/x", {"model_type": "llama"}, {}, set(), set(), True) == Kind(
        "Unknown", "chat", CHAT
    )


@pytest.mark.parametrize("name", ["test-model-*", "org/mod?l", "org/[ab]c"])
def test_wildcards_are_refused_with_a_hint(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None and problem.startswith("wildcards are not names")
    assert "`mlxk list PART`" in problem


@pytest.mark.parametrize("pattern", ["", "a b", "qwen*", "ä", "x" * 97])
def test_invalid_search_patterns(pattern: str) -> None:
    with pytest.raises(ValidationError, match=r"^invalid model pattern "):
        validate_pattern(pattern)


def test_search_patterns_may_start_or_end_anywhere() -> None:
    for pattern in ("-Instruct", "4bit.", "org/", "/name", "a--b"):
        assert validate_pattern(pattern) == pattern


def test_remote_specs_with_and_without_a_revision() -> None:
    assert split_remote_spec("org/name") == ("org/name", None)
    assert split_remote_spec("org/name@main") == ("org/name", "main")
    assert split_remote_spec("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    for bad in (
        "org/name@",
        "org/name@../x",
        "org/name@a//b",
        "org/name@x.lock",
        "org/name@/abs",
        "o@" + "a" * 256,
    ):
        with pytest.raises(ValidationError, match=r"^invalid revision "):
            split_remote_spec(bad)
