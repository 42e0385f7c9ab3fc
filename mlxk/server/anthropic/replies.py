"""Engine output -> Anthropic Messages shapes: the whole ``message`` and its stream of events.

The answer's parts (``mlxk.server.parts``) become content blocks: thinking as ``thinking``
(with an empty ``signature``: there is nothing to sign here), text as ``text``, each call as
``tool_use`` (its ``input`` the arguments' JSON object). Streamed, each block opens with
``content_block_start``, grows with ``thinking_delta`` / ``text_delta`` / ``input_json_delta``
(the arguments as JSON text, piece by piece) and ends with ``content_block_stop``, between
``message_start`` (and a ``ping``) and ``message_delta`` (stop reason, usage) and ``message_stop``.

Usage in Anthropic's terms: ``input_tokens`` are the prompt tokens that were not read from the
prefix cache, ``cache_read_input_tokens`` those that were (their sum is the prompt's size). The
prompt's size is known when the answer ends: ``message_start`` counts none yet, ``message_delta``
carries the counts (the SDKs take them from there).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from mlxk.generation.chunks import Chunk, Usage
from mlxk.server.parts import CALL, REASONING, Closed, Grew, Opened, Part, Parts, whole

NO_USAGE = Usage(0, 0, 0.0, 0.0, 0)


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def stop_reason(last: Chunk) -> str:
    if last.finish_reason == "tool_calls":
        return "tool_use"
    if last.finish_reason == "stop":
        return "stop_sequence" if last.stop_sequence is not None else "end_turn"
    # the budget, or the server stopping mid-answer: the answer is incomplete either way
    return "max_tokens"


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _block(part: Part, *, start: bool = False) -> dict[str, Any]:
    """A part as a content block (``start``: empty, as ``content_block_start`` carries it)."""
    text = "" if start else part.text
    if part.kind == REASONING:
        return {"type": "thinking", "thinking": text, "signature": ""}
    if part.kind == CALL:
        return {
            "type": "tool_use",
            "id": part.call_id,
            "name": part.name,
            "input": {} if start else _input(text),
        }
    return {"type": "text", "text": text}


def _input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}  # the parser hands over calls whose arguments are JSON objects; nothing else gets here
    return value if isinstance(value, dict) else {}


def message(message_id: str, model: str, answer: Chunk) -> dict[str, Any]:
    """The whole answer as a ``message`` object."""
    return {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [_block(part) for part in whole(answer)],
        "stop_reason": stop_reason(answer), "stop_sequence": answer.stop_sequence,
        "usage": usage_object(answer.usage or NO_USAGE),
    }  # fmt: skip


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event, named as Anthropic names them."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


async def message_events(message_id: str, model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
    """The stream of one answer."""
    start: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage_object(NO_USAGE),
    }  # fmt: skip
    yield event("message_start", {"message": start})
    yield event("ping", {})
    parts = Parts()
    last = Chunk()
    async for chunk in chunks:
        for item in parts.feed(chunk):
            yield _part_event(item)
        last = chunk
    for item in parts.close():
        yield _part_event(item)
    delta = {"stop_reason": stop_reason(last), "stop_sequence": last.stop_sequence}
    yield event("message_delta", {"delta": delta, "usage": usage_object(last.usage or NO_USAGE)})
    yield event("message_stop", {})


def _part_event(item: Opened | Grew | Closed) -> bytes:
    part = item.part
    if isinstance(item, Opened):
        return event(
            "content_block_start", {"index": part.position, "content_block": _block(part, start=True)}
        )
    if isinstance(item, Closed):
        return event("content_block_stop", {"index": part.position})
    if part.kind == REASONING:
        delta = {"type": "thinking_delta", "thinking": item.piece}
    elif part.kind == CALL:
        delta = {"type": "input_json_delta", "partial_json": item.piece}
    else:
        delta = {"type": "text_delta", "text": item.piece}
    return event("content_block_delta", {"index": part.position, "delta": delta})
