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
from mlxk.errors import MlxkError, PromptTooLong
from mlxk.generation.chunks import Chunk, Usage, merge
from mlxk.generation.engine import Engine, load_engine
from mlxk.server import routes
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
    shutting_down,
)
from mlxk.server.cors import CorsPolicy
from mlxk.server.disconnect import ClientGone, DisconnectWatch
from mlxk.server.embeddings import EmbeddingWorker, EmbedJob, parse_inputs, response_body
from mlxk.server.hosts import HostPolicy
from mlxk.server.limits import BODY_TIMEOUT_S, IDLE_TIMEOUT_S
from mlxk.server.metrics import Metrics
from mlxk.server.schemas import Parsed, Reply, parse, total_usage
from mlxk.server.ui import WebUI
from mlxk.server.worker import Busy, EngineWorker, Job, chunks

log = logging.getLogger("mlxk.server")
CLIENT_GONE = 499  # nginx's status for a client that closed the connection before the answer


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
    web_ui: bool = True  # the chat page at / (serve --no-ui turns it off)


def _load_encoder(hub_root: str, name: str) -> Any:
    from mlxk.ops.embed import embedding_model
    from mlxk.runner.encoder import load_encoder

    return load_encoder(embedding_model(CacheLocation(hub_root, None), name).path)


def _load(hub_root: str, name: str) -> Engine:
    from mlxk.ops.run import runnable_model

    runnable = runnable_model(CacheLocation(hub_root, None), name)
    return load_engine(runnable.path)


def _check_runnable(hub_root: str, name: str) -> None:
    from mlxk.ops.run import runnable_model

    runnable_model(CacheLocation(hub_root, None), name)


def _http_error(error: MlxkError, param: str | None = None) -> HTTPError:
    """A library error as the answer to a request (a 5xx only for what the client cannot fix)."""
    if isinstance(error, PromptTooLong):  # OpenAI's code, which clients act on (a shorter history)
        return HTTPError(400, error.message, param=param, code="context_length_exceeded")
    status = error.http_status if error.http_status < 500 else 500
    return HTTPError(status, error.message, param=param, code=error.error_type)


