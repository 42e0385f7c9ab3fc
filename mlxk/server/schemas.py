"""OpenAI request bodies -> engine requests, checked field by field; engine output -> OpenAI shapes.

Every field is checked for its exact JSON type (``true`` is not a number, ``"10"`` is not an
integer) and range; what is not supported is refused with a 400 naming the field, never silently
ignored. Unknown fields are ignored (and reported to the caller for the log).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from mlxk.errors import InvalidField
from mlxk.generation.chunks import Chunk, ToolCallDelta, Usage
from mlxk.generation.request import (
    BOUNDS,
    ContentPart,
    FunctionTool,
    GenerationRequest,
    ImagePart,
    Message,
    NamedFunction,
    ResponseFormat,
    Sampling,
    TextPart,
    ToolCall,
    ToolChoice,
)
from mlxk.server.asgi import HTTPError

MAX_PROMPTS = 64  # prompts of one /v1/completions request, each its own choice
_KNOWN = {
    "model", "messages", "prompt", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
    "seed", "stop", "n", "logprobs", "top_logprobs", "response_format", "user", "echo", "suffix",
    "tools", "tool_choice", "chat_template_kwargs", "enable_thinking",
}  # fmt: skip
_CHAT_ONLY = {"tools", "tool_choice", "chat_template_kwargs", "enable_thinking"}


@dataclass(frozen=True, slots=True)
class Parsed:
    model: str | None
    requests: tuple[GenerationRequest, ...]  # one per choice: several for a list of prompts
    stream: bool
    include_usage: bool
    unknown: tuple[str, ...]


def _bad(param: str, message: str) -> HTTPError:
    return HTTPError(400, message, param=param, code="invalid_value")


def _number(body: dict[str, Any], key: str) -> float | None:
    """A JSON number (not ``true``, not a string); its range is the request value's to check."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(key, f"'{key}' must be a number")
    return float(value)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"'{key}' must be an integer")
    return value


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(param, f"'{param}' must be a string")
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "'stop' must be a string or a list of strings")
    return tuple(s for s in stops if s)


def _content(value: Any, where: str) -> str | tuple[ContentPart, ...]:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if not isinstance(value, list):
        raise _bad(where, "message content must be a string or a list of content parts")
    parts: list[ContentPart] = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image_url" and isinstance(part.get("image_url"), dict | str):
            image = part["image_url"]
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(ImagePart(_string(url, f"{where}.image_url.url")))
        else:
            raise _bad(where, "content parts must be text (or image_url) parts")
    return tuple(parts)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(where, "'tool_calls' must be a list")
    calls = []
    for i, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise _bad(f"{where}[{i}]", "each tool call needs a function with a name and arguments")
        arguments = function.get("arguments", "")
        if isinstance(arguments, dict):  # some clients send the object itself
            arguments = orjson.dumps(arguments).decode()
        calls.append(
            ToolCall(
                _string(call.get("id", ""), f"{where}[{i}].id"),
                _string(function.get("name"), f"{where}[{i}].function.name"),
                _string(arguments, f"{where}[{i}].function.arguments"),
            )
        )
    return tuple(calls)


def _messages(body: dict[str, Any]) -> tuple[Message, ...]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "'messages' must be a non-empty list")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        role = item.get("role") if isinstance(item, dict) else None
        if not isinstance(role, str):
            raise _bad(f"{where}.role", "each message needs a role")
        optional = {key: item.get(key) for key in ("tool_call_id", "name")}
        for key, value in optional.items():
            if value is not None:
                _string(value, f"{where}.{key}")
        messages.append(
            Message(
                "system" if role == "developer" else role,
                _content(item.get("content"), f"{where}.content"),
                _tool_calls(item.get("tool_calls"), f"{where}.tool_calls"),
                optional["tool_call_id"],
                optional["name"],
            )
        )
    return tuple(messages)


def _tools(body: dict[str, Any]) -> tuple[FunctionTool, ...]:
    raw = body.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("tools", "'tools' must be a list")
    tools = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise _bad(f"tools[{i}]", "each tool must be {'type': 'function', 'function': {...}}")
        description, parameters = function.get("description"), function.get("parameters")
        if description is not None:
            _string(description, f"tools[{i}].function.description")
        if parameters is not None and not isinstance(parameters, dict):
            raise _bad(f"tools[{i}].function.parameters", "a function's parameters are a JSON Schema object")
        tools.append(
            FunctionTool(_string(function.get("name"), f"tools[{i}].function.name"), description, parameters)
        )
    return tuple(tools)


def _tool_choice(body: dict[str, Any]) -> ToolChoice:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice  # the request value checks the word
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or choice.get("type") != "function":
        raise _bad("tool_choice", "'tool_choice' must be auto, none, required or a function")
    return NamedFunction(_string(function.get("name"), "tool_choice.function.name"))


