"""Tiny real models of each model family: the family's official chat template (tests/data/templates),
a character-level tokenizer that knows the family's special tokens (each one token, as in the real
tokenizer), its end-of-turn tokens as eos, and the tiny llama's random weights with a context of
8192 (llama's RoPE has no learned positions: the weights do not change with it).

Random weights do not decide to call a tool; ``tests/scripted.py`` makes such a model write a
scripted answer (a logits processor that leaves one token possible at each step), so the live
path (template, model, sampler, detokenizer, segmenter, server) runs as it does for a real model.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.modelfix import CHARS, LAYER_SCALE, README, model_config

TEMPLATES = Path(__file__).parent / "data" / "templates"
# a few letters beyond ASCII, for non-ASCII arguments
EXTRA_CHARS = ("é", "ü", "日", "本", "–")


@dataclass(frozen=True)
class Family:
    format: str
    template: str  # file under tests/data/templates
    specials: tuple[str, ...]  # every special token the template or the output uses
    eos: tuple[str, ...]  # the tokens that end the assistant's turn
    bos: str | None = None


FAMILIES: dict[str, Family] = {
    "hermes": Family(
        "hermes", "Qwen-Qwen3-0.6B.jinja",
        ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
         "<tool_response>", "</tool_response>"),
        ("<|im_end|>",),
    ),
    "qwen3_xml": Family(
        "qwen3_xml", "Qwen3.5-4B.jinja",
        ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
         "<tool_response>", "</tool_response>"),
        ("<|im_end|>",),
    ),
    "llama3_json": Family(
        "llama3_json", "meta-llama-Llama-3.1-8B-Instruct.jinja",
        ("<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eom_id|>", "<|python_tag|>"),
        ("<|eot_id|>", "<|eom_id|>"),
        bos="<|begin_of_text|>",
    ),
    "mistral": Family(
        "mistral", "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
        ("</s>", "<s>", "<unk>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[AVAILABLE_TOOLS]",
         "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[ARGS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[THINK]", "[/THINK]"),
        ("</s>",),
        bos="<s>",
    ),
    "harmony": Family(
        "harmony", "openai-gpt-oss-120b.jinja",
        ("<|return|>", "<|call|>", "<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>",
         "<|constrain|>"),
        ("<|return|>", "<|call|>"),
    ),
    "kimi_k2": Family(
        "kimi_k2", "Kimi-K2-Thinking.jinja",
        ("<|im_end|>", "<|im_system|>", "<|im_user|>", "<|im_assistant|>", "<|im_middle|>",
         "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
         "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<think>", "</think>"),
        ("<|im_end|>",),
    ),
    "glm47": Family(
        "glm47", "GLM-4.7-Flash.jinja",
        ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
         "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<think>",
         "</think>", "<tool_response>", "</tool_response>"),
        ("<|user|>", "<|observation|>", "<|endoftext|>"),
    ),
}  # fmt: skip


def _tokenizer(family: Family) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = list(dict.fromkeys((*family.specials, "<unk>")))
    vocab = {token: i for i, token in enumerate((*specials, *CHARS, *EXTRA_CHARS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def build_family_model(name: str, seed: int = 7) -> dict[str, bytes]:
    """The files of a tiny model of family ``name`` (a key of FAMILIES)."""
    import mlx.core as mx
    from mlx.nn.layers.linear import Linear
    from mlx_lm.models.llama import Model, ModelArgs
    from mlx_lm.utils import save_config, save_model

    family = FAMILIES[name]
    tokenizer = _tokenizer(family)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = model_config(vocab_size, max_position_embeddings=8192)
    config["eos_token_id"] = [tokenizer.token_to_id(t) for t in family.eos]
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    for _, module in model.model.named_modules():
        if isinstance(module, Linear):
            module.weight = module.weight * LAYER_SCALE
    mx.eval(model.parameters())
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="mlxk-family-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp)
        save_model(out, model)
        save_config(dict(config), out / "config.json")
        files = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": family.bos,
        "eos_token": family.eos[0],
        "unk_token": "<unk>",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        "chat_template": (TEMPLATES / family.template).read_text(),
    }
    files["tokenizer.json"] = tokenizer.to_str(pretty=True).encode()
    files["tokenizer_config.json"] = (
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
    ).encode()
    files["README.md"] = README
    return dict(sorted(files.items()))
