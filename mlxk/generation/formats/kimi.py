"""Moonshot's Kimi: K2 Instruct, K2 Thinking, K2.6 (`kimi_k2`) and K3 (`kimi_k3`).

kimi_k2: <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}
         <|tool_call_end|>...<|tool_calls_section_end|>, reasoning in <think>...</think>. The call id is
         the format's own `functions.NAME:IDX`. K2 Thinking also writes calls inside its reasoning:
         they are read there too.
kimi_k3 (XTML): <|open|>think<|sep|>reasoning<|close|>think<|sep|><|open|>response<|sep|>content
         <|close|>response<|sep|><|open|>tools<|sep|><|open|>call tool="NAME" index="1"<|sep|>
         <|open|>argument key="K" type="string"<|sep|>V<|close|>argument<|sep|>...<|close|>call<|sep|>
         <|close|>tools<|sep|>; arguments may also come as <|open|>json type="object"<|sep|>{...}<|close|>json<|sep|>.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from mlxk.generation.calls import CollectedCall, Header, JsonArgsCall, ParsedCall
from mlxk.generation.core import (
    Action,
    Expect,
    Fallback,
    Mode,
    Section,
    Segmenter,
    TextMode,
    drop,
    go,
    think_modes,
    unwrapped,
)
from mlxk.generation.events import Channel
from mlxk.generation.schema import Tools, dump_arguments, type_text

_SECTION = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")
_SECTION_END = ("<|tool_calls_section_end|>", "<|tool_call_section_end|>")
_KIMI_ID = re.compile(r"(?:functions\.)?(.+?)(?::\d+)?")


class KimiK2(Segmenter):
    turn_starts = ("<|im_assistant|>assistant<|im_middle|>",)
    call_markers = (
        *_SECTION,
        *_SECTION_END,
        "<|tool_call_begin|>",
        "<|tool_call_end|>",
        "<|tool_call_argument_begin|>",
    )

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes()
        for mode in (content, reasoning):
            section = self._section(mode)
            mode.on(
                {
                    **dict.fromkeys(_SECTION, section),
                    "<|tool_call_begin|>": unwrapped(section),
                    **drop(*_SECTION_END, "<|tool_call_end|>", "<|tool_call_argument_begin|>", "<|im_end|>"),
                }
            )
        return content

    def _section(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Section(Fallback(home, marker), {"<|tool_call_begin|>": self._call}, _SECTION_END)

        return action

    def _call(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        fallback = Fallback(section.home, opener)

        def on_id(seg: Segmenter, header: str, end: str) -> Mode | None:
            call_id = header.strip()
            found = _KIMI_ID.fullmatch(call_id)
            if found is None:
                return None
            then = Expect(("<|tool_call_end|>",), section)
            return JsonArgsCall(fallback, found.group(1), then, call_id=call_id, prefix=header + end)

        return Header(fallback, ("<|tool_call_argument_begin|>",), on_id, limit=256)


def _tag(name: str) -> str:
    return f"<|open|>{name}<|sep|>"


def _close(name: str) -> str:
    return f"<|close|>{name}<|sep|>"


_ATTRIBUTE = re.compile(r'\s*([\w-]+)="([^"]*)"')
_ARGUMENT = re.compile(r"\s*<\|open\|>(argument|json)((?:\s+[\w-]+=\"[^\"]*\")*)\s*<\|sep\|>")
_ARGUMENT_END = {
    kind: re.compile(re.escape(_close(kind)) + r"(?=\s*(?:<\|open\|>(?:argument|json)\b|\Z))")
    for kind in ("argument", "json")
}


def _attributes(text: str) -> dict[str, str]:
    return {key: html.unescape(value) for key, value in _ATTRIBUTE.findall(text)}


def parse_call(body: str, tools: Tools) -> list[ParsedCall] | None:
    """The text between `<|open|>call` and `<|close|>call<|sep|>`: attributes, then arguments."""
    head = re.match(r"((?:\s+[\w-]+=\"[^\"]*\")*)\s*<\|sep\|>", body)
    if head is None:
        return None
    name = _attributes(head.group(1)).get("tool", "").strip()
    if not name:
        return None
    arguments: dict[str, Any] = {}
    at = head.end()
    while (argument := _ARGUMENT.match(body, at)) is not None:
        kind = argument.group(1)
        end = _ARGUMENT_END[kind].search(body, argument.end())
        if end is None:
            return None
        value = body[argument.end() : end.start()]
        attributes = _attributes(argument.group(2))
        if kind == "json":
            try:
                block = json.loads(value)
            except ValueError:
                return None
            if not isinstance(block, dict):
                return None
            arguments.update(block)
        else:
            key = attributes.get("key", "")
            arguments[key] = _typed(value, attributes.get("type"), tools.parameter(name, key))
        at = end.end()
    if body[at:].strip():
        return None
    return [(name, dump_arguments(arguments), None)]


def _typed(value: str, kind: str | None, schema: Any) -> Any:
    if kind == "string":
        return value
    if kind is not None:
        try:
            return json.loads(value)
        except ValueError:
            pass
    return type_text(value, schema)


class KimiK3(Segmenter):
    turn_starts = ('<|open|>message role="assistant"<|sep|>',)
    call_markers = ("<|open|>tools<|sep|>", "<|close|>tools<|sep|>")

    def initial_mode(self) -> Mode:
        content = TextMode(Channel.CONTENT)
        reasoning = TextMode(Channel.REASONING)
        ends = drop(_close("response"), _close("message"), "<|end_of_msg|>", _close("tools"))
        content.on(
            {
                _tag("think"): go(reasoning),
                _tag("tools"): self._section(content),
                **drop(_tag("response"), _close("think")),
                **ends,
            }
        )
        reasoning.on({_close("think"): go(content), _tag("response"): go(content), **ends})
        return content

    def _section(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Section(Fallback(home, marker), {"<|open|>call": self._call}, (_close("tools"),))

        return action

    def _call(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        return CollectedCall(
            Fallback(section.home, opener),
            (_close("call"),),
            lambda body: parse_call(body, self.tools),
            section,
            follows=("<|open|>call", _close("tools")),
        )
