"""Running MLX's own launcher (``mlx.launch``) for ``mlxk launch``, as a child that can be stopped
and whose outcome is known.

``mlx.launch`` alone has three habits that this module works around, without changing what it
does for the ranks:

- it exits 0 even when a rank failed (it only logs "Node with rank N exited with code C"): its
  stderr passes through here, and those lines set the exit status;
- a stop signal sent to it alone ends it at once and leaves the ranks running: here it runs in a
  process group of its own, with the ranks it starts on this machine (and the ``ssh`` clients of
  remote ones), and a stop signal to ``mlxk launch`` goes to that whole group: the ranks drain as
  on Ctrl-C, while ``mlx.launch`` itself (started through ``python -m mlxk.cli.launcher``, which
  makes it outlast the signal) stays to pass on their last output;
- its loops that copy our stdin to the ranks never wait: the thread of each rank waits until the
  rank can take input, which a pipe always can, and the main thread reads a stdin at its end
  (``< /dev/null``, a service manager) again at once; together they keep most of a core busy for
  as long as the service runs. ``mlxk launch`` sends the ranks no input: here mlx.launch's stdin
  is a pipe that stays open, and its threads wait only for the ranks' output.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import runpy
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

# mlx.launch's report of a rank's end, as it writes it (with colour codes around it)
RANK_END = re.compile(rb"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")
LAUNCHER_ERROR = re.compile(rb"mlx\.launch: error: (.*)")
# a terminal's hang-up ends the ranks as it would without mlxk launch between them and the terminal
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Outcome:
    """What the launcher's run came to: the ranks that failed, and its own failure if any."""

    status: int  # mlx.launch's own exit status
    failed_ranks: dict[int, str] = field(default_factory=dict)  # rank -> "exited with code C" / "was killed"
    launcher_error: str | None = None  # mlx.launch's own complaint (its arguments, the hostfile)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_ranks or self.status != 0 else 0


def run_launcher(script: str, arguments: list[str]) -> Outcome:
    """Run ``mlx.launch`` (the script at ``script``) with ``arguments`` until it exits, its stderr
    copied to ours; SIGINT, SIGTERM and SIGHUP received meanwhile go to its process group."""
    child = subprocess.Popen(
        [sys.executable, "-m", "mlxk.cli.launcher", script, *arguments],
        stdin=subprocess.PIPE,  # held open, never written: the ranks read nothing from it
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group (and no terminal: stops come through here)
    )
    assert child.stderr is not None

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # the ranks drain (a second signal: they stop at once)
            os.killpg(child.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    outcome = Outcome(0)
    pending = b""
    try:
        while chunk := os.read(child.stderr.fileno(), 65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                _note(line, outcome)
        _note(pending, outcome)
        outcome.status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.stdin is not None:
            child.stdin.close()
        child.stderr.close()
    return outcome


def _note(line: bytes, outcome: Outcome) -> None:
    ended = RANK_END.search(line)
    if ended is not None:
        code = ended.group(2)
        if code is None or int(code) != 0:
            what = f"exited with code {int(code)}" if code is not None else "was killed"
            outcome.failed_ranks[int(ended.group(1))] = what
        return
    error = LAUNCHER_ERROR.search(line)
    if error is not None:
        outcome.launcher_error = error.group(1).decode(errors="replace").strip()


def _launcher_main(script: str, arguments: list[str]) -> None:
    """In the child: ``mlx.launch`` itself, made to outlast the stop signals that its process group
    gets (handlers, not "ignore": the ranks it starts get the usual dispositions back at exec)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: None)
    _wait_only_for_output()
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


def _wait_only_for_output() -> None:
    """mlx.launch's threads wait with ``select`` for a rank's output or its readiness for input;
    with no input ever to send, they wait for the output alone (else each returns at once, always).
    A later mlx that moved this code keeps its own waiting."""
    try:
        module = importlib.import_module("mlx._distributed_utils.launch")
    except ImportError:
        return
    if getattr(module, "select", None) is not select.select:
        return

    def select_readers(readers: Any, writers: Any, errors: Any, timeout: float | None = None) -> Any:
        readable, _writable, failed = select.select(readers, [], errors, timeout)
        return readable, [], failed

    module.select = select_readers  # type: ignore[attr-defined]


if __name__ == "__main__":
    _launcher_main(sys.argv[1], sys.argv[2:])
