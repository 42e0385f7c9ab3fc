"""Starting the app under Granian: one worker process (the model lives in one process), settings
handed over through the environment (the worker imports the app factory afresh)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orjson

from mlxk.server.app import App, ServerSettings
from mlxk.server.logs import configure

SETTINGS_ENV = "MLXK_SERVE_SETTINGS"


def app_from_env() -> App:
    """Granian's factory target, called in the worker process."""
    raw: dict[str, Any] = orjson.loads(os.environ[SETTINGS_ENV])
    for key in ("cors_origins", "extra_hosts"):
        raw[key] = tuple(raw.get(key, ()))
    settings = ServerSettings(**raw)
    configure(settings.log_json)
    return App(settings)


def serve(settings: ServerSettings, *, log_level: str = "warning") -> None:
    """Run until SIGINT/SIGTERM; Granian then lets open responses end and stops the worker."""
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    os.environ[SETTINGS_ENV] = orjson.dumps(dataclasses.asdict(settings)).decode()
    server = Server(
        "mlxk.server.launch:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        factory=True,
        log_level=LogLevels(log_level),
        workers_kill_timeout=10,
    )
    server.serve()
