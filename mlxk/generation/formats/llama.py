"""Meta's Llama: 3.1 to 3.3 (`llama3_json`) and 4 (`llama4_pythonic`).

llama3_json:     {"name": "f", "parameters": {...}} as the whole answer, or after <|python_tag|>;
                 several calls separated by ';'.
llama4_pythonic: [f(a=1, b="x"), g()] as the answer, perhaps inside <|python_start|>...<|python_end|>;
                 Llama 4's own template asks for Llama 3's JSON instead, which is read as well.
A bare JSON object or list that is not a call of an offered tool is the answer itself (content).
No reasoning markers.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from mlxk.generation.calls import JsonObjectCall, ParsedCall
from mlxk.generation.core import Fallback, Mode, Section, Segmenter, TextMode, drop, go
from mlxk.generation.events import Channel
from mlxk.generation.schema import Tools, dump_arguments, jsonable, type_value


class Start:
    """The start of the answer (or what follows a python tag): a call, if it opens like one, or text.
    Whitespace is kept for text, whose exact shape this mode must not change."""

    __slots__ = ("home", "openers", "tags")

    def __init__(self, home: TextMode, openers: dict[str, Any], tags: tuple[str, ...] = ()) -> None:
        self.home = home
        self.openers = openers  # first character -> (segmenter, opener) -> mode
        self.tags = tags  # markers that may come first and are dropped

    def step(self, seg: Segmenter, final: bool) -> bool:
        stripped = seg.buf.lstrip()
        for tag in self.tags:
            if stripped.startswith(tag):
                seg.buf = stripped[len(tag) :]
                return True
            if tag.startswith(stripped) and not final:
                return False
        if not stripped and not final:
            return False
        start = self.openers.get(stripped[:1])
        seg.mode = start(seg) if start is not None else self.home
        return True


def _json_calls(home: TextMode) -> Any:
    """Calls as JSON objects, separated by ';': a section without markers."""

    def start(seg: Segmenter) -> Mode:
        def call(seg: Segmenter, section: Section, opener: str) -> Mode:
            return JsonObjectCall(Fallback(home, opener), section, speculative=True)

        section = Section(Fallback(home, ""), {}, (), json_call=call, separators=";")
        return section

    return start


class Llama3Json(Segmenter):
    turn_starts = ("<|start_header_id|>assistant<|end_header_id|>",)
    call_markers = ("<|python_tag|>",)

    def initial_mode(self) -> Mode:
        content = TextMode(Channel.CONTENT)
        # without calls a JSON answer is just an answer
        start = Start(content, {"{": _json_calls(content)} if self.calls_on else {})
        content.on({"<|python_tag|>": go(start), **drop("<|eom_id|>", "<|eot_id|>")})
        return start


_IDENTIFIER = re.compile(r"\s*\[\s*[A-Za-z_][\w.]*\s*\(")
_MAYBE = re.compile(r"\s*\[\s*(?:[A-Za-z_][\w.]*\s*)?")
_LITERAL_NAMES: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


class _Unsupported(Exception):
    pass


def _literal(node: ast.expr) -> Any:
    """A Python (or JSON) literal's value; anything else is not an argument value."""
    if (
        isinstance(node, ast.Constant)
        and not isinstance(node.value, (bytes, complex))
        and node.value is not ...
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        result = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise _Unsupported
            name = _literal(key)
            if not isinstance(name, str):
                raise _Unsupported
            result[name] = _literal(value)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _Unsupported


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _Unsupported


def parse_pythonic(text: str, tools: Tools) -> list[ParsedCall] | None:
    """`[f(a=1), g()]`: calls with keyword arguments of literal values, each to an offered tool."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
        if not isinstance(tree.body, ast.List) or not tree.body.elts:
            return None
        calls: list[ParsedCall] = []
        for node in tree.body.elts:
            if not isinstance(node, ast.Call) or node.args:
                return None
            name = _dotted(node.func)
            if not tools.offers(name):
                return None
            arguments: dict[str, Any] = {}
            for keyword in node.keywords:
                if keyword.arg is None:
                    return None
                arguments[keyword.arg] = type_value(
                    _literal(keyword.value), tools.parameter(name, keyword.arg)
                )
            if not jsonable(arguments):
                return None
            calls.append((name, dump_arguments(arguments), None))
    except (SyntaxError, ValueError, RecursionError, MemoryError, _Unsupported):
        return None
    return calls


class PythonicList:
    """Reads `[...]` to its closing bracket (outside strings), then parses it as calls or gives it
    back as text. Nothing streams: the calls are known when the list closes."""

    __slots__ = ("depth", "escaped", "home", "parts", "quote", "viable")

    def __init__(self, home: TextMode) -> None:
        self.home = home
        self.parts: list[str] = []
        self.depth = 0
        self.quote = ""
        self.escaped = False
        self.viable = False  # the text opens like a call: `[name(`

    def step(self, seg: Segmenter, final: bool) -> bool:
        if not self.parts:
            seg.buf = seg.buf.lstrip()
        chunk = seg.buf
        seg.buf = ""
        end = self._scan(chunk)
        if end >= 0:
            seg.buf = chunk[end:]
            chunk = chunk[:end]
        self.parts.append(chunk)
        if not self.viable:
            head = "".join(self.parts)
            self.viable = _IDENTIFIER.match(head) is not None
            if not self.viable and not _MAYBE.fullmatch(head):
                return self._revert(seg)
        if end >= 0:
            calls = parse_pythonic("".join(self.parts), seg.tools)
            if calls is None:
                return self._revert(seg)
            for name, arguments, call_id in calls:
                seg.emit_call(name, arguments, call_id)
            seg.lstrip = True
            seg.mode = self.home
            return True
        return self._revert(seg) if final else False

    def _revert(self, seg: Segmenter) -> bool:
        seg.buf = "".join(self.parts) + seg.buf
        seg.mode = self.home
        return True

    def _scan(self, text: str) -> int:
        for i, char in enumerate(text):
            if self.quote:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == self.quote:
                    self.quote = ""
            elif char in "'\"":
                self.quote = char
            elif char in "([{":
                self.depth += 1
            elif char in ")]}":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return -1


class Llama4Pythonic(Segmenter):
    turn_starts = ("<|header_start|>assistant<|header_end|>",)
    call_markers = ("<|python_start|>", "<|python_end|>")

    def initial_mode(self) -> Mode:
        content = TextMode(Channel.CONTENT)

        def pythonic(seg: Segmenter) -> Mode:
            return PythonicList(content)

        openers = {"[": pythonic, "{": _json_calls(content)} if self.calls_on else {}
        start = Start(content, openers, tags=("<|python_start|>",) if self.calls_on else ())
        content.on({"<|python_start|>": go(start), "<|python_end|>": go(start), **drop("<|eom|>", "<|eot|>")})
        return start
