"""The Messages routes: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Each reads its body, turns it into a value (``requests``), runs it through the protocol-neutral
``Generations`` and shapes the answer (``replies``). Errors are raised as ``HTTPError``; the app
answers them as Anthropic error objects on these routes (``mlxk.server.errors``). An error after a
stream has begun goes out as the stream's ``error`` event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mlxk.server.anthropic.replies import event, message, message_events, message_id
from mlxk.server.anthropic.requests import parse_count, parse_messages
from mlxk.server.asgi import Receive, Scope, Send, send_events, send_json
from mlxk.server.disconnect import DisconnectWatch
from mlxk.server.errors import ANTHROPIC, CLIENT_GONE, HTTPError, with_error_event
from mlxk.server.generate import Generations
from mlxk.server.models import ModelPolicy
from mlxk.server.worker import Job

Headers = list[tuple[str, str]]
ReadJson = Callable[[Scope, Receive], Awaitable[Any]]


class MessagesEndpoints:
    def __init__(self, models: ModelPolicy, generations: Generations, read_json: ReadJson) -> None:
        self.models = models
        self.generations = generations
        self.read_json = read_json

    async def messages(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        parsed = parse_messages(await self.read_json(scope, receive))
        model = self.models.for_generation(parsed.model)
        watch = DisconnectWatch(receive)
        jobs: list[Job] = []
        try:
            running, jobs = await self.generations.start(model, (parsed.request,), watch, "messages")
            answer_id = message_id()
            if not parsed.stream:
                (answer,) = await running.answers()
                await send_json(send, 200, message(answer_id, model, answer), cors)
                return 200
            events = with_error_event(message_events(answer_id, model, running.only()), _error_event)
            return 200 if await send_events(send, watch, events, cors) else CLIENT_GONE
        finally:
            self.generations.finish(jobs)
            await watch.close()

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        asked, request = parse_count(await self.read_json(scope, receive))
        model = self.models.for_generation(asked)
        watch = DisconnectWatch(receive)
        try:
            size = await self.generations.prompt_size(model, request, watch, "messages")
        finally:
            await watch.close()
        await send_json(send, 200, {"input_tokens": size}, cors)
        return 200


def _error_event(error: HTTPError) -> bytes:
    """Anthropic's ``error`` event: what ends a stream that failed after it began."""
    return event("error", {"error": error.body(ANTHROPIC)["error"]})
