"""Anthropic Messages request bodies -> ``GenerationRequest`` values, checked field by field.

The conversation maps onto the pipeline's messages: ``system`` (a string or text blocks) is the
system message; a user turn's ``tool_result`` blocks become ``tool`` messages (before the turn's
text, as Anthropic orders them), an assistant turn's ``tool_use`` blocks its ``tool_calls`` (the
``input`` object as JSON text). Earlier ``thinking`` blocks are accepted and left out of the prompt
(chat templates drop earlier reasoning themselves; their signatures mean nothing here).
``cache_control`` is accepted anywhere Anthropic takes it, without effect: prompts share a prefix
cache anyway. Anything else the server cannot honour is refused by name.
"""

from __future__ import annotations

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
from mlxk.server.values import NoEffect, array, boolean, check_known, in_range, integer, number, obj, string

CONVERSATION = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"})
MESSAGES = frozenset(
    {*CONVERSATION, "max_tokens", "stop_sequences", "temperature", "top_p", "top_k", "stream"}
)
NO_EFFECT: NoEffect = {
    "cache_control": (
        lambda v: v is None or isinstance(v, dict),
        "a cache breakpoint: prompts share a prefix cache anyway",
    ),
    "metadata": (
        lambda v: isinstance(v, dict),
        "labels of the request (metadata.user_id) for Anthropic's records",
    ),
    "service_tier": (lambda v: v in ("auto", "standard_only"), "auto or standard_only: there is one tier"),
}
CACHE_CONTROL: NoEffect = {
    "cache_control": (
        lambda v: v is None or isinstance(v, dict),
        "a cache breakpoint: prompts share a prefix cache anyway",
    ),
}
# what the answers' own blocks carry, so that a client may send them back as they came
BLOCK_NO_EFFECT: NoEffect = {
    **CACHE_CONTROL,
    "caller": (lambda v: v is None or v == {"type": "direct"}, "direct (the model's own call)"),
    "toolset_name": (lambda v: v is None, "null: tools are not grouped here"),
}
# the keys each content block may have, beyond type and cache_control
BLOCK_KEYS = {
    "text": frozenset({"type", "text", "citations"}),
    "image": frozenset({"type", "source"}),
    "tool_use": frozenset({"type", "id", "name", "input"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
TOOL_KEYS = frozenset({"type", "name", "description", "input_schema"})
ROLES = ("user", "assistant")
DEFAULT_TEMPERATURE = 1.0  # Anthropic's


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str | None
    request: GenerationRequest
    stream: bool


def parse_messages(body: dict[str, Any]) -> MessagesRequest:
    """A ``POST /v1/messages`` body."""
    check_known(body, MESSAGES, NO_EFFECT)
    if "max_tokens" not in body:
        raise invalid("max_tokens", "'max_tokens' is required")
    max_tokens = integer(body["max_tokens"], "max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens", "'max_tokens' is required")
    stops = array(body.get("stop_sequences") or [], "stop_sequences")
    return MessagesRequest(
        _model(body),
        _request(
            body,
            max_tokens=max_tokens,
            sampling=_sampling(body),
            stops=tuple(string(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)),
        ),
        boolean(body.get("stream"), "stream", False),
    )


def parse_count(body: dict[str, Any]) -> tuple[str | None, GenerationRequest]:
    """A ``POST /v1/messages/count_tokens`` body: the conversation without the generation's settings."""
    check_known(body, CONVERSATION, {key: NO_EFFECT[key] for key in ("cache_control",)})
    return _model(body), _request(body)


def _model(body: dict[str, Any]) -> str | None:
    if "model" not in body:
        raise invalid("model", "'model' is required")
    return string(body["model"], "model")


def _request(body: dict[str, Any], **generation: Any) -> GenerationRequest:
    tools = _tools(body.get("tools"))
    choice, parallel = _tool_choice(body.get("tool_choice"))
    try:
        if generation.get("max_tokens") is not None:
            BOUNDS["max_tokens"].check("max_tokens", generation["max_tokens"])
        return GenerationRequest(
            messages=_conversation(body),
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=parallel,
            thinking=_thinking(body.get("thinking"), generation.get("max_tokens")),
            response_format=_output_format(body.get("output_config")),
            **{key: value for key, value in generation.items() if value is not None},
        )
    except InvalidField as error:
        raise invalid(_param(error.param), error.message) from None


def _param(pipeline_param: str) -> str:
    """The pipeline's name of a field, in Messages' terms."""
    if pipeline_param.startswith("tools[") and ".function." in pipeline_param:
        return pipeline_param.replace(".function.", ".")
    if pipeline_param.startswith("messages["):  # its index counts the system and tool messages
        return "messages"
    return {"stop": "stop_sequences", "response_format": "output_config.format"}.get(
        pipeline_param, pipeline_param
    )


def _sampling(body: dict[str, Any]) -> Sampling:
    temperature = in_range(number(body.get("temperature"), "temperature"), "temperature", 0.0, 1.0)
    top_p = number(body.get("top_p"), "top_p")
    top_k = integer(body.get("top_k"), "top_k")
    try:
        return Sampling(
            temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            top_k=top_k or 0,
        )
    except InvalidField as error:
        raise invalid(error.param, error.message) from None


def _thinking(value: Any, max_tokens: int | None) -> bool | None:
    """``thinking``: enabled (with a budget) turns the template's thinking switch on; disabled, or
    no ``thinking``, turns it off (Anthropic's default); adaptive sets none (the model's default, as
    a chat request without the switch). The budget is checked, not enforced apart: ``max_tokens``
    caps the thinking and the answer together."""
    if value is None:
        return False
    thinking = obj(value, "thinking")
    kind = thinking.get("type")
    display: NoEffect = {
        "display": (lambda v: v in (None, "summarized"), "summarized: the thinking is sent as it is")
    }
    if kind == "disabled":
        check_known(thinking, frozenset({"type"}), {}, "thinking")
        return False
    if kind == "adaptive":
        check_known(thinking, frozenset({"type"}), display, "thinking")
        return None
    if kind != "enabled":
        raise invalid("thinking.type", "'thinking.type' must be enabled, adaptive or disabled")
    check_known(thinking, frozenset({"type", "budget_tokens"}), display, "thinking")
    budget = integer(thinking.get("budget_tokens"), "thinking.budget_tokens")
    if budget is None or budget < 1:
        raise invalid("thinking.budget_tokens", "'thinking.budget_tokens' must be a positive integer")
    if max_tokens is not None and budget >= max_tokens:
        raise invalid("thinking.budget_tokens", "'thinking.budget_tokens' must be less than max_tokens")
    return True


def _output_format(value: Any) -> ResponseFormat:
    """``output_config.format`` (a JSON schema the answer must follow), as chat's response_format."""
    if value is None:
        return ResponseFormat()
    config = obj(value, "output_config")
    check_known(config, frozenset({"format"}), {}, "output_config")
    fmt = config.get("format")
    if fmt is None:
        return ResponseFormat()
    fmt = obj(fmt, "output_config.format")
    check_known(fmt, frozenset({"type", "schema"}), {}, "output_config.format")
    if fmt.get("type") != "json_schema":
        raise invalid("output_config.format.type", "'output_config.format.type' must be json_schema")
    return ResponseFormat("json_schema", obj(fmt.get("schema"), "output_config.format.schema"))


def _text_blocks(value: Any, param: str) -> str:
    """A string, or a list of text blocks (their texts joined)."""
    if isinstance(value, str):
        return value
    texts = []
    for i, block in enumerate(array(value, param)):
        where = f"{param}[{i}]"
        block = obj(block, where)
        if block.get("type") != "text":
            raise invalid(f"{where}.type", f"'{where}' must be a text block")
        _check_block(block, where)
        texts.append(string(block.get("text"), f"{where}.text"))
    return "\n".join(texts)


def _check_block(block: dict[str, Any], where: str) -> None:
    kind = block.get("type")
    keys = BLOCK_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise invalid(f"{where}.type", f"content blocks of type {kind!r} are not supported by this server")
    check_known(block, keys, BLOCK_NO_EFFECT, where)
    if kind == "text" and block.get("citations") not in (None, []):
        raise invalid(f"{where}.citations", "citations are not supported by this server")


def _conversation(body: dict[str, Any]) -> tuple[Message, ...]:
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        messages.append(Message("system", _text_blocks(system, "system")))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "'messages' must be a non-empty list")
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        item = obj(item, where)
        check_known(item, frozenset({"role", "content"}), {}, where)
        role = item.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role", f"'{where}.role' must be user or assistant")
        content = item.get("content")
        if isinstance(content, str):
            messages.append(Message(role, content))
        elif role == "user":
            messages.extend(_user_turn(array(content, f"{where}.content"), f"{where}.content"))
        else:
            messages.append(_assistant_turn(array(content, f"{where}.content"), f"{where}.content"))
    if raw[-1].get("role") == "assistant":  # Anthropic continues such a turn; the templates start a new one
        raise invalid(
            f"messages[{len(raw) - 1}]",
            "a conversation ending with an assistant turn (a prefill) is not supported",
        )
    return tuple(messages)


def _user_turn(blocks: list[Any], where: str) -> list[Message]:
    results: list[Message] = []
    parts: list[ContentPart] = []
    for i, block in enumerate(blocks):
        param = f"{where}[{i}]"
        block = obj(block, param)
        _check_block(block, param)
        kind = block["type"]
        if kind == "text":
            parts.append(TextPart(string(block.get("text"), f"{param}.text")))
        elif kind == "image":
            parts.append(ImagePart(_image_url(block.get("source"), f"{param}.source")))
        elif kind == "tool_result":
            results.append(_tool_result(block, param))
        else:
            raise invalid(f"{param}.type", f"a user turn takes no {kind} blocks")
    if parts:
        results.append(Message("user", tuple(parts)))
    return results


def _tool_result(block: dict[str, Any], param: str) -> Message:
    content = block.get("content")
    text = "" if content is None else _text_blocks(content, f"{param}.content")
    if boolean(block.get("is_error"), f"{param}.is_error", False):
        text = f"Error: {text}"  # the model learns that the call failed the only way a template lets it
    return Message("tool", text, tool_call_id=string(block.get("tool_use_id"), f"{param}.tool_use_id"))


def _image_url(source: Any, param: str) -> str:
    source = obj(source, param)
    if source.get("type") == "url":
        return string(source.get("url"), f"{param}.url")
    if source.get("type") == "base64":
        media = string(source.get("media_type"), f"{param}.media_type")
        return f"data:{media};base64,{string(source.get('data'), f'{param}.data')}"
    raise invalid(f"{param}.type", "an image source is base64 or url")


def _assistant_turn(blocks: list[Any], where: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(blocks):
        param = f"{where}[{i}]"
        block = obj(block, param)
        _check_block(block, param)
        kind = block["type"]
        if kind == "text":
            texts.append(string(block.get("text"), f"{param}.text"))
        elif kind == "tool_use":
            arguments = orjson.dumps(obj(block.get("input"), f"{param}.input")).decode()
            calls.append(
                ToolCall(
                    string(block.get("id"), f"{param}.id"),
                    string(block.get("name"), f"{param}.name"),
                    arguments,
                )
            )
        elif kind not in ("thinking", "redacted_thinking"):  # earlier reasoning: not in the prompt
            raise invalid(f"{param}.type", f"an assistant turn takes no {kind} blocks")
    return Message("assistant", "".join(texts), tool_calls=tuple(calls))


def _tools(value: Any) -> tuple[FunctionTool, ...]:
    if value is None:
        return ()
    tools = []
    for i, tool in enumerate(array(value, "tools")):
        param = f"tools[{i}]"
        tool = obj(tool, param)
        kind = tool.get("type")
        if kind not in (None, "custom"):  # Anthropic's own tools (web search, bash, the editor...)
            raise HTTPError(
                400,
                f"'{param}' is Anthropic's built-in tool {kind!r}, which this server does not have; "
                "describe it as a tool with an input_schema instead",
                param=param,
                code="unsupported_tool",
            )
        check_known(tool, TOOL_KEYS, CACHE_CONTROL, param)
        description = tool.get("description")
        if description is not None:
            string(description, f"{param}.description")
        tools.append(
            FunctionTool(
                string(tool.get("name"), f"{param}.name"),
                description,
                obj(tool.get("input_schema"), f"{param}.input_schema"),
            )
        )
    return tuple(tools)


def _tool_choice(value: Any) -> tuple[ToolChoice, bool]:
    """``tool_choice`` and whether parallel calls are allowed (``disable_parallel_tool_use``)."""
    if value is None:
        return "auto", True
    choice = obj(value, "tool_choice")
    kind = str(choice.get("type"))
    keys = {"auto": {"type", "disable_parallel_tool_use"}, "any": {"type", "disable_parallel_tool_use"},
            "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}.get(kind)  # fmt: skip
    if keys is None:
        raise invalid("tool_choice.type", "'tool_choice.type' must be auto, any, tool or none")
    check_known(choice, frozenset(keys), {}, "tool_choice")
    parallel = not boolean(
        choice.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use", False
    )
    if kind == "tool":
        return NamedFunction(string(choice.get("name"), "tool_choice.name")), parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel
