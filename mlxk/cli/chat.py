"""Talking to a loaded engine from the terminal: one streamed answer, or a chat with history.

A thinking model's reasoning comes before its answer: on a terminal it is shown dimmed, where
stdout is no terminal (a pipe, a file) it goes to stderr so that stdout holds the answer alone,
and ``--hide-reasoning`` drops it. The history keeps the answers only (chat templates drop earlier
turns' reasoning too).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, replace
from typing import TextIO

from mlxk.errors import MlxkError
from mlxk.generation.chunks import Usage
from mlxk.generation.engine import Engine
from mlxk.generation.request import GenerationRequest, Message

HELP = "/clear forgets the conversation, /exit (or Ctrl-D) leaves; Ctrl-C stops an answer."
DIM, UNDIM = "\x1b[2m", "\x1b[22m"


@dataclass(frozen=True)
class ReasoningView:
    """Where a thinking model's reasoning is written (None: nowhere), and whether dimmed."""

    out: TextIO | None
    dim: bool = False

    @classmethod
    def for_terminal(cls, hide: bool) -> ReasoningView:
        if hide:
            return cls(None)
        if sys.stdout.isatty():
            return cls(sys.stdout, dim=True)
        return cls(sys.stderr, dim=sys.stderr.isatty())


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str
    finish_reason: str
    usage: Usage


class Conversation:
    def __init__(
        self,
        engine: Engine,
        system: str | None,
        raw: bool,
        settings: GenerationRequest,
        reasoning: ReasoningView | None = None,
    ) -> None:
        self.engine = engine
        self.system = system
        self.raw = raw  # no chat template: the text goes to the model as it is
        self.settings = settings  # sampling, budget, stops, thinking; each turn brings its own text
        self.reasoning = reasoning or ReasoningView(None)
        self.history: list[Message] = []

    def request_for(self, prompt: str) -> GenerationRequest:
        if self.raw:  # the conversation so far as plain text, turn after turn
            turns = [self.system] if self.system else []
            text = "\n\n".join([*turns, *(m.text for m in self.history), prompt])
            return replace(self.settings, prompt=text, messages=())
        messages = [Message("system", self.system)] if self.system else []
        messages += [*self.history, Message("user", prompt)]
        return replace(self.settings, prompt=None, messages=tuple(messages))

    def collect(self, request: GenerationRequest) -> Answer:
        parts: list[str] = []
        thoughts: list[str] = []
        for chunk in self.engine.generate(request):
            parts.append(chunk.content)
            thoughts.append(chunk.reasoning)
            if chunk.usage is not None:
                return Answer("".join(parts), "".join(thoughts), chunk.finish_reason or "length", chunk.usage)
        raise AssertionError("the engine ended a stream without usage")

    def stream(
        self, request: GenerationRequest, out: TextIO, cancel: threading.Event | None = None
    ) -> tuple[str, Usage]:
        """Write the answer as it comes (the reasoning before it, as ``self.reasoning`` says);
        a final newline if it did not end with one."""
        last = "\n"
        view = self.reasoning
        thinking = ""  # the last character of reasoning written and not yet ended by a newline
        for chunk in self.engine.generate(request, cancel):
            if chunk.reasoning and view.out is not None:
                text = f"{DIM}{chunk.reasoning}{UNDIM}" if view.dim else chunk.reasoning
                view.out.write(text)  # styled per piece: an interrupted answer leaves no dim behind
                view.out.flush()
                thinking = chunk.reasoning[-1]
            if chunk.content:
                if thinking and view.out is not None:  # the reasoning is over: a line, then the answer
                    view.out.write("\n\n" if view.out is sys.stdout else "\n")
                    view.out.flush()
                    thinking = ""
                out.write(chunk.content)
                out.flush()
                last = chunk.content[-1]
            if chunk.usage is not None:
                if thinking and view.out is not None and view.out is not sys.stdout:
                    view.out.write("\n")
                elif thinking:
                    last = thinking  # reasoning and no answer, on stdout
                if last != "\n":
                    out.write("\n")
                    out.flush()
                return chunk.finish_reason or "length", chunk.usage
        raise AssertionError("the engine ended a stream without usage")

    def interactive(self) -> int:
        sys.stderr.write(f"Chat with a model. {HELP}\n")
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                sys.stdout.write("\n")
                return 0
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                sys.stderr.write(f"({HELP})\n")
                continue
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit", "/bye"):
                return 0
            if text == "/clear":
                self.history.clear()
                sys.stderr.write("(the conversation is forgotten)\n")
                continue
            if text.startswith("/") and text.split()[0] in ("/help", "/?"):
                sys.stderr.write(f"{HELP}\n")
                continue
            self._answer(line)

    def _answer(self, prompt: str) -> None:
        answer: list[str] = []

        class Tee:
            """Streams to the terminal and keeps the text for the history."""

            def write(self, text: str) -> int:
                answer.append(text)
                return sys.stdout.write(text)

            def flush(self) -> None:
                sys.stdout.flush()

        try:
            self.stream(self.request_for(prompt), Tee())  # type: ignore[arg-type]
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            sys.stderr.write("(stopped)\n")
        except MlxkError as error:  # e.g. the conversation no longer fits the context
            sys.stderr.write(f"Error: {error.message} (/clear starts the conversation afresh)\n")
            return
        self.history += [Message("user", prompt), Message("assistant", "".join(answer).rstrip("\n"))]
