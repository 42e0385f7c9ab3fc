"""Tiny decoder-based embedding models built offline: a Qwen3 (mlx-lm's ``qwen3``) of hidden size 64
with the character tokenizer of tests.modelfix, whose post-processor appends ``<|endoftext|>`` as
Qwen3-Embedding's tokenizer does, and the sentence-transformers files of Qwen3-Embedding
(last-token pooling, its query prompt).

Variants: ``"st"`` is laid out like Qwen/Qwen3-Embedding (Qwen3ForCausalLM config, weights under
mlx-lm's ``model.`` names, modules.json, 1_Pooling, prompts); ``"bare"`` like a checkpoint saved
from the transformer alone (``Qwen3Model``, weights without the ``model.`` prefix, no head, no
sentence-transformers files); ``"mlx"`` like a conversion that kept only config, weights and
tokenizer (detected by its name).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import cachegen as gen
from tests.modelfix import _char_tokenizer

QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
HIDDEN = 64
EOT = "<|endoftext|>"


def qwen3_config(vocab_size: int, architecture: str = "Qwen3ForCausalLM") -> dict[str, Any]:
    return {
        "architectures": [architecture],
        "model_type": "qwen3",
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 512,
        "torch_dtype": "float32",
    }


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def build_tiny_qwen3_embedding(variant: str = "st", seed: int = 11) -> dict[str, bytes]:
    import mlx.core as mx
    from mlx_lm.models.qwen3 import Model, ModelArgs
    from mlx_lm.utils import save_model
    from tokenizers import processors

    tokenizer = _char_tokenizer()
    eot = tokenizer.token_to_id(EOT)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOT}", pair=f"$A {EOT} $B {EOT}", special_tokens=[(EOT, eot)]
    )
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = qwen3_config(vocab_size, "Qwen3Model" if variant == "bare" else "Qwen3ForCausalLM")
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    mx.eval(model.parameters())
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="mlxk-tiny-embed-") as tmp:
        out = Path(tmp)
        if variant == "bare":
            weights = dict(_flatten(model.parameters()))
            bare = {k.removeprefix("model."): v for k, v in weights.items() if not k.startswith("lm_head.")}
            mx.save_safetensors(str(out / "model.safetensors"), bare, metadata={"format": "pt"})
        else:
            save_model(out, model)
        for path in sorted(out.iterdir()):
            files[path.name] = path.read_bytes()
    files["config.json"] = _json(config)
    files["tokenizer.json"] = tokenizer.to_str(pretty=True).encode()
    files["tokenizer_config.json"] = _json({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT, "pad_token": EOT,
        "model_max_length": 512, "padding_side": "left",
    })  # fmt: skip
    if variant == "st":
        files["modules.json"] = _json([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ])  # fmt: skip
        files["1_Pooling/config.json"] = _json({
            "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True, "include_prompt": True,
        })  # fmt: skip
        files["config_sentence_transformers.json"] = _json(
            {"prompts": {"query": QUERY_PROMPT, "document": ""}, "default_prompt_name": None}
        )
        files["README.md"] = gen.readme(
            "sentence-transformers", ("sentence-transformers",), pipeline="feature-extraction"
        )
    return dict(sorted(files.items()))


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flatten(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [kv for i, v in enumerate(tree) for kv in _flatten(v, f"{prefix}{i}.")]
    return [(prefix[:-1], tree)]
