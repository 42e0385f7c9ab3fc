"""Engine output -> OpenAI shapes: whole responses, stream chunks and usage, for chat and completions.

Only values are translated here: a ``Chunk`` (content, reasoning, tool-call pieces, finish) becomes
a message or a delta. Reasoning goes out as ``reasoning_content`` and, for the clients that read
that name, as ``reasoning``. Tool calls stream as ``delta.tool_calls`` entries with an integer
``index``: the first piece of a call carries its ``id``, ``type`` and ``function.name`` (with empty
``arguments``), the following ones more of its arguments. A call that turned out malformed after its
start was sent cannot be taken back: its text follows as content, and the finish reason is not
``tool_calls`` for it (see docs/tools.md).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from mlxk.generation.chunks import Chunk, ToolCallDelta, Usage
from mlxk.generation.logprobs import TokenLogprob


def total_usage(usages: list[Usage]) -> Usage:
    """The usage of a request whose prompts were generated separately."""
    if len(usages) == 1:
        return usages[0]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        prompt_seconds=max(u.prompt_seconds for u in usages),
        generation_seconds=max(u.generation_seconds for u in usages),
        peak_memory_bytes=max(u.peak_memory_bytes for u in usages),
        cached_tokens=sum(u.cached_tokens for u in usages),
    )


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


class Reply:
    """The ids and shapes of one response, streamed or not."""

    def __init__(self, model: str, chat: bool, logprobs: bool = False) -> None:
        self.model = model
        self.chat = chat
        self.logprobs = logprobs  # the request asked for them: each choice carries its tokens' entries
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def complete(self, choices: list[tuple[Chunk, str]], usage: Usage) -> dict[str, Any]:
        """The whole answer: each choice's chunks merged into one, with its finish reason, in order."""
        objects = []
        for index, (answer, finish) in enumerate(choices):
            if self.chat:
                message: dict[str, Any] = {"role": "assistant", "content": answer.content}
                if answer.reasoning:
                    message["reasoning_content"] = message["reasoning"] = answer.reasoning
                if answer.tool_calls:
                    message["tool_calls"] = _whole_calls(answer.tool_calls)
                    message["content"] = answer.content or None
                choice: dict[str, Any] = {"index": index, "message": message}
            else:
                choice = {"index": index, "text": answer.content}
            choice.update(finish_reason=finish, logprobs=self._logprobs(answer.logprobs))
            objects.append(choice)
        return {
            **self._base("chat.completion" if self.chat else "text_completion"),
            "choices": objects,
            "usage": usage_object(usage),
        }

    def delta(
        self, chunk: Chunk | None, finish: str | None = None, *, role: bool = False, index: int = 0
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if chunk is not None:
                if chunk.reasoning:
                    delta["reasoning_content"] = delta["reasoning"] = chunk.reasoning
                if chunk.content:
                    delta["content"] = chunk.content
                # a stream cannot take back the start of a call that failed: its text follows as content
                calls = [_call_delta(d) for d in chunk.tool_calls if not d.failed]
                if calls:
                    delta["tool_calls"] = calls
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": chunk.content if chunk is not None else ""}
        entries = chunk.logprobs if chunk is not None else ()
        choice.update(finish_reason=finish, logprobs=self._logprobs(entries) if entries else None)
        return {
            **self._base("chat.completion.chunk" if self.chat else "text_completion"),
            "choices": [choice],
        }

    def _logprobs(self, entries: tuple[TokenLogprob, ...]) -> dict[str, Any] | None:
        """OpenAI's logprobs object of a choice (or a delta): chat's ``content`` list, or the
        completions API's parallel lists."""
        if not self.logprobs:
            return None
        if self.chat:
            return {"content": [_entry(e) for e in entries], "refusal": None}
        offsets, at = [], 0
        for e in entries:
            offsets.append(at)
            at += len(e.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{a.token: a.logprob for a in e.top} for e in entries],
            "text_offset": offsets,
        }

    def finish_reason(self, last: Chunk) -> str:
        # a generation cut short by the server stopping ends as OpenAI's "length": the answer is
        # incomplete, and the client knows it (a client that left gets no answer at all)
        return "length" if last.finish_reason in (None, "cancelled") else last.finish_reason

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(obj), "choices": [], "usage": usage_object(usage)}


def _entry(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.bytes),
        "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes)} for a in entry.top],
    }


def _call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    """A piece of a tool call as a streamed ``delta.tool_calls`` entry: id, type and name first."""
    out: dict[str, Any] = {"index": delta.index}
    function: dict[str, Any] = {}
    if delta.id is not None:
        out.update(id=delta.id, type="function")
    if delta.name is not None:
        function["name"] = delta.name
    function["arguments"] = delta.arguments
    out["function"] = function
    return out


def _whole_calls(deltas: tuple[ToolCallDelta, ...]) -> list[dict[str, Any]]:
    """The pieces of each call put together, in the order of their indices."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        if delta.failed:  # a call that turned out malformed: its text is in the content
            calls.pop(delta.index, None)
            continue
        call = calls.setdefault(
            delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.id is not None:
            call["id"] = delta.id
        if delta.name is not None:
            call["function"]["name"] = delta.name
        call["function"]["arguments"] += delta.arguments
    return [calls[index] for index in sorted(calls)]


def event(obj: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"
