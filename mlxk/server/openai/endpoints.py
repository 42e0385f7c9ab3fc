"""The OpenAI routes: each reads its body, turns it into values, runs them, and shapes the answer.

``/v1/chat/completions`` and ``/v1/completions`` go through the protocol-neutral ``Generations``
(``mlxk.server.generate``); ``/v1/embeddings`` through the embedding batches; ``/v1/models`` lists
what the model-name policy serves. Errors are raised as ``HTTPError`` (``mlxk.server.errors``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mlxk.errors import MlxkError
from mlxk.generation.chunks import Usage
from mlxk.server.asgi import Receive, Scope, Send, send_events, send_json
from mlxk.server.disconnect import DisconnectWatch
from mlxk.server.embeddings import EmbeddingWorker, EmbedJob, parse_request
from mlxk.server.errors import CLIENT_GONE, HTTPError, from_library, model_not_found, with_error_event
from mlxk.server.generate import Generations, Running
from mlxk.server.models import ModelPolicy
from mlxk.server.openai.fields import check_fields
from mlxk.server.openai.replies import DONE, Reply, event, total_usage
from mlxk.server.openai.requests import Parsed, parse
from mlxk.server.worker import Job

Headers = list[tuple[str, str]]
ReadJson = Callable[[Scope, Receive], Awaitable[Any]]
_NO_USAGE = Usage(0, 0, 0.0, 0.0, 0)


class OpenAIEndpoints:
    def __init__(
        self,
        models: ModelPolicy,
        generations: Generations,
        embedder: EmbeddingWorker,
        read_json: ReadJson,
        default_max_tokens: int,
    ) -> None:
        self.models = models
        self.generations = generations
        self.embedder = embedder
        self.read_json = read_json
        self.default_max_tokens = default_max_tokens

    # --- models --------------------------------------------------------------------------------

    async def list_models(self, send: Send, cors: Headers) -> int:
        data = [model_object(m) for m in await self.models.served()]
        await send_json(send, 200, {"object": "list", "data": data}, cors)
        return 200

    async def retrieve_model(self, send: Send, model_id: str, cors: Headers) -> int:
        """``GET /v1/models/{id}`` (the OpenAI clients' ``models.retrieve``)."""
        model = await self.models.find(model_id)
        if model is None:
            raise model_not_found(f"model {model_id!r} is not served here")
        await send_json(send, 200, model_object(model), cors)
        return 200

    # --- generation ----------------------------------------------------------------------------

    async def chat(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        return await self._generate(scope, receive, send, cors, chat=True)

    async def completions(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        return await self._generate(scope, receive, send, cors, chat=False)

    async def _generate(
        self, scope: Scope, receive: Receive, send: Send, cors: Headers, *, chat: bool
    ) -> int:
        body = await self.read_json(scope, receive)
        parsed = parse(body, chat=chat, default_max_tokens=self.default_max_tokens)
        model = self.models.for_generation(parsed.model)
        watch = DisconnectWatch(receive)
        jobs: list[Job] = []
        try:
            param = "messages" if chat else "prompt"
            running, jobs = await self.generations.start(model, parsed.requests, watch, param)
            reply = Reply(model, chat, parsed.logprobs)
            if not parsed.stream:
                answers = await running.answers()
                choices = [(answer, reply.finish_reason(answer)) for answer in answers]
                usage = total_usage([answer.usage or _NO_USAGE for answer in answers])
                await send_json(send, 200, reply.complete(choices, usage), cors)
                return 200
            events = with_error_event(_events(reply, running, parsed), _error_event)
            return 200 if await send_events(send, watch, events, cors) else CLIENT_GONE
        finally:
            self.generations.finish(jobs)
            await watch.close()

    # --- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        body = await self.read_json(scope, receive)
        check_fields(body, "embeddings")
        request = parse_request(body)
        model = self.models.for_embedding(body.get("model"))
        job = EmbedJob(model, request, asyncio.get_running_loop())
        self.embedder.submit(job)
        watch = DisconnectWatch(receive)
        try:
            reply = await watch.race(job.future)  # the body, checked and shaped on the MLX thread
        except MlxkError as error:
            raise from_library(error, "model") from None
        finally:
            await watch.close()
        await send_json(send, 200, reply, cors)
        return 200


def model_object(m: Any) -> dict[str, Any]:
    """A cached model as an OpenAI model object."""
    config = m.config or {}
    return {
        "id": m.name, "object": "model", "created": m.last_modified_ns // 1_000_000_000, "owned_by": m.name.split("/")[0],
        "context_length": config.get("max_position_embeddings"), "capabilities": list(m.capabilities),
    }  # fmt: skip


def _error_event(error: HTTPError) -> bytes:
    """What ends a stream that failed after it began: an event with OpenAI's error object (what
    OpenAI's own API sends, and its clients raise as an APIError), and no ``[DONE]``."""
    return event(error.body())


async def _events(reply: Reply, running: Running, parsed: Parsed) -> AsyncIterator[bytes]:
    usages: list[Usage] = []
    for index in range(len(running.firsts)):
        yield event(reply.delta(None, role=True, index=index))
    async for index, chunk in running.chunks():
        if not chunk.empty or chunk.logprobs:
            yield event(reply.delta(chunk, index=index))
        if chunk.finish_reason is not None:
            if chunk.usage is not None:
                usages.append(chunk.usage)
            yield event(reply.delta(None, reply.finish_reason(chunk), index=index))
    if parsed.include_usage and usages:
        yield event(reply.usage_chunk(total_usage(usages)))
    yield DONE
