"""Talking to a loaded engine from the terminal: one streamed answer, or a chat with history."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from typing import TextIO

from mlxk.errors import MlxkError
from mlxk.generation.chunks import Usage
from mlxk.generation.engine import Engine
from mlxk.generation.request import GenerationRequest, Message

HELP = "/clear forgets the conversation, /exit (or Ctrl-D) leaves; Ctrl-C stops an answer."


class Conversation:
    def __init__(self, engine: Engine, system: str | None, raw: bool, settings: GenerationRequest) -> None:
        self.engine = engine
        self.system = system
        self.raw = raw  # no chat template: the text goes to the model as it is
        self.settings = settings  # sampling, budget and stops; each turn brings its own text
        self.history: list[Message] = []

    def request_for(self, prompt: str) -> GenerationRequest:
        if self.raw:  # the conversation so far as plain text, turn after turn
            turns = [self.system] if self.system else []
            text = "\n\n".join([*turns, *(m.text for m in self.history), prompt])
            return replace(self.settings, prompt=text, messages=())
        messages = [Message("system", self.system)] if self.system else []
        messages += [*self.history, Message("user", prompt)]
        return replace(self.settings, prompt=None, messages=tuple(messages))

    def collect(self, request: GenerationRequest) -> tuple[str, str, Usage]:
        parts: list[str] = []
        for chunk in self.engine.generate(request):
            parts.append(chunk.content)
            if chunk.usage is not None:
                return "".join(parts), chunk.finish_reason or "length", chunk.usage
        raise AssertionError("the engine ended a stream without usage")

    def stream(
        self, request: GenerationRequest, out: TextIO, cancel: threading.Event | None = None
    ) -> tuple[str, Usage]:
        """Write the answer as it comes; a final newline if it did not end with one."""
        last = "\n"
        for chunk in self.engine.generate(request, cancel):
            if chunk.content:
                out.write(chunk.content)
                out.flush()
                last = chunk.content[-1]
            if chunk.usage is not None:
                if last != "\n":
                    out.write("\n")
                    out.flush()
                return chunk.finish_reason or "length", chunk.usage
        raise AssertionError("the engine ended a stream without usage")

    def interactive(self, first: str | None = None) -> int:
        """The chat loop; ``first``, when given, is answered before the first prompt is shown."""
        sys.stderr.write(f"Chat with a model. {HELP}\n")
        if first is not None:
            sys.stdout.write(f">>> {first}\n")
            self._answer(first)
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