class App:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.worker = EngineWorker(
            lambda name: _load(settings.hub_root, name), settings.max_queue, finished=self.metrics.generated
        )
        self.embedder = EmbeddingWorker(lambda name: _load_encoder(settings.hub_root, name))
        self.hosts = HostPolicy(settings.host, settings.extra_hosts)
        self.cors = CorsPolicy(settings.cors_origins)
        self.web_ui = WebUI() if settings.web_ui else None
        self.started = False
        self.draining = False  # stopping: open generations end now, new ones are refused
        self.in_flight = 0
        self._jobs: set[Job] = set()
        self._stopping = asyncio.Event()  # for bodies still arriving when the stop comes

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

    def drain(self) -> None:
        """The server is stopping: every generation in progress ends at its next step (its
        response with a proper last chunk), and new generation requests get 503."""
        self.draining = True
        self._stopping.set()
        for job in list(self._jobs):
            job.cancel.set()

    def close(self) -> None:
        """Stop the engine threads (waits for them); safe to call more than once."""
        self.worker.stop()
        self.embedder.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        path = scope.get("path", "")
        cors: list[tuple[str, str]] = []
        response = _Tracked(send)
        self.in_flight += 1
        try:
            origin = header(scope, b"origin")
            self._check_host_and_origin(scope, origin)
            cors = self.cors.headers(origin)
            if scope["method"] == "OPTIONS":
                status = 204
                await send_bytes(
                    response,
                    204,
                    b"",
                    self.cors.preflight(origin, header(scope, b"access-control-request-headers")),
                )
                return
            if self.web_ui is not None and routes.is_ui(path):  # no key: the page asks for it
                status = await self.web_ui.respond(scope, response)
                return
            if path != "/health":
                self._check_api_key(scope)
            status = await self._route(scope, receive, response, path, cors)
        except HTTPError as error:
            status = await self._send_error(response, error, cors)
        except ClientGone:
            status = CLIENT_GONE
        except Exception:  # a bug: logged with its traceback, answered as an OpenAI error
            log.exception("%s %s failed", scope.get("method"), path)
            status = await self._send_error(response, HTTPError(500, "internal server error"), cors)
        finally:
            self.in_flight -= 1
            seconds = time.perf_counter() - started
            self.metrics.request(routes.label(path), status)
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

    async def _send_error(self, response: _Tracked, error: HTTPError, cors: list[tuple[str, str]]) -> int:
        """Answer with ``error`` (with the CORS headers, so that a browser lets the page see it);
        the client-gone status when the client left or the answer had already begun."""
        if response.started:
            return CLIENT_GONE if error.status == CLIENT_GONE else 500
        try:
            await send_json(response, error.status, error.body(), [*error.headers, *cors])
        except (OSError, RuntimeError):  # the client is gone (Granian raises RuntimeError for it)
            return CLIENT_GONE
        return error.status

    # --- safety --------------------------------------------------------------------------------

    def _check_host_and_origin(self, scope: Scope, origin: str | None) -> None:
        host = header(scope, b"host")
        if not self.hosts.allows(host):  # DNS rebinding: a foreign name resolving to our loopback port
            raise HTTPError(403, f"host {host!r} is not allowed (see --allow-host)", code="forbidden_host")
        if origin is not None and not (self.cors.allows(origin) or self.hosts.own_origin(origin, host)):
            raise HTTPError(
                403, f"origin {origin!r} is not allowed (see --cors-origin)", code="forbidden_origin"
            )

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
        route, model_id = routes.match(path)
        if route is None:
            raise HTTPError(404, f"no route {path}", code="not_found")
        if scope["method"] != route.method:
            raise HTTPError(
                405,
                f"{route.template} takes {route.method}",
                code="method_not_allowed",
                headers=[("allow", route.method)],
            )
        if self.draining and route.method == "POST":
            raise shutting_down()
        if model_id is not None:
            return await self._model(send, model_id, cors)
        handlers = {
            "/health": self._health,
            "/v1/models": self._models,
            "/metrics": self._metrics,
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }
        return int(await handlers[route.template](scope, receive, send, cors))

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
        text = self.metrics.render(self.worker.queue_depth, self.in_flight)
        await send_bytes(send, 200, text.encode(), [("content-type", "text/plain; version=0.0.4"), *cors])
        return 200

    async def _model_objects(self) -> list[dict[str, Any]]:
        """The models this server can serve, as OpenAI model objects."""
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
        return data

    async def _models(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        await send_json(send, 200, {"object": "list", "data": await self._model_objects()}, cors)
        return 200

    async def _model(self, send: Send, model_id: str, cors: list[tuple[str, str]]) -> int:
        """``GET /v1/models/{id}`` (the OpenAI clients' ``models.retrieve``)."""
        if name_problem(model_id) is None:
            for model in await self._model_objects():
                if model["id"] == model_id:
                    await send_json(send, 200, model, cors)
                    return 200
        raise HTTPError(404, f"model {model_id!r} is not served here", param="model", code="model_not_found")

    async def _embeddings(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]
    ) -> int:
        body = await self._json_body(scope, receive)
        texts, fmt, dimensions = parse_inputs(body)
        model = self._embedding_model_for(body.get("model"))
        job = EmbedJob(model, texts, asyncio.get_running_loop())
        self.embedder.submit(job)
        watch = DisconnectWatch(receive)
        try:
            encoder, result, start, end = await watch.race(job.future)
        except MlxkError as error:
            raise _http_error(error, "model") from None
        finally:
            await watch.close()
        if dimensions is not None and dimensions != result.dimensions:
            raise HTTPError(400, f"{model} gives {result.dimensions} dimensions only", param="dimensions")
        too_long = [i for i, t in enumerate(result.truncated[start:end]) if t]
        if too_long:
            raise HTTPError(
                400,
                f"input {too_long[0]} is longer than the model's {encoder.max_length} tokens",
                param="input",
            )
        tokens = sum(result.token_counts[start:end])
        await send_json(send, 200, response_body(model, result.vectors[start:end], tokens, fmt), cors)
        return 200

    async def _json_body(self, scope: Scope, receive: Receive) -> Any:
        settings = self.settings
        raw = await read_body(
            receive,
            scope,
            settings.max_body_bytes,
            idle_s=settings.idle_timeout_s,
            total_s=settings.body_timeout_s,
            stopping=self._stopping,  # the server stops: a body still on its way is not waited for
        )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return body

    def _embedding_model_for(self, asked: Any) -> str:
        default = self.settings.embedding_model
        if asked is None or asked == "" or asked == default:
            if default is None:
                raise HTTPError(400, "name an embedding model: the server has no default one", param="model")
            return default
        if not isinstance(asked, str):
            raise HTTPError(400, "'model' must be a string", param="model")
        return self._cached_name(asked, default)

    def _cached_name(self, asked: str, default: str | None) -> str:
        """``asked`` when it is exactly the name of a cached model this server may serve."""
        if "://" in asked or asked.startswith(("/", ".", "~")) or name_problem(asked) is not None:
            raise HTTPError(
                404, f"model {asked!r} is not a cached model name", param="model", code="model_not_found"
            )
        if self.settings.single_model:
            raise HTTPError(404, f"this server serves only {default}", param="model", code="model_not_found")
        names = {dirname_to_name(d) for d in repo_dirnames(self.settings.hub_root)}
        if asked not in names:  # exact names only: a server never guesses, loads from paths or downloads
            raise HTTPError(
                404, f"model {asked!r} is not in the cache", param="model", code="model_not_found"
            )
        return asked

    def _model_for(self, asked: str | None) -> str:
        default = self.settings.model or self.worker.model
        if asked is None or asked == "" or asked == default:
            if default is None:
                raise HTTPError(400, "name a model: the server was started without --model", param="model")
            return default
        return self._cached_name(asked, self.settings.model)

    async def _chat(self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]) -> int:
        return await self._generate(scope, receive, send, cors, chat=True)

    async def _completions(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]]
    ) -> int:
        return await self._generate(scope, receive, send, cors, chat=False)

    async def _generate(
        self, scope: Scope, receive: Receive, send: Send, cors: list[tuple[str, str]], *, chat: bool
    ) -> int:
        body = await self._json_body(scope, receive)
        parsed = parse(body, chat=chat, default_max_tokens=self.settings.default_max_tokens)
        if parsed.unknown:
            log.info("ignored unknown request fields: %s", ", ".join(parsed.unknown))
        model = self._model_for(parsed.model)
        watch = DisconnectWatch(receive)
        jobs: list[Job] = []
        try:
            if model not in (self.worker.model, self.worker.loading):
                # before the worker unloads the running model for it: can this one run at all?
                try:
                    await watch.race(asyncio.to_thread(_check_runnable, self.settings.hub_root, model))
                except MlxkError as error:
                    raise _http_error(error, "model") from None
            loop = asyncio.get_running_loop()
            jobs = [Job(model, request, loop) for request in parsed.requests]
            try:
                self.worker.submit_all(jobs)
            except Busy:
                raise HTTPError(
                    429,
                    "the server is busy; retry shortly",
                    code="queue_full",
                    headers=[("retry-after", "1")],
                ) from None
            self._jobs.update(jobs)
            if self.draining:  # the stop began while this request was being read
                self.drain()
            return await self._answer(send, watch, jobs, parsed, Reply(model, chat), cors)
        finally:
            for job in jobs:
                job.cancel.set()  # a client that left: its generations stop at the next step
            self._jobs.difference_update(jobs)
            await watch.close()

    async def _answer(
        self,
        send: Send,
        watch: DisconnectWatch,
        jobs: list[Job],
        parsed: Parsed,
        reply: Reply,
        cors: list[tuple[str, str]],
    ) -> int:
        streams = [chunks(job) for job in jobs]
        param = "messages" if reply.chat else "prompt"
        firsts = [await watch.race(self._first(stream, param)) for stream in streams]
        if not parsed.stream:
            ends = await watch.race(
                asyncio.gather(*(_collect(f, s) for f, s in zip(firsts, streams, strict=True)))
            )
            choices = [(answer, _finish_reason(answer)) for answer in ends]
            usage = total_usage([answer.usage or _NO_USAGE for answer in ends])
            await send_json(send, 200, reply.complete(choices, usage), cors)
            return 200
        events = self._events(reply, firsts, streams, parsed.include_usage)
        return 200 if await send_events(send, watch, events, cors) else CLIENT_GONE

    async def _first(self, stream: AsyncIterator[Chunk], param: str) -> Chunk:
        """The first chunk, or the error that came instead (a prompt too long for the context...)."""
        try:
            first = await stream.__anext__()
        except MlxkError as error:
            raise _http_error(error, param) from None
        except StopAsyncIteration:
            raise HTTPError(500, "the generation ended without output") from None
        if first.finish_reason == "cancelled" and first.usage is None:  # never started: the server stops
            raise shutting_down()
        return first

    async def _events(
        self, reply: Reply, firsts: list[Chunk], streams: list[AsyncIterator[Chunk]], include_usage: bool
    ) -> AsyncIterator[bytes]:
        usages: list[Usage] = []
        open_streams: dict[int, AsyncIterator[Chunk]] = {}
        for index in range(len(firsts)):
            yield _event(reply.delta(None, role=True, index=index))
        for index, first in enumerate(firsts):
            if not first.empty:
                yield _event(reply.delta(first, index=index))
            if first.finish_reason is None:
                open_streams[index] = streams[index]
            else:
                yield _last_event(reply, index, first, usages)
        async for index, chunk in _merged(open_streams):
            if not chunk.empty:
                yield _event(reply.delta(chunk, index=index))
            if chunk.finish_reason is not None:
                yield _last_event(reply, index, chunk, usages)
        if include_usage and usages:
            yield _event(reply.usage_chunk(total_usage(usages)))
        yield b"data: [DONE]\n\n"


