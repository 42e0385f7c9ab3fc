from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from cleo.helpers import argument, option

from mlxk.cache.runnable import runnable_model
from mlxk.cli.base import EXIT_INTERRUPTED, MlxkCommand
from mlxk.errors import InvalidField, ValidationError
from mlxk.generation.request import GenerationRequest, Message, ResponseFormat, Sampling
from mlxk.output.generation import render_stats, run_data


def _number(value: Any, name: str, kind: type) -> Any:
    """An option's text as a number of ``kind``; its bounds are the request value's to check."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"--{name} takes a {'whole ' if kind is int else ''}number, not {value!r}"
        ) from None


JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", type(None): "null"}


def read_schema(path: str) -> dict[str, Any] | bool:
    """The JSON Schema in the file at ``path`` (an object, or true/false); a file that cannot be
    read or holds no schema raises ValidationError saying which and why."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValidationError(f"--json-schema {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValidationError(f"--json-schema {path}: not UTF-8 text") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"--json-schema {path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(schema, dict | bool):
        kind = JSON_KINDS.get(type(schema), type(schema).__name__)
        raise ValidationError(f"--json-schema {path}: a JSON Schema is an object (or true/false), not {kind}")
    return schema


def _readable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class RunCommand(MlxkCommand):
    name = "run"
    description = "Generate with a cached model: one answer (streamed), or a chat when no prompt is given."
    json_command = "run"
    arguments = [
        argument("model", "Model name (org/name, a unique part of it, or name@<hash prefix>)."),
        argument(
            "prompt",
            "The prompt; '-' (or a pipe) reads stdin; several parts are joined.",
            optional=True,
            multiple=True,
        ),
    ]
    options = [
        option("max-tokens", None, "Most tokens to generate.", flag=False, default="512"),
        option("temperature", None, "Sampling temperature (0: greedy).", flag=False, default="0.7"),
        option(
            "top-p",
            None,
            "Nucleus sampling: keep the smallest set of tokens with this much probability.",
            flag=False,
            default="0.9",
        ),
        option("top-k", None, "Keep only the k most likely tokens (0: off).", flag=False, default="0"),
        option(
            "min-p",
            None,
            "Drop tokens below this fraction of the top token's probability.",
            flag=False,
            default="0",
        ),
        option("repetition-penalty", None, "Penalty for repeating recent tokens (1: off).", flag=False),
        option("seed", None, "Random seed, for repeatable sampling.", flag=False),
        option("system", None, "System prompt.", flag=False),
        option(
            "stop",
            None,
            "Stop when this text is generated (repeatable); it is not printed.",
            flag=False,
            multiple=True,
        ),
        option(
            "hide-reasoning",
            None,
            "Leave a thinking model's reasoning out (shown dimmed on a terminal, on stderr otherwise; "
            "the 'reasoning' field with --json).",
            flag=True,
        ),
        option("no-reasoning", None, "The same as --hide-reasoning (mlx-knife 2.0's name).", flag=True),
        option(
            "no-thinking",
            None,
            "Ask the model not to think (its chat template's enable_thinking switch, where it has one).",
            flag=True,
        ),
        option(
            "no-chat-template",
            None,
            "Send the prompt as raw text, without the model's chat template.",
            flag=True,
        ),
        option(
            "json-schema",
            None,
            "Hold the answer to this JSON Schema (a file): the output parses and validates.",
            flag=False,
        ),
        option("json-object", None, "Hold the answer to one JSON object.", flag=True),
        option("prompt", None, "The prompt, as an option (after any prompt arguments).", flag=False),
        option("no-stream", None, "Print the answer whole when it is complete, not as it comes.", flag=True),
        option(
            "interactive",
            "i",
            "Chat on the terminal (a prompt given is the chat's first message).",
            flag=True,
        ),
    ]

    def _settings(self) -> GenerationRequest:
        """The options as a request value (its checks run now, before any model loads); each
        turn of the conversation is this with its own prompt or messages."""
        penalty = self.option("repetition-penalty")
        seed = self.option("seed")
        sampling = Sampling(
            temperature=_number(self.option("temperature"), "temperature", float),
            top_p=_number(self.option("top-p"), "top-p", float),
            top_k=_number(self.option("top-k"), "top-k", int),
            min_p=_number(self.option("min-p"), "min-p", float),
            repetition_penalty=None if penalty is None else _number(penalty, "repetition-penalty", float),
            seed=None if seed is None else _number(seed, "seed", int),
        )
        return GenerationRequest(
            messages=(Message("user", ""),),  # each turn brings its own
            thinking=False if self.option("no-thinking") else None,
            max_tokens=_number(self.option("max-tokens"), "max-tokens", int),
            sampling=sampling,
            stops=tuple(self.option("stop") or ()),
            response_format=self._response_format(),
        )

    def _response_format(self) -> ResponseFormat:
        """--json-schema FILE / --json-object as the request's response format (the file read
        and checked now, before any model loads)."""
        path, whole = self.option("json-schema"), bool(self.option("json-object"))
        if path is not None and whole:
            raise ValidationError("--json-schema and --json-object exclude each other")
        if whole:
            return ResponseFormat("json_object")
        if path is None:
            return ResponseFormat()
        return ResponseFormat("json_schema", read_schema(path), Path(path).stem)

    def _prompt(self) -> str | None:
        """The one-shot prompt, or None for an interactive chat."""
        # text the terminal or a file could not decode (not UTF-8) goes to the model as U+FFFD
        typed = [
            *(self.argument("prompt") or []),
            *([self.option("prompt")] if self.option("prompt") else []),
        ]
        parts = [_readable(p) for p in typed]
        piped = not sys.stdin.isatty()
        if "-" in parts or (not parts and piped):
            if not piped:
                sys.stderr.write("(reading the prompt from the terminal; end it with Ctrl-D)\n")
            text = sys.stdin.buffer.read().decode("utf-8", "replace")
            parts = [text if p == "-" else p for p in parts] if "-" in parts else [text]
        if not parts:
            return None
        prompt = "\n\n".join(p for p in parts if p)
        if not prompt.strip():
            raise ValidationError("the prompt is empty")
        return prompt

    def execute_command(self, json_mode: bool) -> int:
        settings = self._settings()
        prompt = self._prompt()
        interactive = bool(self.option("interactive"))
        if (prompt is None or interactive) and (json_mode or not sys.stdout.isatty()):
            why = "-i/--interactive:" if prompt is not None else "no prompt: give one (or '-' for stdin);"
            raise ValidationError(f"{why} a chat needs a terminal")
        runnable = runnable_model(self.location(), self.argument("model"))
        from mlxk.generation.engine import load_engine

        engine = load_engine(runnable.path, runnable.model.name)
        system = self.option("system")
        raw = bool(self.option("no-chat-template")) or not engine.has_chat_template
        if raw and settings.thinking is not None:
            raise ValidationError("--no-thinking needs the model's chat template")
        from mlxk.cli.chat import Conversation, ReasoningView

        hide = bool(self.option("hide-reasoning") or self.option("no-reasoning"))
        view = ReasoningView.for_terminal(hide) if not json_mode else ReasoningView(None)
        conversation = Conversation(engine, system, raw, settings, view)
        if settings.response_format.type != "text":
            self._check_enforceable(engine, conversation.request_for(prompt or ""))
        if prompt is None or interactive:
            return conversation.interactive(first=prompt)
        request = conversation.request_for(prompt)
        if json_mode:
            answer = conversation.collect(request)
            reasoning = None if hide or not answer.reasoning else answer.reasoning
            data = run_data(
                runnable.model.name, prompt, answer.content, answer.finish_reason, answer.usage, reasoning
            )
            self.emit(True, data, "")
            return 0
        if self.option("no-stream"):  # the answer written whole once complete (reasoning as it comes)
            whole = io.StringIO()
            finish, usage = conversation.stream(request, whole)
            sys.stdout.write(whole.getvalue())
        else:
            finish, usage = conversation.stream(request, sys.stdout)
        if self.io.is_verbose():  # cleo's global --verbose / -v: load time, tokens/s, peak memory
            sys.stderr.write(render_stats(engine.load_seconds, usage))
        return 0 if finish != "cancelled" else EXIT_INTERRUPTED

    def _check_enforceable(self, engine: Any, request: GenerationRequest) -> None:
        """Compiles the answer's grammar now (it is cached for the answers), so that a schema the
        grammar library cannot enforce is an error before any output, named by its file."""
        try:
            engine.constraint(request, engine.prompt(request))
        except InvalidField as exc:
            path = self.option("json-schema")
            raise ValidationError(f"--json-schema {path}: {exc.message}" if path else exc.message) from None

    def handle(self) -> int:
        try:
            return super().handle()  # Ctrl-C: the `interrupted` error, exit 130 (MlxkCommand)
        except BrokenPipeError:
            # `mlxk run ... | head`: the reader is gone; that is not an error. Point stdout at
            # /dev/null so the interpreter's final flush does not complain either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0
