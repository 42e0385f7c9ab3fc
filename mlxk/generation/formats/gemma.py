"""Google's Gemma 4 (`gemma4`).

    <|channel>thought\\n reasoning <channel|><|tool_call>call:NAME{key:<|"|>text<|"|>,n:3,o:{a:true}}<tool_call|>
Strings are delimited by <|"|>, keys are bare, other values are JSON-like literals; the template ends
a turn of calls with <|tool_response>. With thinking off, the prompt ends with an empty thought channel.
"""

from __future__ import annotations

import re
from typing import Any

from mlxk.generation.calls import CollectedCall, Header, ParsedCall
from mlxk.generation.core import Action, Fallback, Mode, Segmenter, TextMode, drop, go
from mlxk.generation.events import Channel
from mlxk.generation.schema import Tools, dump_arguments, jsonable, type_value

_QUOTE = '<|"|>'
_CALL = re.compile(r"\s*call:([\w.\-]+)\s*(?=\{)")
_BARE = re.compile(r"[^,:{}\[\]]*")
# the template writes Python's None for null
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "None": None}


class _Syntax(Exception):
    pass


class _Reader:
    """Gemma 4's argument syntax, read into Python values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def value(self) -> Any:
        self.skip()
        text = self.text
        if text.startswith(_QUOTE, self.at):
            end = text.find(_QUOTE, self.at + len(_QUOTE))
            if end < 0:
                raise _Syntax
            start, self.at = self.at + len(_QUOTE), end + len(_QUOTE)
            return text[start:end]
        if self.at >= len(text):
            raise _Syntax
        if text[self.at] == "{":
            return self.mapping()
        if text[self.at] == "[":
            return self.sequence()
        bare = _BARE.match(text, self.at)
        assert bare is not None
        self.at = bare.end()
        token = bare.group().strip()
        if not token:
            raise _Syntax
        if token in _LITERALS:
            return _LITERALS[token]
        try:
            number = float(token) if any(c in token for c in ".eE") else int(token)
        except ValueError:
            return token  # a bare word: the model forgot the quotes
        return number if jsonable(number) else token

    def key(self) -> str:
        self.skip()
        if self.text.startswith(_QUOTE, self.at):
            key = self.value()
            assert isinstance(key, str)
            return key
        bare = _BARE.match(self.text, self.at)
        assert bare is not None
        self.at = bare.end()
        if not bare.group().strip():
            raise _Syntax
        return bare.group().strip()

    def mapping(self) -> dict[str, Any]:
        self.at += 1
        result: dict[str, Any] = {}
        self.skip()
        if self.text.startswith("}", self.at):
            self.at += 1
            return result
        while True:
            key = self.key()
            if not self.text.startswith(":", self.at):
                raise _Syntax
            self.at += 1
            result[key] = self.value()
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif self.text.startswith("}", self.at):
                self.at += 1
                return result
            else:
                raise _Syntax

    def sequence(self) -> list[Any]:
        self.at += 1
        result: list[Any] = []
        self.skip()
        if self.text.startswith("]", self.at):
            self.at += 1
            return result
        while True:
            result.append(self.value())
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif self.text.startswith("]", self.at):
                self.at += 1
                return result
            else:
                raise _Syntax


def parse_call(body: str, tools: Tools) -> list[ParsedCall] | None:
    """The text between `<|tool_call>` and `<tool_call|>`: `call:NAME{...}`."""
    head = _CALL.match(body)
    if head is None:
        return None
    name = head.group(1)
    reader = _Reader(body)
    reader.at = head.end()
    try:
        arguments = reader.mapping()
    except (_Syntax, RecursionError):
        return None
    if body[reader.at :].strip():
        return None
    typed = {key: type_value(value, tools.parameter(name, key)) for key, value in arguments.items()}
    return [(name, dump_arguments(typed), None)]


class Gemma4(Segmenter):
    turn_starts = ("<|turn>model",)
    call_markers = ("<|tool_call>", "<tool_call|>")

    def initial_mode(self) -> Mode:
        content = TextMode(Channel.CONTENT)
        reasoning = TextMode(Channel.REASONING)
        ends = drop("<|tool_response>", "<turn|>")
        content.on(
            {"<|channel>": self._channel(content, reasoning), "<|tool_call>": self._call(content), **ends}
        )
        content.on(drop("<channel|>", "<tool_call|>"))
        reasoning.on({"<channel|>": go(content), **ends})
        return content

    def _channel(self, home: TextMode, reasoning: TextMode) -> Action:
        """`<|channel>thought\\n`: the channel's name is a line of its own."""

        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Header(Fallback(home, marker), ("\n", "<channel|>"), on_name, limit=32)

        def on_name(seg: Segmenter, name: str, end: str) -> Mode | None:
            if end == "<channel|>":  # an empty channel: back to content
                seg.lstrip = True
                return home
            seg.lstrip = True
            return reasoning

        return action

    def _call(self, home: TextMode) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = CollectedCall(
                Fallback(home, marker), ("<tool_call|>",), lambda body: parse_call(body, self.tools), home
            )

        return action
