"""OpenAI Responses request bodies -> ``GenerationRequest`` values, checked field by field.

``input`` is a string (one user message) or a list of items: messages (roles user, assistant,
system, developer; text parts ``input_text`` / ``output_text``), ``function_call`` items (an
assistant's earlier calls: consecutive ones form one assistant turn) and ``function_call_output``
items (tool results). ``reasoning`` items that clients send back are accepted and left out of
the prompt (chat templates drop earlier reasoning themselves). ``instructions`` is the system
message. ``reasoning.effort`` turns the template's thinking switch off (``none``, ``minimal``) or
on (any other effort). Built-in tools (web search, file search...) are refused by name; so is
every field the server cannot honour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
from mlxk.server.errors import HTTPError, invalid
from mlxk.server.values import NoEffect, array, boolean, check_known, integer, number, obj, string

IMPLEMENTED = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
                         "reasoning", "max_output_tokens", "temperature", "top_p", "stream", "stream_options",
                         "store", "previous_response_id", "metadata", "include"})  # fmt: skip
NO_EFFECT: NoEffect = {
    "user": (lambda v: isinstance(v, str), "a label of the end user, for OpenAI's abuse monitoring"),
    "safety_identifier": (lambda v: isinstance(v, str), "the newer name of user"),
    "service_tier": (lambda v: v in ("auto", "default"), "auto or default: there is one tier"),
    "prompt_cache_key": (lambda v: isinstance(v, str), "prompts share a prefix cache anyway"),
    "truncation": (lambda v: v == "disabled", "disabled: a prompt too long for the context is refused"),
    "background": (lambda v: v is False, "false: responses are generated while the request waits"),
    "top_logprobs": (lambda v: v == 0, "0: logprobs are not supported by this server"),
}
# what ``include`` may ask for: reasoning needs no encrypted copy here (nothing is kept by OpenAI,
# and reasoning items sent back are left out of the prompt anyway)
INCLUDABLE = frozenset({"reasoning.encrypted_content"})
ITEM_KEYS = {
    "message": frozenset({"type", "role", "content", "id", "status", "phase"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments", "id", "status"}),
    "function_call_output": frozenset({"type", "call_id", "output", "id", "status"}),
    "reasoning": frozenset({"type", "id", "summary", "content", "encrypted_content", "status"}),
}
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text")
THINKING_OFF = ("none", "minimal")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str | None
    request: GenerationRequest
    conversation: tuple[Message, ...]  # the messages but the instructions (what a store keeps)
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict[str, Any]  # the request's settings, as the response object repeats them


def parse(
    body: dict[str, Any], default_max_tokens: int, history: Callable[[str], tuple[Message, ...]]
) -> ResponsesRequest:
    """``history``: the conversation a ``previous_response_id`` continues (its input and output,
    without its instructions: they do not carry over), or the error that it is unknown."""
    check_known(body, IMPLEMENTED, NO_EFFECT)
    model = body.get("model")
    if model is not None:
        string(model, "model")
    include = array(body.get("include") or [], "include")
    for i, name in enumerate(include):
        if name not in INCLUDABLE:
            raise invalid(f"include[{i}]", f"'include' may name only {', '.join(sorted(INCLUDABLE))}")
    options = obj(body.get("stream_options") or {}, "stream_options")
    check_known(
        options,
        frozenset(),
        {"include_obfuscation": (lambda v: isinstance(v, bool), "a boolean")},
        "stream_options",
    )
    metadata = obj(body.get("metadata") or {}, "metadata")
    previous = body.get("previous_response_id")
    if previous is not None:
        string(previous, "previous_response_id")
    max_tokens = integer(body.get("max_output_tokens"), "max_output_tokens")
    temperature = number(body.get("temperature"), "temperature")
    top_p = number(body.get("top_p"), "top_p")
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"))
    parallel = boolean(body.get("parallel_tool_calls"), "parallel_tool_calls", True)
    text = _text(body.get("text"))
    reasoning, thinking = _reasoning(body.get("reasoning"))
    instructions = body.get("instructions")
    messages = [Message("system", string(instructions, "instructions"))] if instructions is not None else []
    conversation = [*(history(previous) if previous is not None else ()), *_input(body.get("input"))]
    messages += conversation
    try:
        if max_tokens is not None:
            BOUNDS["max_tokens"].check("max_output_tokens", max_tokens)
        request = GenerationRequest(
            messages=tuple(messages),
            max_tokens=default_max_tokens if max_tokens is None else max_tokens,
            sampling=Sampling(
                temperature=1.0 if temperature is None else temperature, top_p=1.0 if top_p is None else top_p
            ),
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=parallel,
            response_format=text[1],
            thinking=thinking,
        )
    except InvalidField as error:
        raise invalid(_param(error.param), error.message) from None
    echo = {
        "instructions": instructions, "max_output_tokens": max_tokens, "metadata": metadata,
        "parallel_tool_calls": parallel, "temperature": 1.0 if temperature is None else temperature,
        "top_p": 1.0 if top_p is None else top_p, "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [], "text": text[0], "reasoning": reasoning, "truncation": "disabled",
        "user": body.get("user"), "previous_response_id": previous,
    }  # fmt: skip
    return ResponsesRequest(
        model,
        request,
        tuple(conversation),
        boolean(body.get("stream"), "stream", False),
        boolean(body.get("store"), "store", False),
        previous,
        echo,
    )


def _param(pipeline_param: str) -> str:
    """The pipeline's name of a field, in Responses' terms."""
    if pipeline_param.startswith("tools[") and ".function." in pipeline_param:
        return pipeline_param.replace(".function.", ".")
    if pipeline_param.startswith("messages"):
        return "input"
    return {"max_tokens": "max_output_tokens", "response_format": "text.format"}.get(
        pipeline_param, pipeline_param
    )


def _text(value: Any) -> tuple[dict[str, Any], ResponseFormat]:
    """``text``: its echo and the answer's format (``text.format``, as chat's response_format)."""
    if value is None:
        return {"format": {"type": "text"}}, ResponseFormat()
    text = obj(value, "text")
    check_known(
        text,
        frozenset({"format"}),
        {"verbosity": (lambda v: v in (None, "medium"), "medium: the model's own")},
        "text",
    )
    fmt = text.get("format")
    if fmt is None:
        return {"format": {"type": "text"}}, ResponseFormat()
    fmt = obj(fmt, "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        check_known(fmt, frozenset({"type"}), {}, "text.format")
        return text, ResponseFormat(str(kind))
    if kind != "json_schema":
        raise invalid("text.format.type", "'text.format.type' must be text, json_object or json_schema")
    check_known(fmt, frozenset({"type", "name", "schema", "strict", "description"}), {}, "text.format")
    name = fmt.get("name")
    schema = obj(fmt.get("schema"), "text.format.schema")
    strict = boolean(fmt.get("strict"), "text.format.strict", False)
    return text, ResponseFormat(
        "json_schema", schema, string(name, "text.format.name") if name is not None else None, strict
    )


def _reasoning(value: Any) -> tuple[dict[str, Any], bool | None]:
    """``reasoning``: its echo and the thinking switch (None: not set, the model's default)."""
    if value is None:
        return {"effort": None, "summary": None}, None
    reasoning = obj(value, "reasoning")
    check_known(reasoning, frozenset({"effort", "summary", "generate_summary"}), {}, "reasoning")
    effort = reasoning.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid("reasoning.effort", f"'reasoning.effort' must be one of {', '.join(EFFORTS)}")
    for key in ("summary", "generate_summary"):  # the reasoning is sent whole, as its summary
        if reasoning.get(key) not in (None, "auto", "concise", "detailed"):
            raise invalid(f"reasoning.{key}", f"'reasoning.{key}' must be auto, concise or detailed")
    thinking = None if effort is None else effort not in THINKING_OFF
    return {"effort": effort, "summary": reasoning.get("summary")}, thinking


def _tools(value: Any) -> tuple[FunctionTool, ...]:
    if value is None:
        return ()
    tools = []
    for i, tool in enumerate(array(value, "tools")):
        param = f"tools[{i}]"
        tool = obj(tool, param)
        kind = tool.get("type")
        if kind != "function":  # web_search, file_search, code_interpreter, mcp...: OpenAI's own tools
            message = (
                f"'{param}' is the built-in tool {kind!r}, which this server does not have (function tools only)"
                if isinstance(kind, str)
                else f"'{param}' must be a function tool"
            )
            raise HTTPError(400, message, param=param, code="unsupported_tool")
        check_known(tool, frozenset({"type", "name", "description", "parameters", "strict"}), {}, param)
        description = tool.get("description")
        if description is not None:
            string(description, f"{param}.description")
        parameters = tool.get("parameters")
        boolean(tool.get("strict"), f"{param}.strict", False)
        tools.append(
            FunctionTool(
                string(tool.get("name"), f"{param}.name"),
                description,
                None if parameters is None else obj(parameters, f"{param}.parameters"),
            )
        )
    return tuple(tools)


def _tool_choice(value: Any) -> ToolChoice:
    if value is None:
        return "auto"
    if isinstance(value, str):
        return value  # the request value checks the word
    choice = obj(value, "tool_choice")
    if choice.get("type") != "function":
        raise invalid(
            "tool_choice", "'tool_choice' must be auto, none, required or {'type': 'function', 'name': ...}"
        )
    check_known(choice, frozenset({"type", "name"}), {}, "tool_choice")
    return NamedFunction(string(choice.get("name"), "tool_choice.name"))


def _input(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [Message("user", value)]
    items = array(value, "input")
    if not items:
        raise invalid("input", "'input' must be a string or a non-empty list of items")
    messages: list[Message] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        item = obj(item, param)
        kind = item.get("type", "message")
        keys = ITEM_KEYS.get(kind) if isinstance(kind, str) else None
        if keys is None:
            raise invalid(f"{param}.type", f"input items of type {kind!r} are not supported by this server")
        check_known(item, keys, {}, param)
        if kind == "message":
            role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise invalid(f"{param}.role", f"'{param}.role' must be user, assistant, system or developer")
            messages.append(Message(role, _content(item.get("content"), f"{param}.content")))
        elif kind == "function_call":
            arguments = item.get("arguments")
            if isinstance(arguments, dict):
                arguments = orjson.dumps(arguments).decode()
            call = ToolCall(
                string(item.get("call_id"), f"{param}.call_id"),
                string(item.get("name"), f"{param}.name"),
                string(arguments, f"{param}.arguments"),
            )
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # its text, then its calls: one turn
                messages[-1] = Message("assistant", last.content, (*last.tool_calls, call))
            else:
                messages.append(Message("assistant", "", (call,)))
        elif kind == "function_call_output":
            text = _text_of(item.get("output"), f"{param}.output")
            messages.append(
                Message("tool", text, tool_call_id=string(item.get("call_id"), f"{param}.call_id"))
            )
    return messages


def _content(value: Any, param: str) -> str | tuple[ContentPart, ...]:
    if isinstance(value, str):
        return value
    parts: list[ContentPart] = []
    for i, part in enumerate(array(value, param)):
        where = f"{param}[{i}]"
        part = obj(part, where)
        kind = part.get("type")
        if kind in TEXT_PARTS:
            check_known(part, frozenset({"type", "text", "annotations", "logprobs"}), {}, where)
            parts.append(TextPart(string(part.get("text"), f"{where}.text")))
        elif kind == "input_image":
            check_known(part, frozenset({"type", "image_url", "detail", "file_id"}), {}, where)
            parts.append(ImagePart(string(part.get("image_url"), f"{where}.image_url")))
        else:
            raise invalid(f"{where}.type", f"content parts of type {kind!r} are not supported by this server")
    return tuple(parts)


def _text_of(value: Any, param: str) -> str:
    content = _content(value, param)
    if isinstance(content, str):
        return content
    if any(isinstance(part, ImagePart) for part in content):
        raise invalid(param, "tool outputs are text here")
    return "".join(part.text for part in content if isinstance(part, TextPart))
