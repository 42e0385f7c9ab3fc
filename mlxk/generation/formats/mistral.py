"""Mistral (`mistral`): every `[TOOL_CALLS]` generation, from Mistral 7B v0.3 to Mistral Small 4,
Ministral, Magistral and Devstral.

    [TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "abc123XYZ"}, ...]   (v0.3, Nemo, Small 3.0/3.1)
    [TOOL_CALLS]f[CALL_ID]abc123XYZ[ARGS]{...}                              (Small 3.2)
    [TOOL_CALLS]f[ARGS]{...}[TOOL_CALLS]g[ARGS]{...}                        (Magistral, Devstral, Ministral 3, Small 4)
Reasoning in [THINK]...[/THINK] (Magistral 2506 wrote <think>...</think>, also read). Mistral's
templates want call ids of 9 letters and digits back: generated ids have that shape.
"""

from __future__ import annotations

import re

from mlxk.generation.calls import Header, JsonArgsCall, JsonObjectCall
from mlxk.generation.core import Action, Fallback, Mode, Segmenter, TextMode, drop, think_modes

_CALLS = "[TOOL_CALLS]"
_NAME = re.compile(r"[\w.\-]+")


class ObjectList:
    """`[{call}, {call}]`: calls written as JSON objects in a JSON array."""

    __slots__ = ("calls", "fallback", "opened")

    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback
        self.opened = False
        self.calls = 0

    def step(self, seg: Segmenter, final: bool) -> bool:
        if not self.opened:  # the caller saw "[" first; the spaces after it stay until a call comes
            self.opened = True
            seg.buf = seg.buf.lstrip()[1:]
        buf = seg.buf.lstrip()
        if not buf:
            return self._leave(seg) if final else False
        seg.buf = buf
        if buf[0] == "{":
            fallback = Fallback(self.fallback.home, self.fallback.opener + "[" if self.calls == 0 else "")
            seg.mode = JsonObjectCall(fallback, self, id_key="id")
            self.calls += 1
            return True
        if buf[0] in ",]":
            seg.buf = buf[1:]
            if buf[0] == "]":
                seg.lstrip = True
                seg.mode = self.fallback.home
            return True
        return self._leave(seg)

    def _leave(self, seg: Segmenter) -> bool:
        if self.calls == 0:
            return self.fallback.revert(seg, "[")
        seg.lstrip = True
        seg.mode = self.fallback.home
        return True


class Mistral(Segmenter):
    short_ids = True
    turn_starts = ("[/INST]",)
    call_markers = (_CALLS,)

    def initial_mode(self) -> Mode:
        content, reasoning = think_modes(("[THINK]", "<think>"), ("[/THINK]", "</think>"))
        content.on({_CALLS: self._calls(content), **drop("</s>")})
        reasoning.on(drop("</s>"))
        return content

    def _calls(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = _CallsStart(home, self)

        return action

    def named_call(self, home: TextMode) -> Mode:
        """`name[ARGS]{...}`, perhaps with `[CALL_ID]id` before `[ARGS]`."""
        fallback = Fallback(home, _CALLS)

        def on_name(seg: Segmenter, header: str, end: str) -> Mode | None:
            name = header.strip()
            if not _NAME.fullmatch(name):
                return None
            if end == "[ARGS]":
                return JsonArgsCall(fallback, name, home, prefix=header + end)

            def on_id(seg: Segmenter, call_id: str, end: str) -> Mode | None:
                prefix = header + "[CALL_ID]" + call_id + end
                return JsonArgsCall(fallback, name, home, call_id=call_id.strip() or None, prefix=prefix)

            return Header(Fallback(home, _CALLS + header + "[CALL_ID]"), ("[ARGS]",), on_id, limit=64)

        return Header(fallback, ("[ARGS]", "[CALL_ID]"), on_name, limit=128)


class _CallsStart:
    """After [TOOL_CALLS]: a JSON array or object of calls (older models) or a call name (newer)."""

    __slots__ = ("home", "owner")

    def __init__(self, home: TextMode, owner: Mistral) -> None:
        self.home = home
        self.owner = owner

    def step(self, seg: Segmenter, final: bool) -> bool:
        buf = seg.buf.lstrip()
        if not buf and not final:
            return False
        if buf.startswith("["):
            seg.mode = ObjectList(Fallback(self.home, _CALLS))
        elif buf.startswith("{"):
            seg.mode = JsonObjectCall(Fallback(self.home, _CALLS), self.home, id_key="id")
        else:
            seg.mode = self.owner.named_call(self.home)
        return True
