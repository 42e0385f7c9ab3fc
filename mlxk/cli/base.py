"""What every mlxk command shares: ``--json``, the cache location, one error translation."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import traceback
from typing import Any, ClassVar

from cleo.commands.command import Command
from cleo.helpers import option

from mlxk.cache.root import hub_cache_root, mlxk_cache_dir
from mlxk.cache.scan import CacheLocation
from mlxk.errors import InternalError, Interrupted, MlxkError, ValidationError
from mlxk.output.emit import color_enabled, write_error, write_json, write_text
from mlxk.output.escape import escape_controls
from mlxk.output.human import Style

# Short cache commands allocate many small objects and free none of them early: cyclic garbage
# collection only costs them time (about 20% of a large list). Long-lived commands (serve, the
# interactive chat of run, embed over a long input) keep it, or their reference cycles pile up.
GC_FREE_COMMANDS = frozenset({"list", "show", "health", "rm"})
# 128 + SIGINT: what a shell reports for a command that Ctrl-C stopped
EXIT_INTERRUPTED = 130

NO_MEMO = option("no-memo", None, "Ignore and do not update the verification memo.", flag=True)


class MlxkCommand(Command):
    """A command whose ``run`` returns (data for JSON, text for people) or raises ``MlxkError``."""

    json_command: ClassVar[str]  # the envelope's "command"

    def handle(self) -> int:
        json_mode = bool(self.option("json"))
        if self.name in GC_FREE_COMMANDS:
            gc.disable()
        try:
            return self.execute_command(json_mode)
        except MlxkError as known:
            self.report_error(known, json_mode)
            return known.exit_code
        except KeyboardInterrupt:
            # every command answers Ctrl-C alike: what it printed so far is flushed, then the
            # `interrupted` error (its envelope under --json, where a script looks), exit 130
            with contextlib.suppress(OSError):  # the reader of a pipe may be gone too
                sys.stdout.flush()
            self.report_error(Interrupted("interrupted"), json_mode)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            raise
        except Exception as exc:
            if os.environ.get("MLXK_DEBUG") == "1":
                traceback.print_exc()
            bug = InternalError(f"{type(exc).__name__}: {exc}")
            self.report_error(bug, json_mode)
            return bug.exit_code

    def execute_command(self, json_mode: bool) -> int:
        raise NotImplementedError

    def report_error(self, error: MlxkError, json_mode: bool) -> None:
        if json_mode:
            write_json(self.json_command, error.data, error)
        else:
            extra = error.extra.get("matches") or error.extra.get("available_hashes")
            message = escape_controls(error.message)  # names inside may hold line feeds: one line
            if extra:
                message += f"\n  candidates: {', '.join(escape_controls(name) for name in extra)}"
            write_error(message)

    def emit(self, json_mode: bool, data: Any, text: str) -> None:
        if json_mode:
            write_json(self.json_command, data)
        elif not self.io.output.is_quiet():  # -q: only the exit code speaks (e.g. health --strict -q)
            write_text(text)

    def can_ask(self, json_mode: bool) -> bool:
        """Only a person at a terminal is asked; scripts and --json never wait for an answer."""
        return not json_mode and sys.stdin.isatty() and self.io.is_interactive()

    @staticmethod
    def ask_yes_no(question: str, *, default: bool) -> bool:
        """A y/n question on stderr (stdout stays the command's output), answered on stdin."""
        sys.stderr.write(f"{question} [{'Y/n' if default else 'y/N'}] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if not answer:  # end of input: nobody is there to say yes
            sys.stderr.write("\n")
            return False
        answer = answer.strip().lower()
        return default if not answer else answer in ("y", "yes")

    def location(self) -> CacheLocation:
        use_memo = not (self.io.input.has_option("no-memo") and self.option("no-memo"))
        return CacheLocation(hub_cache_root(), mlxk_cache_dir() if use_memo else None)

    @staticmethod
    def style() -> Style:
        return Style(color_enabled())


def whole_number(value: object, name: str, low: int, high: int) -> int:
    """The value of option ``--name`` as a whole number from ``low`` to ``high`` (else a clear error)."""
    text = str(value)
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValidationError(f"--{name} takes a whole number from {low} to {high}, not {text!r}")
    return int(text)
