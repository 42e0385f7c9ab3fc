"""Zhipu's GLM: 4.5 and 4.6 (`glm45`, one line per tag), 4.7 and 5.x (`glm47`, compact).

glm45:  <tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>
glm47:  <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>
Reasoning in <think>...</think> (4.7's prompt opens it, or closes it when thinking is off). Values
are text, typed by the tool's schema. A value may itself hold XML, even `</tool_call>`: a closing tag
counts only where the call before it is complete.
"""

from __future__ import annotations

import re
from typing import Any

from mlxk.generation.calls import CollectedCall, ParsedCall
from mlxk.generation.core import Action, Fallback, Mode, Segmenter, TextMode, drop, think_modes
from mlxk.generation.schema import Tools, dump_arguments, type_text

_NAME = re.compile(r"\s*([^<>\n]+?)\s*(?=<arg_key>|\Z)")
_KEY = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>", re.DOTALL)
_VALUE_END = re.compile(r"</arg_value>(?=\s*(?:<arg_key>|\Z))")
_END_OF_TURN = ("<|user|>", "<|observation|>", "<|endoftext|>")


def parse_call(body: str, tools: Tools) -> list[ParsedCall] | None:
    """The text between `<tool_call>` and `</tool_call>`: the name, then key/value pairs."""
    head = _NAME.match(body)
    if head is None:
        return None
    name = head.group(1)
    arguments: dict[str, Any] = {}
    at = head.end()
    while (key := _KEY.match(body, at)) is not None:
        end = _VALUE_END.search(body, key.end())
        if end is None:
            return None
        name_of_key = key.group(1).strip()
        arguments[name_of_key] = type_text(body[key.end() : end.start()], tools.parameter(name, name_of_key))
        at = end.end()
    if body[at:].strip():
        return None
    return [(name, dump_arguments(arguments), None)]


_NAME_LINE = re.compile(r"\s*([^<>\n]*)")
_AFTER_NAME = ("\n", "<arg_key>", "</tool_call>")


def name_check(raw: str) -> bool | None:
    """Early verdict: a name on the first line, then a line break, an <arg_key> or the end."""
    line = _NAME_LINE.match(raw)
    assert line is not None
    rest = raw[line.end() :]
    if rest.startswith(_AFTER_NAME):
        return bool(line.group(1).strip())
    if len(raw) < 128 and any(after.startswith(rest) for after in _AFTER_NAME):
        return None
    return False


class Glm45(Segmenter):
    turn_starts = ("<|assistant|>",)
    call_markers = ("<tool_call>", "</tool_call>")

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes()
        content.on({"<tool_call>": self._call(content), **drop("</tool_call>", *_END_OF_TURN)})
        reasoning.on(drop(*_END_OF_TURN))
        return content

    def _call(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = CollectedCall(
                Fallback(home, marker),
                ("</tool_call>",),
                lambda body: parse_call(body, self.tools),
                home,
                check=name_check,
            )

        return action


class Glm47(Glm45):
    pass
