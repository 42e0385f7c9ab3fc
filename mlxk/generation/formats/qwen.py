"""Qwen, Hermes and SmolLM3 (`hermes`), Qwen3-Coder and Qwen3.5+ (`qwen3_xml`).

hermes:     <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>
qwen3_xml:  <tool_call>\\n<function=f>\\n<parameter=k>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>
Reasoning in <think>...</think> for both. Either format's calls are read inside either's <tool_call>,
and qwen3_xml also reads a <function=...> block without the <tool_call> wrapper (Qwen3-Coder writes
one now and then): then the function must be one of the offered tools.
"""

from __future__ import annotations

import re
from typing import Any

from mlxk.generation.calls import CollectedCall, JsonObjectCall, ParsedCall
from mlxk.generation.core import Action, Fallback, Mode, Section, Segmenter, TextMode, drop, think_modes
from mlxk.generation.schema import Tools, dump_arguments, type_text

_NAME = re.compile(r"([^<>\n]+)>")
_PARAMETER = re.compile(r"\s*<parameter=([^<>\n]+)>")
# a value ends at a closing tag that is followed by the next parameter or the end of the function
_PARAMETER_END = re.compile(r"</parameter>(?=\s*(?:<parameter=|\Z))")
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>")


def parse_function(body: str, tools: Tools, *, bare: bool) -> list[ParsedCall] | None:
    """`NAME>` + parameters, the text between `<function=` and `</function>`."""
    head = _NAME.match(body)
    if head is None:
        return None
    name = head.group(1).strip()
    if not name or (bare and not tools.offers(name)):
        return None
    arguments: dict[str, Any] = {}
    at = head.end()
    while (parameter := _PARAMETER.match(body, at)) is not None:
        end = _PARAMETER_END.search(body, parameter.end())
        if end is None:
            return None
        value = body[parameter.end() : end.start()]
        value = value.removeprefix("\n").removesuffix("\n")  # the template's own line breaks
        key = parameter.group(1).strip()
        arguments[key] = type_text(value, tools.parameter(name, key))
        at = end.end()
    if body[at:].strip():
        return None
    return [(name, dump_arguments(arguments), None)]


def name_check(raw: str) -> bool | None:
    """Early verdict on `<function=`: a name and `>` on the first line, within 128 characters."""
    if _NAME.match(raw):
        return True
    if len(raw) < 128 and not re.search(r"[<\n]", raw):
        return None
    return False


class ToolCallTags(Segmenter):
    """The `<tool_call>` family; `bare_functions` adds `<function=...>` outside the wrapper."""

    turn_starts = ("<|im_start|>assistant",)
    call_markers = ("<tool_call>", "</tool_call>", "<function=")
    bare_functions = False

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes()
        actions: dict[str, Action] = {
            "<tool_call>": self._section(content),
            **drop("</tool_call>", *_END_OF_TURN),
        }
        if self.bare_functions:
            actions["<function="] = self._bare_function(content)
        content.on(actions)
        reasoning.on(drop(*_END_OF_TURN))
        return content

    def _section(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Section(
                Fallback(home, marker),
                {"<function=": self._function},
                ("</tool_call>",),
                json_call=self._json_call,
            )

        return action

    def _function(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        return CollectedCall(
            Fallback(section.home, opener),
            ("</function>",),
            lambda body: parse_function(body, self.tools, bare=False),
            section,
            check=name_check,
            follows=("</tool_call>", "<function="),
        )

    def _json_call(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        return JsonObjectCall(Fallback(section.home, opener), section)

    def _bare_function(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = CollectedCall(
                Fallback(home, marker),
                ("</function>",),
                lambda body: parse_function(body, self.tools, bare=True),
                home,
                check=name_check,
            )

        return action


class Hermes(ToolCallTags):
    pass


class Qwen3Xml(ToolCallTags):
    bare_functions = True
