"""The cleo application: commands are loaded lazily, ``--json`` is global."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from cleo.application import Application
from cleo.commands.command import Command
from cleo.commands.completions_command import CompletionsCommand
from cleo.commands.help_command import HelpCommand as CleoHelpCommand
from cleo.commands.list_command import ListCommand as CleoListCommand
from cleo.exceptions import CleoCommandNotFoundError, CleoNoSuchOptionError
from cleo.io.inputs.argument import Argument
from cleo.io.inputs.argv_input import ArgvInput
from cleo.io.inputs.definition import Definition
from cleo.io.inputs.option import Option
from cleo.io.io import IO
from cleo.loaders.factory_command_loader import FactoryCommandLoader

from mlxk._version import __version__
from mlxk.cli.legacy import retired_usage, with_legacy_environment
from mlxk.errors import ValidationError
from mlxk.output.emit import write_error, write_json, write_text


def _list() -> Command:
    from mlxk.cli.list_command import ListCommand

    return ListCommand()


def _show() -> Command:
    from mlxk.cli.show_command import ShowCommand

    return ShowCommand()


def _health() -> Command:
    from mlxk.cli.health_command import HealthCommand

    return HealthCommand()


def _pull() -> Command:
    from mlxk.cli.pull_command import PullCommand

    return PullCommand()


def _rm() -> Command:
    from mlxk.cli.rm_command import RmCommand

    return RmCommand()


def _run() -> Command:
    from mlxk.cli.run_command import RunCommand

    return RunCommand()


def _serve() -> Command:
    from mlxk.cli.serve_command import ServeCommand

    return ServeCommand()


def _launch() -> Command:
    from mlxk.cli.launch_command import LaunchCommand

    return LaunchCommand()


def _embed() -> Command:
    from mlxk.cli.embed_command import EmbedCommand

    return EmbedCommand()


COMMANDS: dict[str, Callable[[], Command]] = {
    "list": _list,
    "show": _show,
    "health": _health,
    "pull": _pull,
    "rm": _rm,
    "run": _run,
    "embed": _embed,
    "serve": _serve,
    "server": _serve,  # ServeCommand's alias, the name MLX-Knife users type
    "launch": _launch,
}
LAUNCH_EXAMPLE = "mlxk launch -n 2 -- serve --model NAME"
# The JSON envelope's "command" for each command name a user can type.
JSON_COMMAND_NAMES = {name: "server" if name == "serve" else name for name in COMMANDS}


class CommandsCommand(CleoListCommand):
    """cleo's command overview, renamed: ``list`` lists models here."""

    name = "commands"
    description = "List mlxk's commands."


class HelpCommand(CleoHelpCommand):
    """``mlxk help`` and ``mlxk --help`` without a command name print the command list, as ``mlxk``
    alone does: whichever way a newcomer asks, the answer is what there is to run."""

    arguments = [Argument("command_name", required=False, description="The command name", default="commands")]

    def handle(self) -> int:
        from cleo.descriptors.text_descriptor import TextDescriptor

        target = self._command
        if target is None:
            assert self._application is not None
            target = self._application.find(self.argument("command_name"))
        if isinstance(target, CommandsCommand):
            self._command = None
            TextDescriptor().describe(self._io, self._application)
            return 0
        return super().handle()


class MlxkApplication(Application):
    def __init__(self, typed: list[str] | None = None) -> None:
        super().__init__("mlxk", __version__)
        self.typed = typed or []  # the command line after `mlxk`, for the messages of retired names
        self.set_display_name("mlxk")
        self._default_command = "commands"
        self.set_command_loader(FactoryCommandLoader(COMMANDS))

    @property
    def default_commands(self) -> list[Command]:
        return [HelpCommand(), CommandsCommand(), CompletionsCommand()]

    @property
    def _default_definition(self) -> Definition:
        definition = super()._default_definition
        definition.set_options(
            [
                Option(
                    "--help", "-h", flag=True, description="Display help for a command, or the command list."
                )
                if option.name == "help"
                else option
                for option in definition.options
            ]
        )
        definition.add_option(Option("--json", flag=True, description="Print one JSON envelope on stdout."))
        return definition

    def _run(self, io: IO) -> int:
        # --version mixed with other flags (the plain forms never get here): same output as the fast path
        if io.input.has_parameter_option(["--version", "-V"], True):
            from mlxk.core import NATIVE
            from mlxk.ops.version import version_info
            from mlxk.output.contract import version_data
            from mlxk.output.human import render_version

            info = version_info(NATIVE)
            if io.input.has_parameter_option("--json", True):
                write_json("version", version_data(info))
            elif not io.output.is_quiet():
                write_text(render_version(info))
            return 0
        return int(super()._run(io))

    def render_error(self, error: Exception, io: IO) -> None:
        """Usage errors (unknown option, missing argument): the envelope under --json, else a message."""
        command = self._running_command.name if self._running_command else None
        retired = None
        if isinstance(error, (CleoNoSuchOptionError, CleoCommandNotFoundError)):
            retired = retired_usage(command, self.typed)  # what MLX-Knife users typed: say what works now
        if command == "launch" and isinstance(error, CleoNoSuchOptionError):  # serve's options before the --
            retired = (
                f"{str(error).strip()}: the command every rank runs goes after --, e.g. {LAUNCH_EXAMPLE}"
            )
        if io.input.has_parameter_option("--json") and command in JSON_COMMAND_NAMES:
            write_json(JSON_COMMAND_NAMES[command], None, ValidationError(retired or str(error)))
            return
        write_error(retired or str(error).strip())
        if command and retired is None:
            sys.stderr.write(f"Usage: mlxk {command} --help\n")


def _stdin_file(args: list[str]) -> list[str]:
    """``embed … --file -`` (or ``-f -``) as ``--file=-``: cleo never takes a value that starts with
    '-' from the next word, so '-' for stdin would otherwise be refused as a missing value."""
    at = next((i for i, t in enumerate(args) if not t.startswith("-")), None)
    if at is None or args[at] != "embed":
        return args
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--":
            return out + args[i:]
        if args[i] in ("--file", "-f") and args[i + 1 : i + 2] == ["-"]:
            out.append("--file=-")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def run_app(args: list[str]) -> int:
    args = with_legacy_environment(args, os.environ)  # 2.0's MLXK2_* server variables, as options
    args = _stdin_file(args)
    app = MlxkApplication(args)
    app.auto_exits(False)
    return app.run(ArgvInput(["mlxk", *args]))
