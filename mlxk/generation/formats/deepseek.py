"""DeepSeek: V3 and R1 (`deepseek_v3`), V3.1 (`deepseek_v31`), V3.2 and V4 (`deepseek_dsml`).

deepseek_v3:   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
               ```json
               {...}
               ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
deepseek_v31:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
deepseek_dsml: <｜DSML｜function_calls> (V4: <｜DSML｜tool_calls>)
                 <｜DSML｜invoke name="NAME">
                 <｜DSML｜parameter name="K" string="true">V</｜DSML｜parameter> ...
                 </｜DSML｜invoke>
               </｜DSML｜function_calls>
Reasoning in <think>...</think>. Both V3 layouts are read by either name (only the template differs);
the markers also come spelled with `_` or spaces for `▁` in some conversions.
"""

from __future__ import annotations

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
    think_modes,
    unwrapped,
)
from mlxk.generation.schema import Tools, dump_arguments, type_text


def _spellings(marker: str) -> tuple[str, ...]:
    return (marker, marker.replace("▁", "_"), marker.replace("▁", " "))


_SECTION = _spellings("<｜tool▁calls▁begin｜>")
_SECTION_END = _spellings("<｜tool▁calls▁end｜>")
_CALL = _spellings("<｜tool▁call▁begin｜>")
_CALL_END = _spellings("<｜tool▁call▁end｜>")
_SEP = _spellings("<｜tool▁sep｜>")
_END_OF_TURN = ("<｜end▁of▁sentence｜>",)


class DeepSeekV3(Segmenter):
    turn_starts = ("<｜Assistant｜>",)
    call_markers = (*_SECTION, *_CALL, *_SECTION_END, *_CALL_END, *_SEP)

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes()
        section = self._section(content)
        content.on(
            {
                **dict.fromkeys(_SECTION, section),
                **dict.fromkeys(_CALL, unwrapped(section)),
                **drop(*_SECTION_END, *_CALL_END, *_SEP, *_END_OF_TURN),
            }
        )
        reasoning.on(drop(*_END_OF_TURN))
        return content

    def _section(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Section(Fallback(home, marker), dict.fromkeys(_CALL, self._call), _SECTION_END)

        return action

    def _call(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        fallback = Fallback(section.home, opener)
        then = Expect(_CALL_END, section)

        def on_type(seg: Segmenter, header: str, end: str) -> Mode | None:
            if header.strip() != "function":  # V3.1: the header is the name; JSON follows
                name = header.strip()
                return JsonArgsCall(fallback, name, then, prefix=header + end) if name else None

            def on_name(seg: Segmenter, name_line: str, end2: str) -> Mode | None:
                name = name_line.strip()
                if not name:
                    return None
                fenced = Expect(("```",), then)  # the closing fence of the V3 layout
                args = JsonArgsCall(fallback, name, fenced, prefix=header + end + name_line + end2)
                return Expect(("```json", "```"), args)

            # not a call after all: its opener and this header go back to content as written
            return Header(Fallback(section.home, opener + header + end), ("\n",), on_name, limit=128)

        return Header(fallback, _SEP, on_type, limit=128)


class DeepSeekV31(DeepSeekV3):
    pass


_DSML = "｜DSML｜"
_DSML_SECTIONS = (f"<{_DSML}function_calls>", f"<{_DSML}tool_calls>")
_DSML_SECTION_ENDS = (f"</{_DSML}function_calls>", f"</{_DSML}tool_calls>")
_INVOKE_NAME = re.compile(r'\s+name="([^"]*)"\s*>')
_PARAMETER = re.compile(rf'\s*<{_DSML}parameter\s+name="([^"]*)"(?:\s+string="(true|false)")?\s*>')
_PARAMETER_END = re.compile(rf"</{_DSML}parameter>(?=\s*(?:<{_DSML}parameter|\Z))")


def parse_invoke(body: str, tools: Tools) -> list[ParsedCall] | None:
    """` name="NAME">` + parameters: the text between `<｜DSML｜invoke` and `</｜DSML｜invoke>`."""
    head = _INVOKE_NAME.match(body)
    if head is None or not head.group(1).strip():
        return None
    name = head.group(1).strip()
    arguments: dict[str, Any] = {}
    at = head.end()
    while (parameter := _PARAMETER.match(body, at)) is not None:
        end = _PARAMETER_END.search(body, parameter.end())
        if end is None:
            return None
        key, is_string = parameter.group(1), parameter.group(2)
        value = body[parameter.end() : end.start()]
        schema = tools.parameter(name, key)
        if is_string == "true":
            arguments[key] = value
        elif is_string == "false":
            try:
                arguments[key] = json.loads(value)
            except ValueError:
                arguments[key] = type_text(value, schema)
        else:
            arguments[key] = type_text(value, schema)
        at = end.end()
    if body[at:].strip():
        return None
    return [(name, dump_arguments(arguments), None)]


class DeepSeekDsml(Segmenter):
    turn_starts = ("<｜Assistant｜>",)
    call_markers = (*_DSML_SECTIONS, *_DSML_SECTION_ENDS)

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes()
        content.on(
            {
                **dict.fromkeys(_DSML_SECTIONS, self._section(content)),
                **drop(*_DSML_SECTION_ENDS, *_END_OF_TURN),
            }
        )
        reasoning.on(drop(*_END_OF_TURN))
        return content

    def _section(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Section(Fallback(home, marker), {f"<{_DSML}invoke": self._invoke}, _DSML_SECTION_ENDS)

        return action

    def _invoke(self, seg: Segmenter, section: Section, opener: str) -> Mode:
        return CollectedCall(
            Fallback(section.home, opener),
            (f"</{_DSML}invoke>",),
            lambda body: parse_invoke(body, self.tools),
            section,
            follows=(f"<{_DSML}invoke", *_DSML_SECTION_ENDS),
        )
