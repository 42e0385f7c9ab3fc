"""The segmenter machinery every format shares: a buffer of unconsumed text and the mode reading it.

A segmenter is fed the text deltas of one output and emits Deltas. Its buffer only ever holds text
that could still be part of a marker (or the call being read): each delta is scanned once, with the
few held-back characters before it, never the whole output again. A mode reads from the front of the
buffer and either consumes it (emitting deltas, perhaps switching to another mode) or waits for more.

Whitespace next to a marker is the template's formatting, not text: a run of content or reasoning
loses the whitespace right after a marker and right before one (held back until it is known which).
Text away from markers is passed on exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from mlxk.generation.callids import CallIds
from mlxk.generation.events import Channel, Delta
from mlxk.generation.markers import MarkerSet
from mlxk.generation.schema import Tools


class Mode(Protocol):
    def step(self, seg: Segmenter, final: bool) -> bool:
        """Reads from seg.buf. True when it made progress and the next step may make more; False when
        it waits for more text (or, when final, has consumed everything)."""
        ...


# What a marker met in text does: (segmenter, the marker) -> None, usually switching seg.mode.
Action = Callable[["Segmenter", str], None]


class Segmenter:
    """Base of the per-format segmenters: feed() each delta, then finish() once."""

    short_ids = False  # Mistral's templates want 9-character ids back
    # The markers of calls in text (openers, closers, separators). Without calls (no tools were
    # offered: the model was told of none), they are text like any other.
    call_markers: tuple[str, ...] = ()
    # Where the assistant's turn starts in a rendered prompt: only the prompt text after the last of
    # these can tell how the output begins (inside reasoning, inside a channel header, ...).
    turn_starts: tuple[str, ...] = ()

    def __init__(
        self,
        tools: Iterable[Mapping[str, Any]] | Tools | None = None,
        *,
        prompt_tail: str | None = None,
        seed: int | None = None,
        calls: bool = True,
    ) -> None:
        self.tools = tools if isinstance(tools, Tools) else Tools(tools)
        self.calls_on = calls
        self.inert = frozenset(() if calls else self.call_markers)  # markers read as text
        self.ids = CallIds(seed, short=self.short_ids)
        self.buf = ""
        self.lstrip = False
        self.gap = ""  # the whitespace dropped before the last marker, given back if it was no marker
        self.calls = 0
        self._out: list[Delta] = []
        self._done = False
        self.mode: Mode = self.initial_mode()
        if prompt_tail:
            self._prime(prompt_tail)

    def initial_mode(self) -> Mode:
        raise NotImplementedError

    # -- the interface --------------------------------------------------------------------------
    def feed(self, text: str) -> list[Delta]:
        if self._done:
            raise RuntimeError("feed() after finish()")
        if text:
            self.buf += text
            while self.mode.step(self, False):
                pass
        return self._take()

    def finish(self) -> list[Delta]:
        """The end of the output: held-back text is resolved (as content, as a failed call, ...)."""
        if not self._done:
            self._done = True
            while self.mode.step(self, True):
                pass
        return self._take()

    def _take(self) -> list[Delta]:
        out, self._out = self._out, []
        return out

    def _prime(self, prompt_tail: str) -> None:
        """Runs the end of the prompt through the modes, so the output starts in the right one."""
        cut = max((prompt_tail.rfind(m) + len(m) for m in self.turn_starts if m in prompt_tail), default=0)
        self.buf = prompt_tail[cut:]
        while self.mode.step(self, False):
            pass
        self._out.clear()
        self.calls = 0
        if isinstance(self.mode, TextMode) or self.buf.isspace():
            self.buf = ""  # prompt text is not output (a header being read stays: the output ends it)

    # -- what modes emit ------------------------------------------------------------------------
    def text(self, channel: Channel, text: str) -> None:
        if self.lstrip:
            text = text.lstrip()
            if not text:
                return
            self.lstrip = False
        if text:
            self._out.append(Delta(channel, text))

    def open_call(self, name: str, call_id: str | None = None) -> int:
        index = self.calls
        self.calls += 1
        self._out.append(Delta(Channel.TOOL_CALL, index=index, id=call_id or self.ids.next(), name=name))
        return index

    def call_text(self, index: int, text: str) -> None:
        if text:
            self._out.append(Delta(Channel.TOOL_CALL, text, index=index))

    def emit_call(self, name: str, arguments: str, call_id: str | None = None) -> None:
        self.call_text(self.open_call(name, call_id), arguments)

    def fail_call(self, index: int, raw: str) -> None:
        self._out.append(Delta(Channel.FAILED_CALL, raw, index=index))
        self.lstrip = False  # the text that follows continues the failed call's, spaces and all


def go(mode: Mode) -> Action:
    """The action that switches to `mode`."""

    def action(seg: Segmenter, marker: str) -> None:
        seg.mode = mode

    return action


def stay(seg: Segmenter, marker: str) -> None:
    """The action of a marker that is dropped (a stray closing marker, an end-of-turn token)."""


class TextMode:
    """Content or reasoning up to the next marker; each marker has an action (usually a mode switch)."""

    __slots__ = ("actions", "channel", "markers")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.actions: dict[str, Action] = {}
        self.markers = MarkerSet(())

    def on(self, actions: Mapping[str, Action]) -> TextMode:
        """Adds marker actions (modes refer to each other, so they are wired after construction)."""
        self.actions.update(actions)
        self.markers = MarkerSet(self.actions)
        return self

    def step(self, seg: Segmenter, final: bool) -> bool:
        buf = seg.buf
        if seg.lstrip:
            buf = seg.buf = buf.lstrip()
        if not buf:
            return False
        i, marker = self.markers.search(buf)
        if marker is not None and marker in seg.inert:  # a call marker while calls are off: text
            end = i + len(marker)
            seg.text(self.channel, buf[:end])
            seg.buf = buf[end:]
            return True
        if marker is not None:
            before = buf[:i]
            body = before.rstrip()
            seg.text(self.channel, body)
            seg.gap = before[len(body) :]
            seg.buf = buf[i + len(marker) :]
            seg.lstrip = True
            self.actions[marker](seg, marker)
            return True
        if final:
            seg.text(self.channel, buf)
            seg.buf = ""
            return False
        head = buf[:i].rstrip()
        seg.text(self.channel, head)
        seg.buf = buf[len(head) :]
        return False


class Expect:
    """Consumes one of `markers` if the text (after whitespace) starts with it, then goes on with
    `then` either way: for the optional closing marker after a call."""

    __slots__ = ("markers", "then")

    def __init__(self, markers: tuple[str, ...], then: Mode) -> None:
        self.markers = markers
        self.then = then

    def step(self, seg: Segmenter, final: bool) -> bool:
        stripped = seg.buf.lstrip()
        if not final and (
            not stripped or any(m.startswith(stripped) and m != stripped for m in self.markers)
        ):
            return False  # a marker may still be coming (a longer one, too)
        for marker in sorted(self.markers, key=len, reverse=True):
            if stripped.startswith(marker):
                seg.buf = stripped[len(marker) :]
                break
        seg.lstrip = True
        seg.mode = self.then
        return True


class Fallback:
    """How a call that is not one goes back to text: its opener is emitted, the rest read again."""

    __slots__ = ("home", "opener")

    def __init__(self, home: TextMode, opener: str) -> None:
        self.home = home
        self.opener = opener

    def revert(self, seg: Segmenter, raw: str) -> bool:
        seg.lstrip = False
        if self.opener:
            seg.text(self.home.channel, seg.gap + self.opener)
        seg.buf = raw + seg.buf
        seg.mode = self.home
        self.opener = ""  # a second revert of the same call (cannot happen) would not repeat it
        return True


# Starts one call inside a section: (segmenter, section, opener) -> the call's mode, where `opener` is
# the text the call gives back to content if it turns out not to be a call.
CallStarter = Callable[[Segmenter, "Section", str], Mode]


class Section:
    """Between a section's opening and closing markers (`<tool_call>`…`</tool_call>`, a DeepSeek or
    Kimi tool-calls block): calls, separated by whitespace (and `separators`). Anything else ends the
    section; a section that held no call is not one, and its opener goes back to text."""

    __slots__ = ("calls", "ends", "fallback", "json_call", "markers", "separators", "starters")

    def __init__(
        self,
        fallback: Fallback,
        starters: Mapping[str, CallStarter],
        ends: tuple[str, ...],
        *,
        json_call: CallStarter | None = None,
        separators: str = "",
    ) -> None:
        self.fallback = fallback
        self.starters = starters
        self.ends = ends
        self.json_call = json_call  # a call written as a bare JSON object, if the section takes one
        self.separators = separators
        self.markers = MarkerSet((*starters, *ends))
        self.calls = 0

    @property
    def home(self) -> TextMode:
        return self.fallback.home

    def step(self, seg: Segmenter, final: bool) -> bool:
        if self.calls:  # between calls: whitespace and separators are formatting
            seg.buf = (
                seg.buf.lstrip().lstrip(self.separators).lstrip() if self.separators else seg.buf.lstrip()
            )
        buf = seg.buf.lstrip()  # before the first call, kept in case this is no section
        if not buf:
            return self._leave(seg) if final else False
        i, marker = self.markers.search(buf)
        if i == 0 and marker is not None:
            seg.buf = buf[len(marker) :]
            if marker in self.ends:
                seg.lstrip = True
                seg.mode = self.home  # an empty section is nothing at all
                return True
            seg.mode = self.starters[marker](seg, self, self._opener() + marker)
            self.calls += 1
            return True
        if i == 0 and not final:
            return False  # the start of a marker
        if self.json_call is not None and buf[0] == "{":
            seg.buf = buf
            seg.mode = self.json_call(seg, self, self._opener())
            self.calls += 1
            return True
        return self._leave(seg)

    def _opener(self) -> str:
        return self.fallback.opener if self.calls == 0 else ""

    def _leave(self, seg: Segmenter) -> bool:
        if self.calls == 0:
            return self.fallback.revert(seg, "")
        seg.lstrip = True
        seg.mode = self.home
        return True


def unwrapped(open_section: Action) -> Action:
    """The action for a call marker met outside its section (some models leave the section's opening
    out): the section opens there, with the marker read again as its first call."""

    def action(seg: Segmenter, marker: str) -> None:
        open_section(seg, "")
        seg.buf = marker + seg.buf

    return action


def think_modes(
    opens: tuple[str, ...] = ("<think>",), closes: tuple[str, ...] = ("</think>",)
) -> tuple[TextMode, TextMode]:
    """Content and reasoning text modes, switched by the reasoning markers (stray ones are dropped)."""
    content = TextMode(Channel.CONTENT)
    reasoning = TextMode(Channel.REASONING)
    content.on({**dict.fromkeys(opens, go(reasoning)), **dict.fromkeys(closes, stay)})
    reasoning.on({**dict.fromkeys(closes, go(content)), **dict.fromkeys(opens, stay)})
    return content, reasoning


def drop(*markers: str) -> dict[str, Action]:
    """Actions for markers that end a turn or stray from elsewhere: never text, nothing to do."""
    return dict.fromkeys(markers, stay)
