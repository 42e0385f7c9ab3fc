"""detect_format picks each family's format from its own chat template (tests/data/templates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxk.generation import detect_format, list_formats

TEMPLATES = Path(__file__).parent / "data" / "templates"

EXPECTED = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "Qwen3-Coder.jinja": "qwen3_xml",
    "Qwen3.5-4B.jinja": "qwen3_xml",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3_json",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3_json",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3_json",
    "vllm-llama4-pythonic.jinja": "llama4_pythonic",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral",
    "unsloth-mistral-Devstral-Small-2507.jinja": "mistral",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "mistral",
    "openai-gpt-oss-120b.jinja": "harmony",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": "deepseek_v3",
    "deepseek-ai-DeepSeek-V3.1.jinja": "deepseek_v31",
    "deepseek-ai-DeepSeek-V3.2.jinja": "deepseek_dsml",
    "deepseek-ai-DeepSeek-V4.jinja": "deepseek_dsml",
    "Kimi-K2-Instruct.jinja": "kimi_k2",
    "Kimi-K2-Thinking.jinja": "kimi_k2",
    "Kimi-K3.jinja": "kimi_k3",
    "GLM-4.6.jinja": "glm45",
    "GLM-4.7-Flash.jinja": "glm47",
    "google-gemma-4-31B-it.jinja": "gemma4",
}


@pytest.mark.parametrize(("template", "expected"), sorted(EXPECTED.items()))
def test_the_format_comes_from_the_template(template: str, expected: str) -> None:
    assert detect_format((TEMPLATES / template).read_text()) == expected


def test_every_stored_template_is_checked_and_every_format_is_detected() -> None:
    assert {p.name for p in TEMPLATES.glob("*.jinja")} == set(EXPECTED)
    assert set(EXPECTED.values()) == set(list_formats())


def test_a_template_without_tool_calls_has_no_format() -> None:
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert detect_format(chatml) is None
    assert detect_format(None) is None
    assert detect_format("") is None


def test_special_tokens_decide_when_there_is_no_template() -> None:
    assert detect_format(None, ["<s>", "[INST]", "[/INST]", "[TOOL_CALLS]"]) == "mistral"
    assert detect_format("", ["<|tool_calls_section_begin|>", "<|tool_call_begin|>"]) == "kimi_k2"
    assert detect_format(None, ["<s>", "</s>"]) is None
