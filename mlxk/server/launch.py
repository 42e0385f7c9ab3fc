"""Running the app under Granian, in this process.

Granian's usual server forks a worker process that serves while the parent only watches it: a
``kill -9`` of ``mlxk serve`` left the worker serving on its own, and the settings (the API key
among them) had to travel to it through the environment. Granian's embedded server runs the same
Rust HTTP core inside our own event loop instead, so ``mlxk serve`` is one process: it cannot be
orphaned, the settings are plain values in memory, and the signals are ours to handle.

On SIGINT or SIGTERM the server drains (``drain.py``): new requests get 503 while the open ones
run to their end, for up to ``drain_timeout_s``; then the app ends what is still open with a proper
last chunk, the server stops accepting and closes idle connections, and the process exits once the
responses are out. A stop that takes longer than ``STOP_GRACE_S`` after that ends the process at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from mlxk.server.app import App, ServerSettings
from mlxk.server.drain import Drain
from mlxk.server.limits import connection_limit, raise_descriptor_limit
from mlxk.server.listener import BACKLOG
from mlxk.server.logs import configure

if TYPE_CHECKING:
    from mlxk.generation.lockstep import Group

STOP_GRACE_S = 20.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXPERIMENTAL_NOTICE = "Embedded server is experimental"


def serve(
    settings: ServerSettings,
    listener: socket.socket,
    *,
    log_level: str = "warning",
    group: Group | None = None,
) -> NoReturn:
    """Serve on ``listener`` (see ``listener.bind_listener``) until SIGINT or SIGTERM, then end
    the process (exit status 0; 1 when ``group``, the distributed group whose rank 0 this is,
    lost a rank)."""
    configure(settings.log_json)
    app = App(settings, group)
    asyncio.run(_serve(app, listener, settings, log_level))
    _leave_without_finalizing(1 if group is not None and group.lost is not None else 0)


def _leave_without_finalizing(status: int) -> NoReturn:
    """Granian's native threads may still be on their way out of a call into Python when the
    server has stopped; the interpreter's finalization would end such a thread mid-call, and the
    process would abort ("panic in a function that cannot unwind"). Everything of ours is closed
    and flushed by now, so the process leaves without finalizing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


async def _serve(app: App, listener: socket.socket, settings: ServerSettings, log_level: str) -> None:
    server = _server(app, listener, settings, log_level)
    drain = Drain(
        settings.drain_timeout_s,
        begin=app.drain,
        open_work=app.open_work,
        end=lambda: _stop(app, server),
        exit_now=_exit_now,
    )
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, drain.signal)
    if app.group is not None:

        def lost(why: str) -> None:  # from the engine or watchdog thread: nothing can run any more
            loop.call_soon_threadsafe(_end_lost, app, server, why)

        app.group.on_lost = lost
    try:
        await server.serve()
    finally:
        await asyncio.to_thread(app.close)  # the engine threads, if the lifespan did not stop them
        _ignore_stop_signals(loop)


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """The server has stopped and the process is on its way out with its status. Closing the loop
    would give SIGTERM back its default action, and a SIGTERM then (mlx.launch sends one to every
    rank as soon as one rank fails) would end the process as killed instead of with that status.
    A process that hangs from here on is still ended by ``STOP_GRACE_S`` or by SIGKILL."""
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def _server(app: App, listener: socket.socket, settings: ServerSettings, log_level: str) -> Any:
    from granian._granian import SocketHolder as Holder
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    limit = connection_limit(_settled_descriptor_limit())
    holder: Any = Holder  # its stub declares no arguments; (fd, uds[, backlog]) is what it takes

    class OnOurSocket(Server):
        def _init_shared_socket(self) -> None:
            # Granian would bind a socket of its own with SO_REUSEPORT (see listener.py); the
            # holder takes the descriptor over (its listener closes it when the server stops)
            if sys.platform.startswith(("linux", "freebsd")):
                self._shd = holder(listener.detach(), False, BACKLOG)
            else:  # pragma: no cover - Granian's holder takes no backlog on other systems
                self._shd = holder(listener.detach(), False)
            self._ssp = None

    server = OnOurSocket(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,  # what OpenAI clients speak; no cleartext HTTP/2 to bound as well
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.idle_timeout_s * 1000)),
        websockets=False,
        backlog=BACKLOG,
        backpressure=limit,  # connections served at once; more wait in the kernel's queue
        log_level=LogLevels(log_level),
        log_dictconfig=_granian_logs_to_stderr(),
    )
    logging.getLogger("_granian").addFilter(_drop_experimental_notice)
    return server


def _settled_descriptor_limit() -> int:
    """The soft limit on open files for the server's life. mlx-lm sets its own limits (2,048 soft,
    4,096 hard) when its utils are imported, as the first model load would do: importing them now,
    before raising the limit and deriving the connection limit from it, keeps the two in step."""
    import resource

    hard_before = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    import mlx_lm.utils  # noqa: F401

    return raise_descriptor_limit(hard_before=hard_before)


def _granian_logs_to_stderr() -> dict[str, Any]:
    """Granian logs to stdout by default; stdout is the command's output (the --json envelope)."""
    stream = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "handlers": {
            "console": {"formatter": "generic", **stream},
            "access": {"formatter": "access", **stream},
        }
    }


def _drop_experimental_notice(record: logging.LogRecord) -> bool:
    # the embedded server is our deliberate choice (see the module docstring), not news to a user
    return not str(record.msg).startswith(EXPERIMENTAL_NOTICE)


def _end_lost(app: App, server: Any, why: str) -> None:
    """A rank of the group is lost: open generations end with that error, new requests get 503,
    the server stops (the exit status is 1)."""
    from mlxk.generation.lockstep import GroupLost

    app.generations.fail_open(GroupLost(why))
    _stop(app, server)


def _stop(app: App, server: Any) -> None:
    """The drain is over: open generations end at their next step, the server stops."""
    app.end_open()
    server.stop()
    timer = threading.Timer(STOP_GRACE_S, _exit_now, args=(f"not stopped after {STOP_GRACE_S:.0f} s",))
    timer.daemon = True
    timer.start()


def _exit_now(why: str) -> None:
    sys.stderr.write(f"mlxk serve: {why}\n")
    sys.stderr.flush()
    os._exit(1)
