"""OpenAI request bodies -> ``GenerationRequest`` values, checked field by field.

Every field is checked for its exact JSON type (``true`` is not a number, ``"10"`` is not an
integer) and range; what is not supported is refused with a 400 naming the field, never silently
ignored (``fields`` says which fields are taken at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import orjson

from mlxk.errors import InvalidField
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
from mlxk.server.errors import invalid
from mlxk.server.openai.fields import check_fields

MAX_PROMPTS = 64  # prompts of one /v1/completions request, each its own choice
STREAM_OPTIONS = ("include_usage", "include_obfuscation")  # the second: no padding is sent (none needed)


@dataclass(frozen=True, slots=True)
class Parsed:
    model: str | None
    requests: tuple[GenerationRequest, ...]  # one per choice: several for a list of prompts
    stream: bool
    include_usage: bool
    logprobs: bool = False  # the choices report their tokens' log-probabilities


_bad = invalid


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
                _reasoning(item, where),
            )
        )
    return tuple(messages)


def _reasoning(message: dict[str, Any], where: str) -> str | None:
    """The reasoning a client sends back with an assistant message, as ``reasoning_content`` or
    ``reasoning`` (the two names of our replies' field; either, or both with the same text)."""
    given = {}
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if value is not None:
            given[key] = _string(value, f"{where}.{key}")
    if len(set(given.values())) > 1:
        raise _bad(f"{where}.reasoning", "reasoning_content and reasoning differ; send one of them")
    return next(iter(given.values()), None) or None


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
    if fmt["type"] != "json_schema":
        return ResponseFormat(fmt["type"])
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("response_format.json_schema", "json_schema must be an object with a name and a schema")
    schema, name, strict = spec.get("schema"), spec.get("name"), spec.get("strict")
    if not isinstance(schema, dict | bool):
        raise _bad("response_format.json_schema.schema", "json_schema.schema must be a JSON Schema object")
    if name is not None and not isinstance(name, str):
        raise _bad("response_format.json_schema.name", "json_schema.name must be a string")
    if strict is not None and not isinstance(strict, bool):
        raise _bad("response_format.json_schema.strict", "json_schema.strict must be true or false")
    return ResponseFormat("json_schema", schema, name, strict is True)


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


def _parallel_tool_calls(body: dict[str, Any]) -> bool:
    value = body.get("parallel_tool_calls")
    if value is None:
        return True
    if not isinstance(value, bool):
        raise _bad("parallel_tool_calls", "'parallel_tool_calls' must be true or false")
    return value


def _refuse_unsupported(body: dict[str, Any]) -> None:
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or best_of != body.get("n", 1)):
        raise _bad("best_of", "best_of must equal n (each choice is one sampled sequence)")
    if body.get("echo") not in (None, False) or body.get("suffix") is not None:
        raise _bad("echo" if body.get("echo") else "suffix", "echo and suffix are not supported")


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    """How many alternatives each token's log-probability comes with (None: not asked): chat
    asks with ``logprobs: true`` and ``top_logprobs``; completions with ``logprobs: N``."""
    top = _integer(body, "top_logprobs")
    if not chat:
        return _integer(body, "logprobs")
    asked = body.get("logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise _bad("logprobs", "'logprobs' must be true or false")
    if top is not None and not asked:
        raise _bad("top_logprobs", "top_logprobs needs logprobs: true")
    return (top or 0) if asked else None


def _choices(body: dict[str, Any]) -> int:
    n = _integer(body, "n")
    if n is None:
        return 1
    try:
        BOUNDS["n"].check("n", n)
    except InvalidField as error:
        raise invalid("n", error.message) from None
    return n


def _copies(request: GenerationRequest, n: int) -> list[GenerationRequest]:
    """``n`` choices of one request: a seeded one gets seeds ``seed``, ``seed + 1``, ... (the same
    seed would give the same answer n times)."""
    seed = request.sampling.seed
    if n == 1 or seed is None:
        return [request] * n
    return [replace(request, sampling=replace(request.sampling, seed=(seed + i) % 2**63)) for i in range(n)]


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


def parse(body: dict[str, Any], *, chat: bool, default_max_tokens: int) -> Parsed:
    """A chat or completions body (the app's ``read_json`` took only a JSON object)."""
    check_fields(body, "chat" if chat else "completions")
    _refuse_unsupported(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "'model' must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict)
        or not all(key in STREAM_OPTIONS and isinstance(value, bool) for key, value in options.items())
    ):
        raise _bad("stream_options", f"'stream_options' takes booleans {' and '.join(STREAM_OPTIONS)}")
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
            "logprobs": _logprobs(body, chat),
        }
        n = _choices(body)
        if chat:
            thinking, template_kwargs = _thinking(body)
            request = GenerationRequest(
                messages=_messages(body),
                tools=_tools(body),
                tool_choice=_tool_choice(body),
                parallel_tool_calls=_parallel_tool_calls(body),
                thinking=thinking,
                template_kwargs=template_kwargs,
                **common,
            )
            requests: tuple[GenerationRequest, ...] = tuple(_copies(request, n))
        else:
            prompts = [GenerationRequest(prompt=p, **common) for p in _prompts(body)]
            requests = tuple(copy for r in prompts for copy in _copies(r, n))
    except InvalidField as error:  # a value out of bounds, or what the pipeline cannot do yet
        raise invalid(error.param, error.message) from None
    include_usage = bool(options and options.get("include_usage"))
    return Parsed(model, requests, stream, include_usage, common["logprobs"] is not None)
