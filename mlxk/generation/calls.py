"""Modes that read one tool call: JSON arguments streamed as they arrive, or a whole call parsed at its end.

Every call mode decides, from the text alone, when the call is certain. Before that nothing is emitted,
and a call that turns out not to be one goes back to text (its opener emitted, the rest read again).
After that its start is out: if it then turns out malformed or truncated, a FAILED_CALL delta voids it
and carries its raw text as content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from mlxk.generation.core import Fallback, Mode, Segmenter
from mlxk.generation.jsonscan import JsonScanner
from mlxk.generation.markers import MarkerSet
from mlxk.generation.schema import is_json_object

_NON_SPACE = re.compile(r"\S")
_NO_KEY = object()

# A parsed call: name, arguments (a JSON object text) and the id the format gave it, if any.
ParsedCall = tuple[str, str, str | None]
# What reads on after a header: (segmenter, header text, the marker that ended it) -> mode, or None
HeaderHandler = Callable[[Segmenter, str, str], "Mode | None"]


class Header:
    """A short header up to one of `ends`: a call's name before its arguments, a message's channel.
    `on_header(seg, header, end)` returns the mode that reads on, or None when this is not a header."""

    __slots__ = ("ends", "fallback", "limit", "on_header", "raw")

    def __init__(
        self,
        fallback: Fallback,
        ends: tuple[str, ...],
        on_header: HeaderHandler,
        limit: int = 256,
    ) -> None:
        self.fallback = fallback
        self.ends = MarkerSet(ends)
        self.on_header = on_header
        self.limit = limit
        self.raw = ""

    def step(self, seg: Segmenter, final: bool) -> bool:
        self.raw += seg.buf
        seg.buf = ""
        i, end = self.ends.search(self.raw)
        # an end past the limit is no header's end, as it would not be had the text come in pieces
        if end is not None and i <= self.limit:
            seg.buf = self.raw[i + len(end) :]
            mode = self.on_header(seg, self.raw[:i], end)
            if mode is not None:
                seg.mode = mode
                return True
            seg.buf = ""
            return self.fallback.revert(seg, self.raw)
        # i is where an end marker could still start: past the limit, none will come in time
        if final or i > self.limit:
            return self.fallback.revert(seg, self.raw)
        return False


class JsonArgsCall:
    """Arguments written as a bare JSON object after the call's name: streamed as they arrive. The call
    opens at the object's first brace; `then` reads on after the object (a closing marker, say)."""

    __slots__ = ("call_id", "fallback", "held", "index", "name", "parts", "prefix", "scanner", "then")

    def __init__(
        self, fallback: Fallback, name: str, then: Mode, *, call_id: str | None = None, prefix: str = ""
    ) -> None:
        self.fallback = fallback
        self.name = name
        self.then = then
        self.call_id = call_id
        self.prefix = prefix  # the call's raw text before its arguments, for a failed call's content
        self.scanner = JsonScanner()
        self.parts: list[str] = []
        self.held = ""
        self.index: int | None = None

    def step(self, seg: Segmenter, final: bool) -> bool:
        if self.index is None:
            buf = seg.buf.lstrip()
            if not buf:
                return self.fallback.revert(seg, self.prefix) if final else False
            if buf[0] != "{":
                return self.fallback.revert(seg, self.prefix)
            seg.buf = buf
            self.index = seg.open_call(self.name, self.call_id)
        chunk = seg.buf
        seg.buf = ""
        end = self.scanner.scan(chunk)
        if end >= 0:
            seg.buf = chunk[end:]
            chunk = chunk[:end]
        self.parts.append(chunk)
        text = self.held + chunk
        body = text if end >= 0 else text.rstrip()  # trailing whitespace waits: it may end the value
        self.held = text[len(body) :]
        seg.call_text(self.index, body)
        if end >= 0:
            if not is_json_object("".join(self.parts)):
                return self._fail(seg)
            seg.lstrip = True
            seg.mode = self.then
            return True
        return self._fail(seg) if final else False

    def _fail(self, seg: Segmenter) -> bool:
        assert self.index is not None
        seg.fail_call(self.index, self.fallback.opener + self.prefix + "".join(self.parts))
        seg.mode = self.fallback.home
        return True


