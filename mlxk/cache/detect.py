"""Framework, model type and capabilities, read from config.json, README front matter and
the tokenizer files of a snapshot."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mlxk.cache.frontmatter import as_list

EMBEDDING_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "nomic_bert", "modernbert", "distilbert", "mpnet", "e5", "gte"}
)
AUDIO_MODEL_TYPES = frozenset({"whisper", "wav2vec2", "hubert", "encodec", "speecht5"})
EMBEDDING_PIPELINES = frozenset({"sentence-similarity", "feature-extraction"})
AUDIO_PIPELINES = frozenset({"automatic-speech-recognition", "text-to-speech", "audio-classification"})
VISION_PIPELINES = frozenset({"image-text-to-text", "image-to-text", "visual-question-answering"})
SENTENCE_TRANSFORMER_FILES = ("modules.json", "sentence_bert_config.json")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# name parts that mark a chat-tuned model: "-Instruct", "-chat", "-it" (not "-Italian")
# a decoder saved as an embedder: "Qwen3-Embedding-0.6B", "Linq-Embed-Mistral"
EMBED_NAME_HINT = re.compile(r"embed", re.IGNORECASE)
CHAT_NAME_HINT = re.compile(r"(?:^|[-_.])(?:instruct|chat|it|rlhf|dpo|sft)(?:$|[-_.\d])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Kind:
    framework: str
    model_type: str
    capabilities: tuple[str, ...]


def detect_framework(
    name: str, config: Mapping[str, Any] | None, front: Mapping[str, Any], weight_suffixes: set[str]
) -> str:
    if ".gguf" in weight_suffixes and ".safetensors" not in weight_suffixes:
        return "GGUF"
    library = " ".join(as_list(front.get("library_name"))).lower()
    tags = {t.lower() for t in as_list(front.get("tags"))}
    org = name.split("/", 1)[0].lower() if "/" in name else ""
    # mlx-lm writes its quantization settings as "quantization"; transformers uses "quantization_config"
    mlx_quantized = config is not None and isinstance(config.get("quantization"), dict)
    if library == "mlx" or "mlx" in tags or org == "mlx-community" or mlx_quantized:
        return "MLX"
    if weight_suffixes & {".safetensors", ".bin", ".pt", ".pth"}:
        return "PyTorch"
    return "Unknown"


def _architectures(config: Mapping[str, Any]) -> list[str]:
    archs = config.get("architectures") or []
    if isinstance(archs, str):
        return [archs]
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


def _is_decoder_embedding(name: str, config: Mapping[str, Any]) -> bool:
    """A causal language model's config kept as an embedder: saved as the bare transformer
    (architectures like "Qwen3Model", "MistralModel": no language-model head), or a decoder
    whose name says it embeds."""
    archs = _architectures(config)
    model_type = str(config.get("model_type") or "").lower()
    if (
        not archs
        or not model_type
        or model_type in AUDIO_MODEL_TYPES
        or isinstance(config.get("vision_config"), dict)
    ):
        return False
    if all(a.endswith("Model") for a in archs):
        return True
    short = name.rsplit("/", 1)[-1]
    return EMBED_NAME_HINT.search(short) is not None and all(
        a.endswith(("ForCausalLM", "Model")) for a in archs
    )


def _is_embedding(
    name: str, config: Mapping[str, Any], front: Mapping[str, Any], file_names: Collection[str]
) -> bool:
    model_type = str(config.get("model_type") or "").lower()
    if model_type in EMBEDDING_MODEL_TYPES or _is_decoder_embedding(name, config):
        return True
    if any(a.endswith(("Model", "ForMaskedLM")) and "Bert" in a for a in _architectures(config)):
        return True
    if str(front.get("pipeline_tag") or "") in EMBEDDING_PIPELINES:
        return True
    if "sentence-transformers" in {t.lower() for t in as_list(front.get("tags"))}:
        return True
    return any(f in file_names for f in SENTENCE_TRANSFORMER_FILES)


def _is_audio(config: Mapping[str, Any], front: Mapping[str, Any]) -> bool:
    model_type = str(config.get("model_type") or "").lower()
    return model_type in AUDIO_MODEL_TYPES or str(front.get("pipeline_tag") or "") in AUDIO_PIPELINES


def _has_vision(config: Mapping[str, Any], front: Mapping[str, Any], file_names: Collection[str]) -> bool:
    if isinstance(config.get("vision_config"), dict):
        return True
    if str(front.get("pipeline_tag") or "") in VISION_PIPELINES:
        return True
    return "preprocessor_config.json" in file_names and "tokenizer_config.json" in file_names


def _is_chat(name: str, has_chat_template: bool, file_names: Collection[str]) -> bool:
    if has_chat_template or any(f in file_names for f in CHAT_TEMPLATE_FILES):
        return True
    return CHAT_NAME_HINT.search(name.rsplit("/", 1)[-1]) is not None


def detect_kind(
    name: str,
    config: Mapping[str, Any] | None,
    front: Mapping[str, Any],
    file_names: Collection[str],
    weight_suffixes: set[str],
    has_chat_template: bool,
) -> Kind:
    framework = detect_framework(name, config, front, weight_suffixes)
    cfg: Mapping[str, Any] = config or {}
    if _is_embedding(name, cfg, front, file_names):
        return Kind(framework, "embedding", ("embeddings",))
    if _is_audio(cfg, front):
        return Kind(framework, "audio", ("audio",))
    capabilities = ["text-generation"]
    model_type = "base"
    if _is_chat(name, has_chat_template, file_names):
        model_type = "chat"
        capabilities.append("chat")
    if _has_vision(cfg, front, file_names):
        capabilities.append("vision")
    return Kind(framework, model_type, tuple(capabilities))
