"""Engine output -> OpenAI Responses shapes: the ``response`` object and its typed stream events.

The answer's parts (``mlxk.server.parts``) become output items: thinking a ``reasoning`` item
(its text as the summary: the model's reasoning is all there is), text a ``message`` item with one
``output_text`` part, each call a ``function_call`` item (``call_id``, ``name``, ``arguments``).
Streamed: ``response.created`` and ``response.in_progress``, then per item
``response.output_item.added``, its part opened, its deltas, its ``.done`` events and
``response.output_item.done``, then ``response.completed`` (or ``response.incomplete`` when the
answer was cut by ``max_output_tokens``, ``response.failed`` when generation failed), every event
with its ``sequence_number``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from mlxk.generation.chunks import Chunk, Usage
from mlxk.server.errors import HTTPError, stream_error
from mlxk.server.parts import CALL, REASONING, Closed, Grew, Opened, Part, Parts

NO_USAGE = Usage(0, 0, 0.0, 0.0, 0)
Finished = Callable[[dict[str, Any], list[Part]], None]
PREFIXES = {REASONING: "rs_", CALL: "fc_"}


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ResponseShape:
    """The ids and shapes of one response, streamed or not."""

    def __init__(self, model: str, echo: dict[str, Any], store: bool) -> None:
        self.id = new_id("resp_")
        self.model = model
        self.echo = echo
        self.store = store
        self.created_at = int(time.time())
        self._item_ids: dict[int, str] = {}

    def item_id(self, part: Part) -> str:
        found = self._item_ids.get(part.position)
        if found is None:
            found = self._item_ids[part.position] = new_id(PREFIXES.get(part.kind, "msg_"))
        return found

    def item(self, part: Part, status: str = "completed", *, empty: bool = False) -> dict[str, Any]:
        """A part as an output item (``empty``: as ``output_item.added`` carries it)."""
        text = "" if empty else part.text
        item_id = self.item_id(part)
        if part.kind == REASONING:
            summary = [] if empty else [{"type": "summary_text", "text": text}]
            return {"type": "reasoning", "id": item_id, "summary": summary, "status": status}
        if part.kind == CALL:
            return {"type": "function_call", "id": item_id, "call_id": part.call_id, "name": part.name,
                    "arguments": text, "status": status}  # fmt: skip
        content = [] if empty else [_text_part(text)]
        return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}

    def response(
        self, status: str, parts: list[Part], last: Chunk | None, error: HTTPError | None = None
    ) -> dict[str, Any]:
        """The response object; ``last``: the answer's last chunk (finish, usage), once it has one."""
        items = []
        for index, part in enumerate(parts):
            cut = status == "incomplete" and index == len(parts) - 1
            items.append(self.item(part, "incomplete" if cut else "completed"))
        usage = last.usage if last is not None else None
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "error": None if error is None else {"code": error.code or "server_error", "message": error.message},
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model, "output": items, "usage": None if usage is None else usage_object(usage),
            "store": self.store, **self.echo,
        }  # fmt: skip


def status_of(last: Chunk) -> str:
    """``completed``, or ``incomplete`` for an answer cut by the budget (or by the server stopping)."""
    return "completed" if last.finish_reason in ("stop", "tool_calls") else "incomplete"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class Events:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.number = 0

    def event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self.number, **fields})
        self.number += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    async def stream(self, chunks: AsyncIterator[Chunk], finished: Finished) -> AsyncIterator[bytes]:
        """The events of the answer ``chunks`` make; ``finished`` gets the final response object
        and the answer's parts (for the store) before the last event goes out."""
        shape = self.shape
        yield self.event("response.created", response=shape.response("in_progress", [], None))
        yield self.event("response.in_progress", response=shape.response("in_progress", [], None))
        parts = Parts()
        last: Chunk | None = None
        try:
            async for chunk in chunks:
                for item in parts.feed(chunk):
                    for event in self._part_events(item):
                        yield event
                last = chunk
        except Exception as exc:
            error = stream_error(exc)
            final = shape.response("failed", parts.parts, last, error)
            finished(final, parts.parts)
            yield self.event("response.failed", response=final)
            return
        status = status_of(last) if last is not None else "incomplete"
        for item in parts.close():
            for event in self._part_events(item, "incomplete" if status == "incomplete" else "completed"):
                yield event
        final = shape.response(status, parts.parts, last)
        finished(final, parts.parts)
        yield self.event(
            "response.completed" if status == "completed" else "response.incomplete", response=final
        )

    def _part_events(self, item: Opened | Grew | Closed, status: str = "completed") -> list[bytes]:
        part = item.part
        shape = self.shape
        where = {"item_id": shape.item_id(part), "output_index": part.position}
        if isinstance(item, Opened):
            events = [self.event("response.output_item.added", output_index=part.position,
                                 item=shape.item(part, "in_progress", empty=True))]  # fmt: skip
            if part.kind == REASONING:
                events.append(self.event("response.reasoning_summary_part.added", **where, summary_index=0,
                                         part={"type": "summary_text", "text": ""}))  # fmt: skip
            elif part.kind != CALL:
                events.append(
                    self.event("response.content_part.added", **where, content_index=0, part=_text_part(""))
                )
            return events
        if isinstance(item, Grew):
            if part.kind == REASONING:
                return [
                    self.event(
                        "response.reasoning_summary_text.delta", **where, summary_index=0, delta=item.piece
                    )
                ]
            if part.kind == CALL:
                return [self.event("response.function_call_arguments.delta", **where, delta=item.piece)]
            return [
                self.event(
                    "response.output_text.delta", **where, content_index=0, delta=item.piece, logprobs=[]
                )
            ]
        text = part.text
        if part.kind == REASONING:
            events = [
                self.event("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                self.event("response.reasoning_summary_part.done", **where, summary_index=0,
                           part={"type": "summary_text", "text": text}),
            ]  # fmt: skip
        elif part.kind == CALL:
            events = [
                self.event("response.function_call_arguments.done", **where, name=part.name, arguments=text)
            ]
        else:
            events = [
                self.event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
                self.event("response.content_part.done", **where, content_index=0, part=_text_part(text)),
            ]
        done = shape.item(part, status)
        events.append(self.event("response.output_item.done", output_index=part.position, item=done))
        return events
