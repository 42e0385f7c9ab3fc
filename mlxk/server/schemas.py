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

from mlxk.runner.request import GenerationRequest, Message, Sampling, Usage
from mlxk.server.asgi import HTTPError

MAX_STOPS = 16
MAX_STOP_LENGTH = 256
MAX_TOKENS_LIMIT = 1_000_000
MAX_PROMPTS = 64  # prompts of one /v1/completions request, each its own choice
ROLES = ("system", "user", "assistant", "tool", "developer")
_KNOWN = {
    "model", "messages", "prompt", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
    "seed", "stop", "n", "logprobs", "top_logprobs", "response_format", "user", "echo", "suffix",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parsed:
    model: str | None
    requests: tuple[GenerationRequest, ...]  # one per choice: several for a list of prompts
    stream: bool
    include_usage: bool
    unknown: tuple[str, ...]


def _bad(param: str, message: str) -> HTTPError:
    return HTTPError(400, message, param=param, code="invalid_value")


def _number(body: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(key, f"'{key}' must be a number")
    if not low <= value <= high:
        raise _bad(key, f"'{key}' must be between {low} and {high}")
    return float(value)


def _integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"'{key}' must be an integer")
    if not low <= value <= high:
        raise _bad(key, f"'{key}' must be between {low} and {high}")
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "'stop' must be a string or a list of strings")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise _bad("stop", f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_LENGTH} characters")
    return tuple(s for s in stops if s)


def _content(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text is supported
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(f"messages[{index}].content", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    if value is None:
        return ""
    raise _bad(f"messages[{index}].content", "message content must be a string or a list of text parts")


def _messages(body: dict[str, Any]) -> tuple[Message, ...]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "'messages' must be a non-empty list")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise _bad(f"messages[{i}].role", f"each message needs a role among {', '.join(ROLES)}")
        role = "system" if item["role"] == "developer" else item["role"]
        messages.append(Message(role, _content(item.get("content"), i)))
    return tuple(messages)


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
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _bad("response_format", "only response_format {'type': 'text'} is supported")
    if body.get("echo") not in (None, False) or body.get("suffix") is not None:
        raise _bad("echo" if body.get("echo") else "suffix", "echo and suffix are not supported")


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
    limit = _integer(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT) or _integer(
        body, "max_tokens", 1, MAX_TOKENS_LIMIT
    )
    penalty = body.get("repetition_penalty")
    sampling = Sampling(
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        top_p=_number(body, "top_p", 0.0, 1.0, 1.0),  # 0: only the most likely token
        top_k=_integer(body, "top_k", 0, 1_000_000) or 0,
        min_p=_number(body, "min_p", 0.0, 1.0, 0.0),
        repetition_penalty=None if penalty is None else _number(body, "repetition_penalty", 0.01, 10.0, 1.0),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0, 0.0) or None,
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0, 0.0) or None,
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),  # OpenAI takes any 64-bit integer
    )
    common = {"max_tokens": limit or default_max_tokens, "sampling": sampling, "stops": _stops(body)}
    requests: tuple[GenerationRequest, ...]
    if chat:
        requests = (GenerationRequest(messages=_messages(body), **common),)  # type: ignore[arg-type]
    else:
        requests = tuple(GenerationRequest(prompt=p, **common) for p in _prompts(body))  # type: ignore[arg-type]
    include_usage = bool(options and options.get("include_usage"))
    return Parsed(model, requests, stream, include_usage, tuple(sorted(set(body) - _KNOWN)))


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

    def complete(self, choices: list[tuple[str, str]], usage: Usage) -> dict[str, Any]:
        """The whole answer: (text, finish_reason) for each choice, in order."""
        objects = []
        for index, (text, finish) in enumerate(choices):
            if self.chat:
                choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": text}}
            else:
                choice = {"index": index, "text": text}
            choice.update(finish_reason=finish, logprobs=None)
            objects.append(choice)
        return {
            **self._base("chat.completion" if self.chat else "text_completion"),
            "choices": objects,
            "usage": usage_object(usage),
        }

    def delta(
        self, text: str | None, finish: str | None = None, *, role: bool = False, index: int = 0
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text or ""}
        choice.update(finish_reason=finish, logprobs=None)
        return {
            **self._base("chat.completion.chunk" if self.chat else "text_completion"),
            "choices": [choice],
        }

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(obj), "choices": [], "usage": usage_object(usage)}
