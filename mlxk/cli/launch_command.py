"""``mlxk launch``: ``serve --distributed`` on every host of a group, through MLX's own launcher.

A thin layer over ``mlx.launch``: its host options pass through as they are, and the command after
``--`` becomes ``python -m mlxk serve --distributed ...`` on every rank. What it adds: the input
checked before anything starts (one clear error, the ``--json`` envelope), and an exit status that
says whether every rank ended well (``launcher.py``).
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from cleo.helpers import argument, option
from cleo.io.inputs.definition import Definition
from cleo.io.inputs.option import Option

from mlxk.cli.app import LAUNCH_EXAMPLE as EXAMPLE
from mlxk.cli.base import MlxkCommand, whole_number
from mlxk.errors import ExecutionError, ValidationError
from mlxk.output.emit import write_json

# what mlx.launch's --backend takes
LAUNCH_BACKENDS = ("ring", "jaccl", "jaccl-ring", "nccl", "mpi")
# the commands that run on a distributed group (serve and its MLX-Knife name)
GROUP_COMMANDS = ("serve", "server")


class LaunchCommand(MlxkCommand):
    name = "launch"
    description = "Start `serve --distributed` on every host of a group with mlx.launch (MLX's launcher)."
    json_command = "launch"
    arguments = [
        argument(
            "rank_command",
            "After --: the mlxk command every rank runs (serve and its options; --distributed is added).",
            optional=True,
            multiple=True,
        )
    ]
    options = [
        option(
            "hostfile",
            None,
            "mlx.launch's JSON hostfile: the hosts (ssh names, and IPs for the ring backend), one rank each.",
            flag=False,
        ),
        option(
            "hosts",
            None,
            "Comma-separated hosts instead of a hostfile (IP addresses for the ring backend; default 127.0.0.1).",
            flag=False,
        ),
        option(
            "repeat-hosts", "n", "Ranks on each host of --hosts (e.g. -n 2: two on this machine).", flag=False
        ),
        option(
            "backend",
            None,
            f"The distributed backend ({', '.join(LAUNCH_BACKENDS)}; default: mlx.launch's).",
            flag=False,
        ),
        option("starting-port", "p", "The ring backend's first port (one more per rank and IP).", flag=False),
        option("env", None, "KEY=VALUE set for every rank (repeatable).", flag=False, multiple=True),
        option(
            "python",
            None,
            "The Python with mlxk installed on the hosts (default: this one's path, the same on every host).",
            flag=False,
        ),
    ]

    def merge_application_definition(self, merge_args: bool = True) -> None:
        """As cleo merges the application's options into the command's, except that the global
        --no-interaction gives its -n to --repeat-hosts, mlx.launch's -n (this command never asks
        anything)."""
        if self._application is None:
            return
        merged = Definition()
        merged.add_options(self._definition.options)
        merged.add_options(
            [
                _without_shortcut(o) if o.name == "no-interaction" else o
                for o in self._application.definition.options
            ]
        )
        if merge_args:
            merged.set_arguments(self._application.definition.arguments)
            merged.add_arguments(self._definition.arguments)
        else:
            merged.set_arguments(self._definition.arguments)
        self._full_definition = merged

    def execute_command(self, json_mode: bool) -> int:
        from mlxk.cli.launcher import run_launcher

        command = rank_command(list(self.argument("rank_command") or []), json_mode, self.option("python"))
        arguments = [*self._launcher_options(), "--", *command]
        outcome = run_launcher(_launcher_script(), arguments)
        if outcome.launcher_error is not None and not outcome.failed_ranks:  # no rank ran: its error is ours
            error = ExecutionError(f"mlx.launch: {outcome.launcher_error}")
            if json_mode:
                write_json(self.json_command, None, error)
            return error.exit_code
        return outcome.exit_code

    def _launcher_options(self) -> list[str]:
        """mlx.launch's options for this command's, each checked first."""
        hostfile, hosts = self.option("hostfile"), self.option("hosts")
        repeat = self.option("repeat-hosts")
        options: list[str] = []
        if hostfile is not None:
            if hosts is not None or repeat is not None:
                raise ValidationError("--hostfile lists every rank: give it alone, without --hosts or -n")
            ranks = _ranks_in_hostfile(Path(hostfile))
            options += ["--hostfile", str(hostfile)]
        else:
            count = whole_number(repeat, "repeat-hosts", 1, 1024) if repeat is not None else 1
            names = str(hosts or "127.0.0.1").split(",")
            if not all(names):
                raise ValidationError(f"--hosts takes host names separated by commas, not {hosts!r}")
            ranks = len(names) * count
            options += ["--hosts", ",".join(names), "-n", str(count)]
        if ranks < 2:
            raise ValidationError(
                f"a distributed group needs 2 or more ranks, not {ranks}: give --hostfile, or --hosts "
                f"and -n (e.g. {EXAMPLE})"
            )
        backend = self.option("backend")
        if backend is not None:
            if backend not in LAUNCH_BACKENDS:
                raise ValidationError(f"--backend takes one of {', '.join(LAUNCH_BACKENDS)}, not {backend!r}")
            options += ["--backend", str(backend)]
        port = self.option("starting-port")
        if port is not None:
            options += ["--starting-port", str(whole_number(port, "starting-port", 1, 65535))]
        for pair in self.option("env") or ():
            key, sep, _value = str(pair).partition("=")
            if not sep or not key or not all(c.isalnum() or c == "_" for c in key):
                raise ValidationError(f"--env takes KEY=VALUE (a key of letters, digits and _), not {pair!r}")
            options += ["--env", str(pair)]
        return options


def rank_command(command: list[str], json_mode: bool, python: str | None) -> list[str]:
    """What every rank runs: ``PYTHON -m mlxk serve --distributed ...`` (with --json when
    ``mlxk launch`` has it, so that its whole output is envelopes)."""
    if not command:
        raise ValidationError(f"mlxk launch needs the command every rank runs after --, e.g. {EXAMPLE}")
    name, *rest = command
    if name not in GROUP_COMMANDS:
        raise ValidationError(
            f"mlxk launch starts serve on every rank (the command that runs on a distributed group), "
            f"not {name!r}: {EXAMPLE}"
        )
    added = [
        flag
        for flag, wanted in (("--distributed", True), ("--json", json_mode))
        if wanted and flag not in rest
    ]
    return [python or sys.executable, "-m", "mlxk", name, *added, *rest]


def _ranks_in_hostfile(path: Path) -> int:
    """How many ranks ``path`` lists, read as mlx.launch reads it (its rules, its messages)."""
    if not path.is_file():
        raise ValidationError(f"--hostfile {str(path)!r}: no such file")
    from mlx._distributed_utils.common import Hostfile  # mlx.launch's own reader

    reader: Any = Hostfile
    problem = None
    with warnings.catch_warnings():  # it leaves the file to the garbage collector to close
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return len(reader.from_file(str(path)).hosts)
        except ValueError as exc:
            problem = str(exc)  # raised below, once this error (and the open file it holds) is gone
    raise ValidationError(f"--hostfile: {problem}")


def _launcher_script() -> str:
    """The ``mlx.launch`` installed with mlx: beside this Python, else on the PATH."""
    beside = Path(sys.executable).parent / "mlx.launch"
    found = str(beside) if beside.is_file() else shutil.which("mlx.launch")
    if found is None:
        raise ExecutionError("mlx.launch (installed with mlx) is neither beside this Python nor on the PATH")
    return found


def _without_shortcut(o: Option) -> Option:
    return Option(o.name, None, flag=o.is_flag(), description=o.description)
