"""Tiny real models of each model family: the family's official chat template (tests/data/templates),
a character-level tokenizer that knows the family's special tokens (each one token, as in the real
tokenizer), its end-of-turn tokens as eos, and the tiny llama's random weights with a context of
8192 (llama's RoPE has no learned positions: the weights do not change with it).

Random weights do not decide to call a tool; ``tests/scripted.py`` makes such a model write a
scripted answer (a logits processor that leaves one token possible at each step), so the live
path (template, model, sampler, detokenizer, segmenter, server) runs as it does for a real model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.modelfix import CHARS, LAYER_SCALE, README, char_tokenizer, model_config, weight_files

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
    chars: tuple[str, ...] = ()  # letters its markers use beyond the common ones (DSML's "｜")


DEEPSEEK = ("<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
            "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
            "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
            "<｜tool▁output▁end｜>")  # fmt: skip
GLM = ("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
       "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<think>",
       "</think>", "<tool_response>", "</tool_response>")  # fmt: skip

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
    "glm47": Family("glm47", "GLM-4.7-Flash.jinja", GLM, ("<|user|>", "<|observation|>", "<|endoftext|>")),
    "glm45": Family("glm45", "GLM-4.6.jinja", GLM, ("<|user|>", "<|observation|>", "<|endoftext|>")),
    "llama4_pythonic": Family(
        "llama4_pythonic", "vllm-llama4-pythonic.jinja",
        ("<|eot|>", "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eom|>",
         "<|python_start|>", "<|python_end|>", "<|image|>"),
        ("<|eot|>", "<|eom|>"),
        bos="<|begin_of_text|>",
    ),
    "deepseek_v3": Family(
        "deepseek_v3", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", DEEPSEEK, ("<｜end▁of▁sentence｜>",),
        bos="<｜begin▁of▁sentence｜>",
    ),
    "deepseek_v31": Family(
        "deepseek_v31", "deepseek-ai-DeepSeek-V3.1.jinja", DEEPSEEK, ("<｜end▁of▁sentence｜>",),
        bos="<｜begin▁of▁sentence｜>",
    ),
    # DSML's markers are text to DeepSeek's tokenizer (its "｜" a letter), not special tokens
    "deepseek_dsml": Family(
        "deepseek_dsml", "deepseek-ai-DeepSeek-V3.2.jinja", DEEPSEEK, ("<｜end▁of▁sentence｜>",),
        bos="<｜begin▁of▁sentence｜>", chars=("｜",),
    ),
    "kimi_k3": Family(
        "kimi_k3", "Kimi-K3.jinja",
        ("<|end_of_msg|>", "<|open|>", "<|close|>", "<|sep|>", "<|kimi_image_placeholder|>"),
        ("<|end_of_msg|>",),
    ),
    "gemma4": Family(
        "gemma4", "google-gemma-4-31B-it.jinja",
        ("<turn|>", "<bos>", "<eos>", "<pad>", "<|turn>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
         "<tool_response|>", "<|tool>", "<tool|>", "<|channel>", "<channel|>", "<|think|>", '<|"|>', "<|image|>",
         "<|audio|>", "<|video|>"),
        ("<turn|>", "<|tool_response>", "<eos>"),
        bos="<bos>",
    ),
}  # fmt: skip


def tokenizer_files(name: str) -> dict[str, bytes]:
    """The tokenizer of a tiny model of family ``name``: tokenizer.json and tokenizer_config.json
    (with the family's chat template)."""
    family = FAMILIES[name]
    tokenizer = family_tokenizer(family)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": family.bos,
        "eos_token": family.eos[0],
        "unk_token": "<unk>",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        "chat_template": (TEMPLATES / family.template).read_text(),
    }
    return {
        "tokenizer.json": tokenizer.to_str(pretty=True).encode(),
        "tokenizer_config.json": (json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n").encode(),
    }


def family_tokenizer(family: Family) -> Any:
    return char_tokenizer(
        tuple(dict.fromkeys((*family.specials, "<unk>"))), (*CHARS, *EXTRA_CHARS, *family.chars)
    )


def build_family_model(name: str, seed: int = 7) -> dict[str, bytes]:
    """The files of a tiny model of family ``name`` (a key of FAMILIES)."""
    import mlx.core as mx
    from mlx.nn.layers.linear import Linear
    from mlx_lm.models.llama import Model, ModelArgs

    family = FAMILIES[name]
    tokenizer = family_tokenizer(family)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = model_config(vocab_size, max_position_embeddings=8192)
    config["eos_token_id"] = [tokenizer.token_to_id(t) for t in family.eos]
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    for _, module in model.model.named_modules():
        if isinstance(module, Linear):
            module.weight = module.weight * LAYER_SCALE
    mx.eval(model.parameters())
    files = weight_files(model, config)
    files.update(tokenizer_files(name))
    files["README.md"] = README
    return dict(sorted(files.items()))
