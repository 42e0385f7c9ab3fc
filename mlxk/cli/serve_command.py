from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from cleo.helpers import option

from mlxk.cli.base import MlxkCommand, whole_number
from mlxk.errors import ValidationError
from mlxk.generation.request import BOUNDS
from mlxk.server.app import ServerSettings
from mlxk.server.drain import DRAIN_TIMEOUT_S
from mlxk.server.hosts import LOOPBACK, allow_host_problem
from mlxk.server.limits import BODY_TIMEOUT_S, IDLE_TIMEOUT_S

if TYPE_CHECKING:
    from mlxk.generation.lockstep import Group


class ServeCommand(MlxkCommand):
    name = "serve"
    description = "Serve cached models over an OpenAI-compatible HTTP API (Granian)."
    aliases = ["server"]  # the name MLX-Knife users type
    json_command = "server"
    options = [
        option("model", "m", "Load this model at start and use it when a request names none.", flag=False),
        option(
            "host",
            None,
            "Address to listen on (default 127.0.0.1; anything else is reachable from outside).",
            flag=False,
            default="127.0.0.1",
        ),
        option(
            "port",
            "p",
            "Port to listen on (0: any free port, named in the start-up message).",
            flag=False,
            default="8000",
        ),
        option("single-model", None, "Refuse requests for any model but --model.", flag=True),
        option(
            "api-key",
            None,
            "Require 'Authorization: Bearer KEY' (or 'x-api-key: KEY') on every route but /health "
            "(or MLXK_API_KEY).",
            flag=False,
        ),
        option(
            "cors-origin",
            None,
            "Allow browser requests from this origin (repeatable; '*' allows every origin).",
            flag=False,
            multiple=True,
        ),
        option(
            "model-alias",
            None,
            "PATTERN=MODEL: requests for a model name matching the glob PATTERN get MODEL, e.g. "
            "'claude-*=mlx-community/Qwen3-8B-4bit' (repeatable; the first match wins).",
            flag=False,
            multiple=True,
        ),
        option(
            "allow-host",
            None,
            "Also answer requests whose Host is this name, e.g. a tunnel or reverse proxy in front of a "
            "loopback server (repeatable; other names are refused against DNS rebinding).",
            flag=False,
            multiple=True,
        ),
        option(
            "reuse-port",
            None,
            "Share the port with other servers started with --reuse-port (the kernel splits connections).",
            flag=True,
        ),
        option(
            "max-queue",
            None,
            "Requests that may wait for the engine before new ones get 429.",
            flag=False,
            default="32",
        ),
        option(
            "max-body-bytes",
            None,
            "Largest request body accepted.",
            flag=False,
            default=str(16 * 1024 * 1024),
        ),
        option(
            "idle-timeout",
            None,
            "Seconds an idle keep-alive connection, or unfinished request headers, may take before it is closed.",
            flag=False,
            default=str(IDLE_TIMEOUT_S),
        ),
        option(
            "body-timeout",
            None,
            "Seconds a request body may take to arrive (408 after that).",
            flag=False,
            default=str(BODY_TIMEOUT_S),
        ),
        option(
            "drain-timeout",
            None,
            "On SIGTERM or SIGINT: seconds open requests may take to finish while new ones get 503 "
            "(then they end with a proper last chunk; a second signal ends them at once).",
            flag=False,
            default=str(int(DRAIN_TIMEOUT_S)),
        ),
        option(
            "max-tokens",
            None,
            "Tokens a request may generate when it sets no max_tokens.",
            flag=False,
            default=str(ServerSettings.default_max_tokens),
        ),
        option("no-ui", None, "Do not serve the web chat page at /.", flag=True),
        option(
            "distributed",
            None,
            "Shard --model over the ranks of an mx.distributed group (start every rank with mlx.launch); "
            "rank 0 serves HTTP, the others follow its batch steps.",
            flag=True,
        ),
        option(
            "backend",
            None,
            "With --distributed: the mx.distributed backend (any, ring, jaccl, nccl, mpi).",
            flag=False,
            default="any",
        ),
        option(
            "group-timeout",
            None,
            "With --distributed: seconds one batch step may take before the group counts as hung and "
            "the service ends (raise it for very long prompts on large models).",
            flag=False,
            default="60",
        ),
        option(
            "tool-format",
            None,
            "MODEL=FORMAT: read MODEL's tool calls and reasoning in FORMAT instead of the one its chat "
            "template shows (repeatable; 'none': all output is content; formats: docs/tools.md).",
            flag=False,
            multiple=True,
        ),
        option("log-json", None, "Request logs on stderr as JSON lines.", flag=True),
        option(
            "log-level",
            None,
            "Granian's log level (debug, info, warning, error).",
            flag=False,
            default="warning",
        ),
    ]

    def execute_command(self, json_mode: bool) -> int:
        port = whole_number(self.option("port"), "port", 0, 65535)
        host = str(self.option("host"))
        model = self.option("model")
        if self.option("single-model") and not model:
            raise ValidationError("--single-model needs --model")
        group = None
        if self.option("distributed"):
            group, model = self._join_group(model)
        embedding_model = None
        if model and group is None:  # refused now, not at the first request
            from mlxk.cache.pick import pick_model
            from mlxk.cache.runnable import runnable_model
            from mlxk.embedding.embeddable import embedding_model as find_embedding_model
            from mlxk.errors import ModelIncompatible

            try:
                model = runnable_model(self.location(), model).model.name
            except ModelIncompatible:
                # only an embedding model is served another way; any other keeps why it cannot run
                if pick_model(self.location(), model, healthy=True).model_type != "embedding":
                    raise
                embedding_model = find_embedding_model(self.location(), model).model.name  # or its error
                model = None
        cors_origins = tuple(self.option("cors-origin") or ())
        allowed_hosts = tuple(self.option("allow-host") or ())
        for name in allowed_hosts:
            problem = allow_host_problem(name)
            if problem is not None:
                raise ValidationError(f"--allow-host takes {problem}, not {name!r}")
        aliases = tuple(_alias(text) for text in self.option("model-alias") or ())
        idle_timeout = whole_number(self.option("idle-timeout"), "idle-timeout", 1, 3600)
        body_timeout = whole_number(self.option("body-timeout"), "body-timeout", 1, 3600)
        drain_timeout = whole_number(self.option("drain-timeout"), "drain-timeout", 0, 3600)
        max_queue = whole_number(self.option("max-queue"), "max-queue", 1, 100_000)
        max_body_bytes = whole_number(self.option("max-body-bytes"), "max-body-bytes", 1024, 2**31)
        tokens = BOUNDS["max_tokens"]  # the bounds of a request's own max_tokens
        default_max_tokens = whole_number(
            self.option("max-tokens"), "max-tokens", int(tokens.low), int(tokens.high)
        )
        output_formats = self._output_formats()
        if group is not None and group.rank != 0:
            from mlxk.cli.serve_group import follow_rank_0

            assert model is not None
            follow_rank_0(group, self.location(), model, dict(output_formats).get(model))
            return 0
        from mlxk.server.listener import bind_listener

        listener = bind_listener(host, port, reuse_port=bool(self.option("reuse-port")))  # or a clear error
        port = int(listener.getsockname()[1])  # the one the system chose for --port 0
        settings = ServerSettings(
            hub_root=self.location().hub_root,
            host=host,
            port=port,
            model=model,
            single_model=bool(self.option("single-model")) or group is not None,
            api_key=self.option("api-key") or os.environ.get("MLXK_API_KEY") or None,
            cors_origins=cors_origins,
            max_queue=max_queue,
            max_body_bytes=max_body_bytes,
            default_max_tokens=default_max_tokens,
            extra_hosts=allowed_hosts,
            log_json=bool(self.option("log-json")),
            embedding_model=embedding_model,
            idle_timeout_s=idle_timeout,
            body_timeout_s=body_timeout,
            drain_timeout_s=drain_timeout,
            web_ui=not self.option("no-ui"),
            output_formats=output_formats,
            model_aliases=aliases,
            group_size=group.size if group is not None else 1,
        )
        if host not in LOOPBACK:
            sys.stderr.write(f"Warning: listening on {host}: the server is reachable from other machines\n")
        if "*" in cors_origins:
            sys.stderr.write(
                "Warning: --cors-origin '*': every web page open in a browser here can use this server"
                + ("\n" if settings.api_key else " (no --api-key protects it)\n")
            )
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.emit(
            json_mode,
            {"url": url, "host": host, "port": port, "model": model or embedding_model, "pid": os.getpid()},
            f"mlxk serving on {url}" + ("\n" if self.option("no-ui") else f" (web chat: {url}/)\n"),
        )
        from mlxk.server.launch import serve

        serve(settings, listener, log_level=str(self.option("log-level")), group=group)  # ends the process

    def _join_group(self, model: str | None) -> tuple[Group, str]:
        from mlxk.generation.cluster import BACKENDS

        backend = str(self.option("backend"))
        if backend not in ("any", *BACKENDS):
            raise ValidationError(f"--backend takes one of any, {', '.join(BACKENDS)}, not {backend!r}")
        if not model:
            raise ValidationError("--distributed needs --model (the model to shard over the ranks)")
        from mlxk.cli.serve_group import join_group

        stall_s = whole_number(self.option("group-timeout"), "group-timeout", 1, 86_400)
        return join_group(self.location(), model, backend, stall_s)

    def _output_formats(self) -> tuple[tuple[str, str], ...]:
        """--tool-format's pairs, each model resolved to its cached name now (an unknown model or
        format is refused at start, not at the first request)."""
        from mlxk.cache.runnable import runnable_model
        from mlxk.generation import list_formats
        from mlxk.generation.engine import NO_FORMAT

        known = [*list_formats(), NO_FORMAT]
        pairs: dict[str, str] = {}
        for given in self.option("tool-format") or ():
            model, sep, fmt = str(given).rpartition("=")
            if not sep or not model or fmt not in known:
                raise ValidationError(
                    f"--tool-format takes MODEL=FORMAT with FORMAT one of {', '.join(known)}, not {given!r}"
                )
            pairs[runnable_model(self.location(), model).model.name] = fmt
        return tuple(pairs.items())


def _alias(text: str) -> tuple[str, str]:
    """``PATTERN=MODEL`` of --model-alias (the model is a name, checked when a request uses it)."""
    from mlxk.cache.names import name_problem

    pattern, sep, model = text.partition("=")
    if not sep or not pattern or not model:
        raise ValidationError(f"--model-alias takes PATTERN=MODEL, not {text!r}")
    problem = name_problem(model)
    if problem is not None:
        raise ValidationError(f"--model-alias {text!r}: {model!r} is not a model name ({problem})")
    return pattern, model
