"""What ``mlxk serve`` was started with, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlxk.server.drain import DRAIN_TIMEOUT_S
from mlxk.server.limits import BODY_TIMEOUT_S, IDLE_TIMEOUT_S


@dataclass(frozen=True)
class ServerSettings:
    hub_root: str
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # preloaded, and the default for requests that name none
    single_model: bool = False  # refuse requests for any other model
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()  # "*": every origin
    max_body_bytes: int = 16 * 1024 * 1024
    max_queue: int = 32
    default_max_tokens: int = 2048
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)  # --allow-host
    log_json: bool = False
    embedding_model: str | None = None  # the default for /v1/embeddings (serve --model <an embedding model>)
    idle_timeout_s: float = IDLE_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    drain_timeout_s: float = DRAIN_TIMEOUT_S  # on SIGTERM: how long open requests may go on
    group_size: int = 1  # serve --distributed: the ranks the model is sharded over
    web_ui: bool = True  # the chat page at / (serve --no-ui turns it off)
    # --tool-format: (model name, output format) pairs that override the format read from the
    # model's chat template; the format "none" makes the whole output content
    output_formats: tuple[tuple[str, str], ...] = ()

    # --model-alias: (glob pattern, model name) pairs, tried in order, for the names clients send
    # that the server has no model of (Claude Code asks for claude-*)
    model_aliases: tuple[tuple[str, str], ...] = ()

    def output_format(self, model: str) -> str | None:
        """The format given for ``model`` at start, if any (None: read it from the template)."""
        return dict(self.output_formats).get(model)