def _response_format(body: dict[str, Any]) -> ResponseFormat:
    fmt = body.get("response_format")
    if fmt is None:
        return ResponseFormat()
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise _bad("response_format", "'response_format' must be an object with a type")
    schema = fmt.get("json_schema")
    if isinstance(schema, dict):
        inner = schema.get("schema")
        return ResponseFormat(
            fmt["type"],
            inner if isinstance(inner, dict) else None,
            schema.get("name") if isinstance(schema.get("name"), str) else None,
            schema.get("strict") is True,
        )
    return ResponseFormat(fmt["type"])


def _thinking(body: dict[str, Any]) -> tuple[bool | None, dict[str, Any]]:
    """The thinking switch (``enable_thinking``, at the top or in ``chat_template_kwargs``) and the
    other chat template variables."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise _bad("chat_template_kwargs", "'chat_template_kwargs' must be an object")
    kwargs = dict(kwargs)
    inner, outer = kwargs.pop("enable_thinking", None), body.get("enable_thinking")
    for value, param in ((inner, "chat_template_kwargs.enable_thinking"), (outer, "enable_thinking")):
        if value is not None and not isinstance(value, bool):
            raise _bad(param, f"'{param}' must be true or false")
    if inner is not None and outer is not None and inner != outer:
        raise _bad("enable_thinking", "enable_thinking is given twice, with different values")
    return (outer if outer is not None else inner), kwargs


def _prompts(body: dict[str, Any]) -> list[str]:
    """The prompts of a completions request: one string, or a list of them (each its own choice)."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _bad("prompt", "'prompt' must be a string or a non-empty list of strings (not token ids)")
    if len(prompts) > MAX_PROMPTS:
        raise _bad("prompt", f"at most {MAX_PROMPTS} prompts per request")
    return prompts


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _bad("n", "only n=1 is supported")
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        raise _bad("logprobs", "logprobs are not supported by this server")
    if body.get("echo") not in (None, False) or body.get("suffix") is not None:
        raise _bad("echo" if body.get("echo") else "suffix", "echo and suffix are not supported")


def _sampling(body: dict[str, Any]) -> Sampling:
    top_p = _number(body, "top_p")
    temperature = _number(body, "temperature")
    return Sampling(
        temperature=1.0 if temperature is None else temperature,  # OpenAI's default
        top_p=1.0 if top_p is None else top_p,
        top_k=_integer(body, "top_k") or 0,
        min_p=_number(body, "min_p") or 0.0,
        repetition_penalty=_number(body, "repetition_penalty"),
        presence_penalty=_number(body, "presence_penalty") or None,
        frequency_penalty=_number(body, "frequency_penalty") or None,
        seed=_integer(body, "seed"),
    )


def parse(body: Any, *, chat: bool, default_max_tokens: int) -> Parsed:
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    _refuse_unsupported(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "'model' must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)
    ):
        raise _bad("stream_options", "'stream_options' must be an object with a boolean include_usage")
    limits = {key: _integer(body, key) for key in ("max_completion_tokens", "max_tokens")}
    limit = next((value for value in limits.values() if value is not None), None)
    try:
        for key, value in limits.items():  # both, when both are given (only the first counts)
            if value is not None:
                BOUNDS["max_tokens"].check(key, value)
        common: dict[str, Any] = {
            "max_tokens": default_max_tokens if limit is None else limit,
            "sampling": _sampling(body),
            "stops": _stops(body),
            "response_format": _response_format(body),
        }
        if chat:
            thinking, template_kwargs = _thinking(body)
            request = GenerationRequest(
                messages=_messages(body),
                tools=_tools(body),
                tool_choice=_tool_choice(body),
                thinking=thinking,
                template_kwargs=template_kwargs,
                **common,
            )
            requests: tuple[GenerationRequest, ...] = (request,)
        else:
            requests = tuple(GenerationRequest(prompt=p, **common) for p in _prompts(body))
    except InvalidField as error:  # a value out of bounds, or what the pipeline cannot do yet
        raise _bad(error.param, error.message) from None
    include_usage = bool(options and options.get("include_usage"))
    unknown = set(body) - (_KNOWN if chat else _KNOWN - _CHAT_ONLY)
    return Parsed(model, requests, stream, include_usage, tuple(sorted(unknown)))


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

    def __init__(self, model: str, chat: bool) -> None:
        self.model = model
        self.chat = chat
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
            choice.update(finish_reason=finish, logprobs=None)
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
        choice.update(finish_reason=finish, logprobs=None)
        return {
            **self._base("chat.completion.chunk" if self.chat else "text_completion"),
            "choices": [choice],
        }

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(obj), "choices": [], "usage": usage_object(usage)}


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
