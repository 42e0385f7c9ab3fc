"""The Responses routes: ``POST /v1/responses``, and ``GET``/``DELETE /v1/responses/{id}`` for
the responses kept with ``store: true``.

The body becomes a value (``requests``), runs through the protocol-neutral ``Generations``, and
the answer is shaped (``replies``); errors are raised as ``HTTPError`` (OpenAI's error objects).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mlxk.server.asgi import Receive, Scope, Send, send_events, send_json
from mlxk.server.disconnect import DisconnectWatch
from mlxk.server.errors import CLIENT_GONE
from mlxk.server.generate import Generations
from mlxk.server.models import ModelPolicy
from mlxk.server.parts import Part, whole
from mlxk.server.responses.replies import Events, ResponseShape, status_of
from mlxk.server.responses.requests import parse
from mlxk.server.responses.store import ResponseStore
from mlxk.server.worker import Job

Headers = list[tuple[str, str]]
ReadJson = Callable[[Scope, Receive], Awaitable[Any]]


class ResponsesEndpoints:
    def __init__(
        self, models: ModelPolicy, generations: Generations, read_json: ReadJson, default_max_tokens: int
    ) -> None:
        self.models = models
        self.generations = generations
        self.read_json = read_json
        self.default_max_tokens = default_max_tokens
        self.store = ResponseStore()

    async def create(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        body = await self.read_json(scope, receive)
        parsed = parse(body, self.default_max_tokens, self.store.history)
        model = self.models.for_generation(parsed.model)
        watch = DisconnectWatch(receive)
        jobs: list[Job] = []
        try:
            running, jobs = await self.generations.start(model, (parsed.request,), watch, "input")
            shape = ResponseShape(model, parsed.echo, parsed.store)

            def finished(response: dict[str, Any], parts: list[Part]) -> None:
                if parsed.store:
                    self.store.keep(response, parsed.conversation, parts)

            if not parsed.stream:
                (answer,) = await running.answers()
                parts = whole(answer)
                response = shape.response(status_of(answer), parts, answer)
                finished(response, parts)
                await send_json(send, 200, response, cors)
                return 200
            events = Events(shape).stream(running.only(), finished)
            return 200 if await send_events(send, watch, events, cors) else CLIENT_GONE
        finally:
            self.generations.finish(jobs)
            await watch.close()

    async def retrieve(self, send: Send, response_id: str, cors: Headers) -> int:
        await send_json(send, 200, self.store.get(response_id).response, cors)
        return 200

    async def delete(self, send: Send, response_id: str, cors: Headers) -> int:
        self.store.delete(response_id)
        await send_json(send, 200, {"id": response_id, "object": "response.deleted", "deleted": True}, cors)
        return 200
