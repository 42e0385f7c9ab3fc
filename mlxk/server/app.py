"""The ASGI app: routing, the safety checks every request passes, and the OpenAI endpoints.

A request's ``model`` must be the exact name of a cached model that can run (never a path, a URL
or an uncached repo: the server neither reads arbitrary folders nor downloads). Generation goes
to the engine worker; the response streams as server-sent events or comes back whole.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from mlxk.cache.names import dirname_to_name, name_problem
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_models
from mlxk.errors import MlxkError
from mlxk.runner.engine import Engine, load_engine
from mlxk.runner.request import Chunk
from mlxk.server.asgi import (
    HTTPError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_bytes,
    send_events,
    send_json,
)
from mlxk.server.embeddings import EmbeddingWorker, EmbedJob, parse_request
from mlxk.server.metrics import Metrics
from mlxk.server.schemas import Reply, parse
from mlxk.server.worker import Busy, EngineWorker, Job, chunks

log = logging.getLogger("mlxk.server")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServerSettings:
    hub_root: str
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # preloaded, and the default for requests that name none
    single_model: bool = False  # refuse requests for any other model
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    max_queue: int = 32
    default_max_tokens: int = 2048
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)
    log_json: bool = False
    embedding_model: str | None = None  # the default for /v1/embeddings (serve --model <an embedding model>)


def _load_encoder(hub_root: str, name: str) -> Any:
    from mlxk.embedding.loader import load_embedder
    from mlxk.ops.embed import embedding_model

    return load_embedder(embedding_model(CacheLocation(hub_root, None), name).path)


def _load(hub_root: str, name: str) -> Engine:
    from mlxk.ops.run import runnable_model

    runnable = runnable_model(CacheLocation(hub_root, None), name)
    return load_engine(runnable.path)


class App:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.worker = EngineWorker(lambda name: _load(settings.hub_root, name), settings.max_queue)
        self.embedder = EmbeddingWorker(lambda name: _load_encoder(settings.hub_root, name))
        self.started = False

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    def start(self) -> None:
        if not self.started:
            self.worker.start()
            self.started = True
            if self.settings.model:  # preload on the worker thread; /health says 503 meanwhile
                self.worker.submit(Job(self.settings.model, None, asyncio.get_running_loop()))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.worker.stop()
                self.embedder.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        path = scope.get("path", "")
        try:
            self._check_host_and_origin(scope)
            cors = self._cors_headers(scope)
            if scope["method"] == "OPTIONS":
                status = 204
                await send_bytes(send, 204, b"", cors)
                return
            if path != "/health":
                self._check_api_key(scope)
            status = await self._route(scope, receive, send, path, cors)
        except HTTPError as error:
            status = error.status
            await send_json(send, error.status, error.body(), error.headers)
        except ConnectionResetError:
            status = 499  # the client went away before the response
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(path, status)
            fields = {
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "ms": round(seconds * 1000, 1),
            }
            log.info(
                "%s %s %s %.1f ms",
                scope.get("method"),
                path,
                status,
                seconds * 1000,
                extra={"fields": fields},
            )

    # --- safety --------------------------------------------------------------------------------

    def _check_host_and_origin(self, scope: Scope) -> None:
        host = (header(scope, b"host") or "").rsplit(":", 1)[0].strip("[]").lower()
        bound = self.settings.host
        if bound in LOOPBACK or bound == "localhost":
            allowed = {*LOOPBACK, *self.settings.extra_hosts}
            if host not in allowed:  # DNS rebinding: a foreign name resolving to our loopback port
                raise HTTPError(403, f"host {host!r} is not allowed", code="forbidden_host")
        origin = header(scope, b"origin")
        if origin is not None and origin not in self.settings.cors_origins:
            raise HTTPError(
                403, f"origin {origin!r} is not allowed (see --cors-origin)", code="forbidden_origin"
            )

    def _cors_headers(self, scope: Scope) -> list[tuple[str, str]]:
        origin = header(scope, b"origin")
        if origin is None or origin not in self.settings.cors_origins:
            return []
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-headers", "authorization, content-type"),
            ("access-control-allow-methods", "GET, POST, OPTIONS"),
            ("vary", "origin"),
        ]

    def _check_api_key(self, scope: Scope) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = header(scope, b"authorization") or ""
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise HTTPError(
                401, "a valid API key is needed (Authorization: Bearer ...)", code="invalid_api_key"
            )

    # --- routes --------------------------------------------------------------------------------

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, path: str, cors: list[tuple[str, str]]
    ) -> int:
        method = scope["method"]
        routes = {
            "/health": ("GET", self._health),
            "/v1/models": ("GET", self._models),
            "/metrics": ("GET", self._metrics),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
        }
        if path not in routes:
            raise HTTPError(404, f"no route {path}", code="not_found")
        wanted, handler = routes[path]
        if method != wanted:
            raise HTTPError(
                405, f"{path} takes {wanted}", code="method_not_allowed", headers=[("allow", wanted)]
            )
        return int(await handler(scope, receive, send, cors))

    async def _health(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        loading = self.worker.loading
        status = 503 if loading else 200
        body = {
            "status": "loading" if loading else "ok",
            "model": loading or self.worker.model,
            "queue": self.worker.queue_depth,
        }
        await send_json(send, status, body, cors)
        return status

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        text = self.metrics.render(self.worker.queue_depth)
        await send_bytes(send, 200, text.encode(), [("content-type", "text/plain; version=0.0.4"), *cors])
        return 200

    async def _models(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        models = await asyncio.to_thread(scan_models, CacheLocation(self.settings.hub_root, None))
        data = []
        for m in models:
            embedding = m.model_type == "embedding"
            if not m.healthy or not (m.runtime_compatible or embedding):
                continue
            if self.settings.single_model and m.name not in (
                self.settings.model,
                self.settings.embedding_model,
            ):
                continue
            config = m.config or {}
            data.append({
                "id": m.name, "object": "model", "created": m.last_modified_ns // 1_000_000_000, "owned_by": m.name.split("/")[0],
                "context_length": config.get("max_position_embeddings"), "capabilities": list(m.capabilities),
            })  # fmt: skip
        await send_json(send, 200, {"object": "list", "data": data}, cors)
        return 200

    async def _embeddings(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]
    ) -> int:
        raw = await read_body(receive, scope, self.settings.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        request = parse_request(body)
        model = self._embedding_model_for(body.get("model"))
        job = EmbedJob(model, request, asyncio.get_running_loop())
        self.embedder.submit(job)
        try:
            reply = await job.future  # the response body, checked and shaped on the embedding thread
        except MlxkError as error:
            status = error.http_status if error.http_status < 500 else 500
            raise HTTPError(status, error.message, param="model", code=error.error_type) from None
        await send_json(send, 200, reply, cors)
        return 200

    def _embedding_model_for(self, asked: Any) -> str:
        default = self.settings.embedding_model
        if asked is None or asked == "" or asked == default:
            if default is None:
                raise HTTPError(400, "name an embedding model: the server has no default one", param="model")
            return default
        if not isinstance(asked, str):
            raise HTTPError(400, "'model' must be a string", param="model")
        if "://" in asked or asked.startswith(("/", ".", "~")) or name_problem(asked) is not None:
            raise HTTPError(
                404, f"model {asked!r} is not a cached model name", param="model", code="model_not_found"
            )
        if self.settings.single_model:
            raise HTTPError(
                404,
                f"this server serves only {self.settings.model or default}",
                param="model",
                code="model_not_found",
            )
        if asked not in {dirname_to_name(d) for d in repo_dirnames(self.settings.hub_root)}:
            raise HTTPError(
                404, f"model {asked!r} is not in the cache", param="model", code="model_not_found"
            )
        return asked

    async def _chat(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        return await self._generate(scope, receive, send, cors, chat=True)

    async def _completions(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]
    ) -> int:
        return await self._generate(scope, receive, send, cors, chat=False)

    def _model_for(self, asked: str | None) -> str:
        default = self.settings.model or self.worker.model
        if asked is None or asked == "" or asked == default:
            if default is None:
                raise HTTPError(400, "name a model: the server was started without --model", param="model")
            return default
        if "://" in asked or asked.startswith(("/", ".", "~")) or name_problem(asked) is not None:
            raise HTTPError(
                404, f"model {asked!r} is not a cached model name", param="model", code="model_not_found"
            )
        if self.settings.single_model:
            raise HTTPError(
                404, f"this server serves only {self.settings.model}", param="model", code="model_not_found"
            )
        names = {dirname_to_name(d) for d in repo_dirnames(self.settings.hub_root)}
        if asked not in names:  # exact names only: a server never guesses, loads from paths or downloads
            raise HTTPError(
                404, f"model {asked!r} is not in the cache", param="model", code="model_not_found"
            )
        return asked

    async def _generate(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]], *, chat: bool
    ) -> int:
        raw = await read_body(receive, scope, self.settings.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        parsed = parse(body, chat=chat, default_max_tokens=self.settings.default_max_tokens)
        if parsed.unknown:
            log.info("ignored unknown request fields: %s", ", ".join(parsed.unknown))
        model = self._model_for(parsed.model)
        job = Job(model, parsed.request, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except Busy:
            raise HTTPError(
                429, "the server is busy; retry shortly", code="queue_full", headers=[("retry-after", "1")]
            ) from None
        stream = chunks(job)
        first = await self._first(stream, job)
        reply = Reply(model, chat)
        self.metrics.first_token(first.usage.prompt_seconds if first.usage else None)
        if not parsed.stream:
            texts = [first.text]
            last = first
            async for chunk in _rest(stream, first):
                texts.append(chunk.text)
                last = chunk
            assert last.usage is not None
            self.metrics.generated(last.usage)
            await send_json(
                send, 200, reply.complete("".join(texts), last.finish_reason or "length", last.usage), cors
            )
            return 200
        events = self._events(reply, first, stream, parsed.include_usage)
        await send_events(send, receive, events, cors)
        return 200

    async def _first(self, stream: AsyncIterator[Chunk], job: Job) -> Chunk:
        """The first chunk, or the error that came instead (a prompt too long for the context...)."""
        try:
            return await stream.__anext__()
        except MlxkError as error:
            raise HTTPError(
                error.http_status if error.http_status < 500 else 500, error.message, code=error.error_type
            ) from None
        except StopAsyncIteration:
            raise HTTPError(500, "the generation ended without output") from None

    async def _events(
        self, reply: Reply, first: Chunk, stream: AsyncIterator[Chunk], include_usage: bool
    ) -> AsyncIterator[bytes]:
        yield _event(reply.delta(None, role=True))
        last = first
        for chunk in [first]:
            if chunk.text:
                yield _event(reply.delta(chunk.text))
        if first.finish_reason is None:
            async for chunk in stream:
                last = chunk
                if chunk.text:
                    yield _event(reply.delta(chunk.text))
        yield _event(reply.delta(None, last.finish_reason or "length"))
        if last.usage is not None:
            self.metrics.generated(last.usage)
            if include_usage:
                yield _event(reply.usage_chunk(last.usage))
        yield b"data: [DONE]\n\n"


async def _rest(stream: AsyncIterator[Chunk], first: Chunk) -> AsyncIterator[Chunk]:
    if first.finish_reason is not None:
        return
    async for chunk in stream:
        yield chunk


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def create_app(settings: ServerSettings) -> App:
    return App(settings)
