"""gpt-oss's harmony format (`harmony`).

The prompt ends with `<|start|>assistant`; the output continues that message's header, then writes
messages until a stop token:
    <|channel|>analysis<|message|>thinking...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{...}<|call|>
    <|start|>assistant to=functions.f<|channel|>commentary json<|message|>{...}<|call|>
    <|start|>assistant<|channel|>final<|message|>the answer<|return|>
analysis is reasoning; a message to `functions.NAME` is a call (its JSON body streams); final and
commentary without a recipient (a preamble) are content.
"""

from __future__ import annotations

import re

from mlxk.generation.calls import Header, HeaderHandler, JsonArgsCall
from mlxk.generation.core import Action, Expect, Fallback, Mode, Segmenter, TextMode, drop
from mlxk.generation.events import Channel

_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([\w-]+)")
_ENDS = ("<|end|>", "<|return|>", "<|call|>")


class Harmony(Segmenter):
    turn_starts = ("<|start|>assistant",)

    def initial_mode(self) -> Mode:
        self.content = TextMode(Channel.CONTENT)
        self.reasoning = TextMode(Channel.REASONING)
        for mode in (self.content, self.reasoning):
            mode.on(
                {
                    "<|start|>": self._header(""),
                    "<|channel|>": self._header("<|channel|>"),
                    **drop("<|message|>", "<|constrain|>"),
                }
            )
        self.content.on(drop(*_ENDS))
        self.reasoning.on(dict.fromkeys(_ENDS, self._go_content))
        return Header(Fallback(self.content, ""), ("<|message|>",), self._on_header)

    @staticmethod
    def _go_content(seg: Segmenter, marker: str) -> None:
        assert isinstance(seg, Harmony)
        seg.mode = seg.content

    def _header(self, opener: str) -> Action:
        def action(seg: Segmenter, marker: str) -> None:
            seg.mode = Header(Fallback(self.content, ""), ("<|message|>",), self._with(opener))

        return action

    def _with(self, opener: str) -> HeaderHandler:
        return lambda seg, header, end: self._on_header(seg, opener + header, end)

    def _on_header(self, seg: Segmenter, header: str, end: str) -> Mode | None:
        recipient = _RECIPIENT.search(header)
        if recipient is not None and seg.calls_on:
            name = recipient.group(1).removeprefix("functions.")
            # a body that is no JSON object is content; the header is not read again
            return JsonArgsCall(Fallback(self.content, ""), name, Expect(_ENDS, self.content))
        channel = _CHANNEL.search(header)
        seg.lstrip = True
        if channel is not None and channel.group(1) == "analysis":
            return self.reasoning
        return self.content