class _Tracked:
    """``send``, remembering whether the response has begun (an error can then no longer be sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


_NO_USAGE = Usage(0, 0, 0.0, 0.0, 0)


def _last_event(reply: Reply, index: int, last: Chunk, usages: list[Usage]) -> bytes:
    if last.usage is not None:
        usages.append(last.usage)
    return _event(reply.delta(None, _finish_reason(last), index=index))


def _finish_reason(last: Chunk) -> str:
    # a generation cut short by the server stopping ends as OpenAI's "length": the answer is
    # incomplete, and the client knows it (a client that left gets no answer at all)
    return "length" if last.finish_reason in (None, "cancelled") else last.finish_reason


async def _collect(first: Chunk, stream: AsyncIterator[Chunk]) -> Chunk:
    """One generation's chunks merged: its whole answer, with the finish and usage of its last."""
    received = [first]
    if first.finish_reason is None:
        async for chunk in stream:
            received.append(chunk)
    return merge(received)


async def _merged(streams: dict[int, AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of several generations as they come, each with its choice index."""
    if len(streams) <= 1:  # the common case: no tasks, no extra queue
        for index, stream in streams.items():
            async for chunk in stream:
                yield index, chunk
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:
            await queue.put((index, exc))
            return
        await queue.put((index, None))

    tasks = [asyncio.ensure_future(pump(index, stream)) for index, stream in streams.items()]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def create_app(settings: ServerSettings) -> App:
    return App(settings)
