"""Picking the output format from a model's chat template.

A template shows its format in the markers it renders for tool calls (and for a few families, in its
turn markers). The rules go from the most specific markers to the most general: Qwen3.5's template
renders `<tool_call>` too, but only the XML family renders `<function=`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Rule = tuple[str, Callable[[str], bool]]


def _all(*needles: str) -> Callable[[str], bool]:
    return lambda text: all(n in text for n in needles)


def _any(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(n in text for n in needles)


RULES: list[Rule] = [
    ("harmony", _all("<|channel|>", "<|message|>", "<|start|>")),
    ("deepseek_dsml", _any("｜DSML｜")),
    # V3 and R1 write the type before the name and fence the JSON; V3.1 writes the name
    ("deepseek_v3", _all("<｜tool▁call▁begin｜>", "```json")),
    ("deepseek_v31", _any("<｜tool▁call▁begin｜>", "<｜tool▁calls▁begin｜>")),
    ("kimi_k2", _any("<|tool_calls_section_begin|>", "<|tool_call_begin|>")),
    ("kimi_k3", _all("<|open|>", "<|close|>", "<|sep|>")),
    # GLM 4.5 / 4.6 put each tag on its own line; 4.7 and 5 write them on one
    ("glm45", _all("<arg_key>", "\n<arg_key>")),
    ("glm47", _any("<arg_key>")),
    ("gemma4", _all("<|tool_call>", "call:")),
    ("mistral", _any("[TOOL_CALLS]")),
    ("qwen3_xml", _all("<function=", "<parameter=")),
    ("hermes", _any("<tool_call>")),
    ("llama4_pythonic", _any("<|header_start|>", "<|python_start|>")),
    ("llama3_json", lambda t: "<|start_header_id|>" in t and ("<|python_tag|>" in t or '"parameters"' in t)),
]


def detect_format(chat_template: str | None, special_tokens: Iterable[str] | None = None) -> str | None:
    """The format a model writes, from its chat template (the markers it renders), or else from its
    special tokens (for a model without a template). None when neither shows a known format."""
    for text in (chat_template or "", "\n".join(special_tokens or ())):
        if text:
            for name, matches in RULES:
                if matches(text):
                    return name
    return None
