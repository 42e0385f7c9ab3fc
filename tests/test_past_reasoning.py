"""Reasoning sent back on assistant messages reaches the model's own chat template where that
template reads it, or the request is refused naming the message; nothing is dropped unsaid.

The prompts are rendered by the pipeline's own ``render`` with real tokenizers of each family
(tests.familyfix: the official template, the family's special tokens) and read back as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlxk.errors import InvalidField
from mlxk.generation.past_reasoning import ReasoningPlace, reasoning_place
from mlxk.generation.prompt import pastes_calls, render
from mlxk.generation.request import GenerationRequest, Message, ToolCall
from tests.familyfix import FAMILIES, TEMPLATES, tokenizer_files
from tests.test_generation_parsers import TOOLS
from tests.test_generation_parsers import _template as compiled

THOUGHT = "The user wants Paris; call get_weather."
USER = Message("user", "What is the weather in Paris?")
CALL = ToolCall("call0000A", "get_weather", '{"city": "Paris"}')  # 9 letters and digits: Mistral's ids

# where each stored template reads an assistant message's reasoning
PLACES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": None,
    "Qwen-Qwen3-0.6B.jinja": ("field", "reasoning_content"),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": None,
    "Qwen3-Coder.jinja": None,
    "Qwen3.5-4B.jinja": ("field", "reasoning_content"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": None,
    "meta-llama-Llama-3.2-3B-Instruct.jinja": None,
    "meta-llama-Llama-3.3-70B-Instruct.jinja": None,
    "vllm-llama4-pythonic.jinja": None,
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": None,
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": None,
    "unsloth-mistral-Devstral-Small-2507.jinja": None,
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": ("block", None),
    "openai-gpt-oss-120b.jinja": ("field", "thinking"),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": ("inline", None),
    "deepseek-ai-DeepSeek-V3.1.jinja": ("inline", None),
    "deepseek-ai-DeepSeek-V3.2.jinja": ("field", "reasoning_content"),
    "deepseek-ai-DeepSeek-V4.jinja": ("field", "reasoning_content"),
    "Kimi-K2-Instruct.jinja": None,
    "Kimi-K2-Thinking.jinja": ("field", "reasoning_content"),
    "Kimi-K3.jinja": ("field", "reasoning_content"),
    "GLM-4.6.jinja": ("field", "reasoning_content"),
    "GLM-4.7-Flash.jinja": ("field", "reasoning_content"),
    "google-gemma-4-31B-it.jinja": ("field", "reasoning_content"),
}


def test_every_stored_template_is_listed() -> None:
    assert sorted(PLACES) == sorted(p.name for p in TEMPLATES.glob("*.jinja"))


@pytest.mark.parametrize("template", sorted(PLACES))
def test_the_place_is_read_from_the_template(template: str) -> None:
    expected = PLACES[template]
    place = reasoning_place((TEMPLATES / template).read_text())
    assert place == (ReasoningPlace(*expected) if expected else ReasoningPlace("none"))


@pytest.mark.parametrize("template", sorted(t for t, p in PLACES.items() if p and p[0] == "field"))
def test_a_field_place_is_what_the_template_prints(template: str) -> None:
    """Independent of the pattern: the template itself prints the reasoning given at that key (for
    a turn after the last user message, which every template keeps)."""
    key = str(PLACES[template][1])  # type: ignore[index]
    template_fn = compiled(template)

    def shown(key: str) -> bool:
        answer: dict[str, Any] = {"role": "assistant", "content": "", key: THOUGHT}
        answer["tool_calls"] = [{"id": CALL.id, "type": "function", "function": {"name": CALL.name,
                                 "arguments": {"city": "Paris"}}}]  # fmt: skip
        text = template_fn.render(
            messages=[{"role": "user", "content": "hi"}, answer, {"role": "tool", "tool_call_id": CALL.id,
                      "content": "Sunny"}],
            tools=TOOLS, add_generation_prompt=True, bos_token="", eos_token="", thinking=True,
            enable_thinking=True,
        )  # fmt: skip
        return THOUGHT in str(text)

    assert shown(key)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mlx_lm.tokenizer_utils import load

    out = {}
    for name in FAMILIES:
        folder = tmp_path_factory.mktemp(name)
        for file, data in tokenizer_files(name).items():
            (folder / file).write_bytes(data)
        out[name] = load(Path(folder))
    return out


def prompt_text(tokenizer: Any, *messages: Message, **options: Any) -> str:
    prompt = render(tokenizer, GenerationRequest(messages=messages, tools=(), **options), chat_template=True)
    return str(tokenizer.decode(prompt.tokens))


def called(reasoning: str | None, content: str = "") -> tuple[Message, ...]:
    """A turn of the agent loop: the assistant thought and called, the result came back."""
    return (
        USER,
        Message("assistant", content, (CALL,), reasoning=reasoning),
        Message("tool", "Sunny, 21 C", tool_call_id=CALL.id),
    )


# the families whose templates keep an assistant's reasoning next to its calls in the prompt
KEEPS_CALL_REASONING = ["hermes", "qwen3_xml", "mistral", "harmony", "kimi_k2", "glm47", "glm45", "deepseek_dsml",
                        "kimi_k3", "gemma4"]  # fmt: skip
THINKING_ON: dict[str, dict[str, Any]] = {"deepseek_dsml": {"template_kwargs": {"thinking": True}},
                                          "gemma4": {"thinking": True}}  # fmt: skip


@pytest.mark.parametrize("family", KEEPS_CALL_REASONING)
def test_reasoning_next_to_calls_is_in_the_prompt(tokenizers: dict[str, Any], family: str) -> None:
    options = THINKING_ON.get(family, {})
    tokenizer = tokenizers[family]
    with_it = prompt_text(tokenizer, *called(THOUGHT), **options)
    without = prompt_text(tokenizer, *called(None), **options)
    assert THOUGHT in with_it and THOUGHT not in without
    assert "get_weather" in with_it and "Sunny, 21 C" in with_it


@pytest.mark.parametrize("family", ["llama3_json", "llama4_pythonic"])
def test_a_template_without_a_place_refuses_it_by_name(tokenizers: dict[str, Any], family: str) -> None:
    with pytest.raises(InvalidField) as caught:
        prompt_text(tokenizers[family], *called(THOUGHT))
    assert caught.value.param == "messages[1].reasoning_content"
    assert "no place" in caught.value.message
    prompt_text(tokenizers[family], *called(""))  # empty reasoning is no reasoning: nothing to refuse


@pytest.mark.parametrize("family", ["deepseek_v3", "deepseek_v31"])
def test_deepseek_reads_an_answers_reasoning_before_think_end(
    tokenizers: dict[str, Any], family: str
) -> None:
    """DeepSeek R1's and V3.1's templates take the reasoning inside the content, before
    ``</think>``, and leave it out of the history by design: the answer stays, nothing is refused;
    next to calls they have no place for it."""
    tokenizer = tokenizers[family]
    turns = (USER, Message("assistant", "It is sunny.", reasoning=THOUGHT), Message("user", "Thanks!"))
    text = prompt_text(tokenizer, *turns)
    assert text == prompt_text(tokenizer, *turns[:1], Message("assistant", "It is sunny."), turns[2])
    assert "It is sunny." in text
    with pytest.raises(InvalidField) as caught:
        prompt_text(tokenizer, *called(THOUGHT))
    assert caught.value.param == "messages[1].reasoning_content"


def test_deepseek_r1_gets_its_calls_as_text() -> None:
    """R1's template pastes a call's arguments into the prompt and renders calls only for a message
    whose content is null: it gets OpenAI's own shape, the others objects and ""."""
    assert [t for t in PLACES if pastes_calls((TEMPLATES / t).read_text())] == [
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
    ]


def test_deepseek_r1_renders_the_calls_sent_back(tokenizers: dict[str, Any]) -> None:
    text = prompt_text(tokenizers["deepseek_v3"], *called(None))
    assert '<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>' in text
    assert "Sunny, 21 C" in text