class JsonObjectCall:
    """A call written as one JSON object, {"name": ..., "arguments": {...}} ("parameters" for Llama).

    The call opens once its name is known and its arguments member has begun; the arguments then stream
    as raw JSON text. Speculative calls (a bare object that may just be a JSON answer) also need a name
    among the offered tools. Formats whose object carries the call's id (`id_key`) open at the end.
    """

    __slots__ = (
        "arg_keys", "args", "args_end", "args_key", "args_start", "args_value", "bad", "call_id", "done_marks",
        "fallback", "held", "id_key", "index", "key", "name", "parts", "scanner", "seg_start",
        "size", "speculative", "then", "value_start",
    )  # fmt: skip

    def __init__(
        self,
        fallback: Fallback,
        then: Mode,
        *,
        arg_keys: tuple[str, ...] = ("arguments", "parameters"),
        speculative: bool = False,
        id_key: str | None = None,
    ) -> None:
        self.fallback = fallback
        self.then = then
        self.arg_keys = arg_keys
        self.speculative = speculative
        self.id_key = id_key
        self.scanner = JsonScanner()
        self.parts: list[str] = []
        self.size = 0
        self.done_marks = 0
        self.key: object = _NO_KEY
        self.seg_start = 1
        self.value_start = 0
        self.name: str | None = None
        self.call_id: str | None = None
        self.args: str | None = None  # the arguments member's raw text, once it ended
        self.args_key = False  # the arguments member has begun
        self.args_start = -1  # where streamed arguments begin in the raw text; -2: they do not stream
        self.args_value = 0  # where the arguments member's value begins
        self.args_end = -1
        self.held = ""
        self.index: int | None = None
        self.bad = False

    def _raw(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def step(self, seg: Segmenter, final: bool) -> bool:
        if not self.parts:
            buf = seg.buf.lstrip()
            if not buf:
                return self.fallback.revert(seg, "") if final else False
            if buf[0] != "{":
                return self.fallback.revert(seg, "")
            seg.buf = buf
        chunk = seg.buf
        seg.buf = ""
        offset = self.size
        marks = self.scanner.marks
        first_new = len(marks)
        end = self.scanner.scan(chunk)
        for k in range(first_new, len(marks)):
            marks[k] += offset
        if end >= 0:
            seg.buf = chunk[end:]
            chunk = chunk[:end]
        self.parts.append(chunk)
        self.size += len(chunk)
        self._read_members(seg, closed=end >= 0)
        if self.speculative and self.name is not None and not seg.tools.offers(self.name):
            self.bad = True  # not a call of an offered tool: an answer that happens to be JSON
        if self.bad:
            return self._fail(seg)
        self._open(seg, closed=end >= 0)
        self._stream(seg, chunk, offset)
        if end >= 0:
            return self._close(seg)
        return self._fail(seg) if final else False

    def _read_members(self, seg: Segmenter, closed: bool) -> None:
        marks = self.scanner.marks
        if self.done_marks == len(marks) and not closed:
            return
        raw = self._raw()
        for at in marks[self.done_marks :]:
            self._mark(raw, at)
            if self.bad:
                break
            # the call opens at the member that allows it, as it would had the text stopped
            # there: a later member that spoils it then fails an opened call, however the
            # text was cut into deltas
            self._open(seg, closed=False)
        self.done_marks = len(marks)
        if closed:
            self._mark(raw, len(raw) - 1)  # the closing brace ends the last member

    def _mark(self, raw: str, at: int) -> None:
        if raw[at] == ":":
            try:
                key = json.loads(raw[self.seg_start : at])
            except ValueError:
                key = None
            if self.key is not _NO_KEY or not isinstance(key, str):
                self.bad = True
                return
            if self.speculative and key not in self.arg_keys and key not in ("name", "id", "type"):
                self.bad = True  # a key no call has: a JSON answer, to stream as content now
                return
            self.key = key
            self.value_start = at + 1
            if key in self.arg_keys and not self.args_key:
                self.args_key = True
                self.args_value = at + 1
            return
        if self.key is _NO_KEY:  # `{}` and a trailing comma are fine; anything else is not JSON
            if raw[at] == "," or raw[self.seg_start : at].strip():
                self.bad = True
        else:
            self._member(str(self.key), raw[self.value_start : at].strip(), at)
        self.key = _NO_KEY
        self.seg_start = at + 1

    def _member(self, key: str, value: str, at: int) -> None:
        if key in self.arg_keys:
            if self.args is None:
                self.args = value
                self.args_end = at
            return
        if key == "name" or (key == self.id_key and key is not None):
            try:
                text = json.loads(value)
            except ValueError:
                text = None
            if not isinstance(text, str) or not text.strip():
                self.bad = self.bad or key == "name"
            elif key == "name" and self.name is None:
                self.name = text.strip()
            elif key == self.id_key and self.call_id is None:
                self.call_id = text

    def _open(self, seg: Segmenter, closed: bool) -> None:
        if self.index is not None or self.name is None:
            return
        if self.id_key is not None and not closed:
            return
        if self.speculative:
            if not (self.args_key and seg.tools.offers(self.name)):
                return
        elif not (self.args_key or closed):
            return
        self.index = seg.open_call(self.name, self.call_id)

    def _stream(self, seg: Segmenter, chunk: str, offset: int) -> None:
        if self.index is None or not self.args_key or self.args_start == -2:
            return
        ended = self.args is not None
        if self.args_start == -1:
            raw = self._raw()
            first = _NON_SPACE.search(raw, self.args_value)
            if first is None:
                return
            if raw[first.start()] != "{":
                self.args_start = -2
                return
            self.args_start = first.start()
            text = raw[self.args_start : self.args_end if ended else len(raw)]
        else:
            low = max(offset, self.args_start)
            high = self.args_end if ended else offset + len(chunk)
            text = chunk[low - offset : high - offset] if high > low else ""
        text = self.held + text
        body = text.rstrip()
        self.held = "" if ended else text[len(body) :]
        seg.call_text(self.index, body)

    def _arguments(self) -> str | None:
        """The final arguments text, or None when they are not a JSON object."""
        if self.args is None:
            return "{}"
        if self.args_start >= 0:
            return self.args if is_json_object(self.args) else None
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        if value is None:
            return "{}"
        if isinstance(value, str) and is_json_object(value):  # arguments sent as a JSON string
            return value.strip()
        return None

    def _close(self, seg: Segmenter) -> bool:
        if self.index is None:  # ``step`` tried to open it with the object closed: not a call
            return self.fallback.revert(seg, self._raw())
        arguments = self._arguments()
        if arguments is None:
            return self._fail(seg)
        if self.args_start < 0:
            seg.call_text(self.index, arguments)
        seg.lstrip = True
        seg.mode = self.then
        return True

    def _fail(self, seg: Segmenter) -> bool:
        if self.index is None:
            return self.fallback.revert(seg, self._raw())
        seg.fail_call(self.index, self.fallback.opener + self._raw())
        seg.mode = self.fallback.home
        return True


class CollectedCall:
    """A call read whole up to a closing marker, then parsed: for formats whose arguments are not JSON
    and are converted at the end of the call. A closing marker counts only where the text before it
    parses as a complete call (so one inside an argument value is just text) and, given `follows`,
    where what comes after it (past whitespace) is one of those markers or the end of the output.
    `check` may reject the call early from its first characters (True: fine, False: not a call, None:
    cannot tell yet)."""

    __slots__ = ("check", "ends", "fallback", "follows", "parse", "parts", "pending", "then")

    def __init__(
        self,
        fallback: Fallback,
        ends: tuple[str, ...],
        parse: Callable[[str], list[ParsedCall] | None],
        then: Mode,
        *,
        check: Callable[[str], bool | None] | None = None,
        follows: tuple[str, ...] | None = None,
    ) -> None:
        self.fallback = fallback
        self.ends = MarkerSet(ends)
        self.parse = parse
        self.then = then
        self.check = check
        self.follows = follows
        self.parts: list[str] = []  # text searched already
        self.pending = ""  # text not yet searched, or held back as the start of a closing marker

    def step(self, seg: Segmenter, final: bool) -> bool:
        self.pending += seg.buf
        seg.buf = ""
        if self.check is not None:
            verdict = self.check("".join(self.parts) + self.pending)
            if verdict is False:
                return self._revert(seg)
            if verdict is True:
                self.check = None
        while True:
            i, end = self.ends.search(self.pending)
            if end is None:
                self.parts.append(self.pending[:i])
                self.pending = self.pending[i:]
                break
            stop = i + len(end)
            after = self._after(self.pending[stop:], final)
            if after is None:
                self.parts.append(self.pending[:i])  # this marker is decided with more text
                self.pending = self.pending[i:]
                return False
            calls = self.parse("".join(self.parts) + self.pending[:i]) if after else None
            if calls is not None:
                seg.buf = self.pending[stop:]
                for name, arguments, call_id in calls:
                    seg.emit_call(name, arguments, call_id)
                seg.lstrip = True
                seg.mode = self.then
                return True
            self.parts.append(self.pending[:stop])
            self.pending = self.pending[stop:]
        return self._revert(seg) if final else False

    def _after(self, rest: str, final: bool) -> bool | None:
        """Whether the text after a closing marker lets it close the call; None: cannot tell yet."""
        if self.follows is None:
            return True
        rest = rest.lstrip()
        if not rest:
            return True if final else None
        if rest.startswith(self.follows):
            return True
        if any(marker.startswith(rest) for marker in self.follows):
            return True if final else None
        return False

    def _revert(self, seg: Segmenter) -> bool:
        return self.fallback.revert(seg, "".join(self.parts) + self.pending)
