"""The reasoning of earlier assistant turns, as a client sends it back, put where the model's chat
template reads it, or refused by name when the template has no place for it.

Templates disagree on where an assistant message's reasoning goes: most read a field of the
message (``reasoning_content``: Qwen3, GLM, Kimi, DeepSeek V3.2 and V4, Gemma 4; ``thinking``:
gpt-oss), Mistral's reasoning models read a ``thinking`` content block, and DeepSeek R1 and V3.1
read it inside the content, before ``</think>`` (and drop it there, by design). A template that
reads none of these would render the turn without it; the request is refused instead, so that no
reasoning is dropped without the client knowing. Which templates keep old reasoning in the prompt
is theirs to decide (most keep only the turns after the last user message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mlxk.errors import InvalidField

# the forms in which a template reads a field of a message: m.KEY, m['KEY'], m.get('KEY'), 'KEY' in m
_ACCESS = r"(?:\.{key}\b|\[\s*['\"]{key}['\"]\s*\]|\.get\(\s*['\"]{key}['\"]|['\"]{key}['\"]\s+in\s+\w)"
_FIELDS = ("reasoning_content", "thinking", "reasoning")
_FIELD_PATTERNS = {key: re.compile(_ACCESS.format(key=key)) for key in _FIELDS}
_THINKING_BLOCK = re.compile(r"==\s*['\"]thinking['\"]")  # block['type'] == 'thinking'
_SPLIT_AT_THINK_END = re.compile(r"split\(\s*['\"]</think>['\"]")


@dataclass(frozen=True, slots=True)
class ReasoningPlace:
    """``field``: the message key the template reads; ``block``: a ``thinking`` content block;
    ``inline``: the content before ``</think>``; ``none``: nowhere."""

    kind: str  # field | block | inline | none
    key: str | None = None


NOWHERE = ReasoningPlace("none")


# mlx-lm's own chat templates (Python functions, ``chat_template_type``; no source to read): where
# each reads an assistant message's reasoning, by the module that defines it
_PYTHON_TEMPLATES = {"mlx_lm.chat_templates.deepseek_v32": ReasoningPlace("field", "reasoning_content")}


@lru_cache(maxsize=32)
def reasoning_place(template: Any) -> ReasoningPlace:
    """Where ``template`` (a chat template's source, or mlx-lm's own template function) reads an
    assistant message's reasoning."""
    if not isinstance(template, str):
        return _PYTHON_TEMPLATES.get(getattr(template, "__module__", None) or "", NOWHERE)
    # a content block first: Mistral's templates read block['thinking'], which looks like a field
    if _THINKING_BLOCK.search(template):
        return ReasoningPlace("block")
    for key, pattern in _FIELD_PATTERNS.items():
        if pattern.search(template):
            return ReasoningPlace("field", key)
    if _SPLIT_AT_THINK_END.search(template):
        return ReasoningPlace("inline")
    return NOWHERE


def place_reasoning(message: dict[str, Any], reasoning: str, place: ReasoningPlace, index: int) -> None:
    """Adds ``reasoning`` to ``message`` (a message as the template gets it, at ``index`` in the
    conversation) where ``place`` says; raises InvalidField where the template cannot take it."""
    where = f"messages[{index}].reasoning_content"
    if place.kind == "field" and place.key is not None:
        message[place.key] = reasoning
    elif place.kind == "block":
        text = message.get("content") or ""
        message["content"] = [{"type": "thinking", "thinking": reasoning}]
        if text:
            message["content"].append({"type": "text", "text": text})
    elif place.kind == "inline" and not message.get("tool_calls"):
        # what follows </think> is the answer as the client sent it, which is all these templates keep
        message["content"] = f"<think>\n{reasoning}\n</think>{message.get('content') or ''}"
    elif place.kind == "inline":
        raise InvalidField(
            where,
            f"{where}: this model's chat template has no place for reasoning next to tool calls;"
            " send the message without it",
        )
    else:
        raise InvalidField(
            where,
            f"{where}: this model's chat template has no place for an assistant's reasoning;"
            " send the message without it",
        )
