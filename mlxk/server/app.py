"""The ASGI app: the safety checks, routing, the server's own routes, and one answer for errors.

Each concern has its home: ``guard`` (host, origin, API key), ``routes`` (the route table),
``models`` (which model a request gets), ``errors`` (errors as HTTP answers, in the protocol of the
route), ``generate`` (running requests on the engine thread, for any protocol) and the protocol
adapters: ``openai`` (chat and completions), ``responses`` (OpenAI Responses) and ``anthropic``
(Anthropic Messages).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from mlxk.errors import MlxkError
from mlxk.server import routes
from mlxk.server.anthropic.endpoints import MessagesEndpoints
from mlxk.server.asgi import Receive, Scope, Send, Tracked, read_body, send_bytes, send_json
from mlxk.server.disconnect import ClientGone
from mlxk.server.drain import OpenWork
from mlxk.server.embeddings import EmbeddingWorker
from mlxk.server.errors import CLIENT_GONE, HTTPError, from_library, internal, send_error, shutting_down
from mlxk.server.generate import Generations
from mlxk.server.guard import Guard
from mlxk.server.metrics import Metrics, group_lines
from mlxk.server.models import ModelPolicy
from mlxk.server.openai.endpoints import Headers, OpenAIEndpoints
from mlxk.server.responses.endpoints import ResponsesEndpoints
from mlxk.server.settings import ServerSettings
from mlxk.server.ui import WebUI
from mlxk.server.worker import EngineWorker, Job

if TYPE_CHECKING:
    from mlxk.generation.lockstep import Group

__all__ = ["App", "ServerSettings"]

log = logging.getLogger("mlxk.server")


class App:
    def __init__(self, settings: ServerSettings, group: Group | None = None) -> None:
        self.settings = settings
        self.group = group  # serve --distributed: the model is sharded over this group's ranks
        self.metrics = Metrics()
        if group is None:
            self.models = ModelPolicy(settings, lambda: self.worker.model)
            self.worker = EngineWorker(
                self.models.load_engine, settings.max_queue, finished=self.metrics.generated
            )
        else:
            from mlxk.generation.cluster import load_sharded
            from mlxk.generation.lockstep import LockstepRunner

            self.models = ModelPolicy(
                settings, lambda: self.worker.model, lambda path: load_sharded(group, path)
            )
            self.worker = EngineWorker(
                self.models.load_engine,
                settings.max_queue,
                finished=self.metrics.generated,
                runner=lambda engine, max_batch: LockstepRunner(engine, group, max_batch),
            )
        self.embedder = EmbeddingWorker(self.models.load_embedder, self.worker.call)
        self.generations = Generations(self.worker, self.models)
        self.guard = Guard(settings.host, settings.extra_hosts, settings.cors_origins, settings.api_key)
        self.openai = OpenAIEndpoints(
            self.models, self.generations, self.embedder, self.read_json, settings.default_max_tokens
        )
        self.responses = ResponsesEndpoints(
            self.models, self.generations, self.read_json, settings.default_max_tokens
        )
        self.messages = MessagesEndpoints(self.models, self.generations, self.read_json)
        self.web_ui = WebUI() if settings.web_ui else None
        self.started = False
        self.in_flight = 0
        self.open_work = OpenWork()  # what a drain waits for
        self._stopping = asyncio.Event()  # for bodies still arriving when the stop comes

    @property
    def draining(self) -> bool:
        return self.generations.draining

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
        """The server is stopping: /health and new requests get 503 from now on (a body still on its
        way is not waited for); the requests in progress go on to their end (``open_work``)."""
        self._stopping.set()
        self.generations.drain()

    def end_open(self) -> None:
        """The drain is over: every generation in progress ends at its next step (its response with
        a proper last chunk)."""
        self.drain()
        self.generations.end_open()

    def close(self) -> None:
        """Stop the engine thread (waits for it); safe to call more than once."""
        if self.group is None or self.group.lost is None:  # else it may wait on a lost rank for ever
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
        cors: Headers = []
        protocol = routes.protocol(path)  # whose error objects the answer carries
        response = Tracked(send)
        self.in_flight += 1
        try:
            cors = self.guard.admit(scope)
            if scope["method"] == "OPTIONS":
                status = 204
                await send_bytes(response, 204, b"", self.guard.preflight(scope))
                return
            if self.web_ui is not None and routes.is_ui(path):  # no key: the page asks for it
                status = await self.web_ui.respond(scope, response)
                return
            self.guard.check_key(scope, path)
            status = await self._route(scope, receive, response, path, cors)
        except HTTPError as error:
            status = await send_error(response, error, cors, protocol)
        except ClientGone:
            status = CLIENT_GONE
        except MlxkError as error:  # after the answer began (a rank of the group lost mid-stream)
            log.warning("%s %s ended: %s", scope.get("method"), path, error.message)
            status = await send_error(response, from_library(error), cors, protocol)
        except Exception:  # a bug: logged with its traceback, answered as the protocol's error
            status = await send_error(response, internal(scope.get("method"), path), cors, protocol)
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

    # --- routes --------------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str, cors: Headers) -> int:
        route, model_id = routes.match(path)  # model_id: the id in the path (a model's or a response's)
        if route is None:
            raise HTTPError(404, f"no route {path}", code="not_found")
        if scope["method"] not in route.methods:
            allowed = ", ".join(route.methods)
            raise HTTPError(
                405,
                f"{route.template} takes {allowed}",
                code="method_not_allowed",
                headers=[("allow", allowed)],
            )
        if self.group is not None and self.group.lost is not None and scope["method"] == "POST":
            from mlxk.generation.lockstep import GroupLost

            raise from_library(GroupLost(self.group.lost))  # nothing can be generated any more
        if self.draining and scope["method"] == "POST":
            raise shutting_down()
        if model_id is not None and route.template == "/v1/models/{id}":
            return await self.openai.retrieve_model(send, model_id, cors)
        if model_id is not None:  # /v1/responses/{id}
            if scope["method"] == "DELETE":
                return await self.responses.delete(send, model_id, cors)
            return await self.responses.retrieve(send, model_id, cors)
        if route.template == "/health":
            return await self._health(send, cors)
        if route.template == "/metrics":
            return await self._metrics(send, cors)
        if route.template == "/v1/models":
            return await self.openai.list_models(send, cors)
        handlers = {
            "/v1/chat/completions": self.openai.chat,
            "/v1/completions": self.openai.completions,
            "/v1/embeddings": self.openai.embeddings,
            "/v1/responses": self.responses.create,
            "/v1/messages": self.messages.messages,
            "/v1/messages/count_tokens": self.messages.count_tokens,
        }
        self.open_work.enter()
        try:
            return await handlers[route.template](scope, receive, send, cors)
        finally:
            self.open_work.leave()

    async def _health(self, send: Send, cors: Headers) -> int:
        loading = self.worker.loading
        lost = self.group is not None and self.group.lost is not None
        state = "group_lost" if lost else "draining" if self.draining else "loading" if loading else "ok"
        status = 200 if state == "ok" else 503  # a load balancer sends no new requests meanwhile
        body: dict[str, Any] = {
            "status": state,
            "model": loading or self.worker.model,
            "queue": self.worker.queue_depth,
        }
        if self.group is not None:
            body["group"] = {"size": self.group.size, "backend": self.group.backend, "rank": self.group.rank}
        await send_json(send, status, body, cors)
        return status

    async def _metrics(self, send: Send, cors: Headers) -> int:
        text = self.metrics.render(self.worker.queue_depth, self.in_flight)
        if self.group is not None:
            text += "\n".join(group_lines(self.group.size, self.group.rank, self.group.backend)) + "\n"
        await send_bytes(send, 200, text.encode(), [("content-type", "text/plain; version=0.0.4"), *cors])
        return 200

    async def read_json(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """The request body as a JSON object (400 for anything else)."""
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
