"""A request -> the prompt's token ids, through the model's own chat template.

Messages go to the template in the shapes Hugging Face chat templates expect: tools as OpenAI
function entries (``tools=``), an assistant's earlier calls as ``tool_calls`` whose
``function.arguments`` is a dict (what most templates index or serialize themselves), tool results
as ``tool`` messages with their ``tool_call_id``, and the thinking switch as ``enable_thinking``
(mlx-lm's tokenizer renames it for templates that call it otherwise). A model without a template
(a base model) gets the turns as plain text. The end of the rendered text is kept: an output
parser needs to know whether the answer starts inside a reasoning block or a channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mlxk.errors import ValidationError
from mlxk.generation.past_reasoning import NOWHERE, ReasoningPlace, place_reasoning, reasoning_place
from mlxk.generation.request import GenerationRequest, Message, NamedFunction

PROMPT_TAIL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: list[int]
    tail: str  # the last characters of the text the tokens encode


def render(tokenizer: Any, request: GenerationRequest, *, chat_template: bool) -> Prompt:
    """The prompt of ``request`` for a model with ``tokenizer`` (mlx-lm's tokenizer wrapper);
    ``chat_template``: whether the model has one."""
    if request.prompt is not None:
        bos = getattr(tokenizer, "bos_token", None)
        add_special = bos is None or not request.prompt.startswith(bos)
        tokens = tokenizer.encode(request.prompt, add_special_tokens=add_special)
        return Prompt([int(t) for t in tokens], request.prompt[-PROMPT_TAIL_CHARS:])
    if not chat_template:  # a base model: the turns as plain text
        if request.tools or request.thinking is not None or request.template_kwargs:
            raise ValidationError("this model has no chat template: it takes no tools or template options")
        for index, message in enumerate(request.messages):  # the turns as text have no place for it
            if message.reasoning:
                place_reasoning({}, message.reasoning, NOWHERE, index)
        text = "\n\n".join(m.text for m in request.messages)
        return Prompt([int(t) for t in tokenizer.encode(text)], text[-PROMPT_TAIL_CHARS:])
    options: dict[str, Any] = dict(request.template_kwargs)
    tools = offered_tools(request)
    if tools:
        options["tools"] = tools
    if request.thinking is not None:
        options["enable_thinking"] = request.thinking
    source = template_source(tokenizer, tools=bool(tools))
    named = isinstance(getattr(tokenizer, "chat_template", None), dict)
    # mlx-lm's own template (``chat_template_type``: a Python function), which renders instead of any
    # Jinja one: written for OpenAI's message shape (DeepSeek V3.2's parses the arguments as JSON text)
    own = getattr(tokenizer, "_chat_template", None)
    if own is not None:
        place, as_text, ours = reasoning_place(own), True, False
    else:
        place, as_text = reasoning_place(source), pastes_calls(source)
        ours = as_text
    messages = [
        template_message(m, i, place=place, calls_as_text=as_text) for i, m in enumerate(request.messages)
    ]
    try:
        if ours:  # transformers drops keys whose value is None, and these templates need content: null
            text = _render_mutable(tokenizer, source, messages, options)
        else:
            text = tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=False,
                **options,
                **({"chat_template": source} if named else {}),
            )
    except Exception as exc:
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError

        if isinstance(exc, SecurityError):  # a template that changes its own lists (Kimi K2's)
            text = _render_mutable(tokenizer, source, messages, options)
        elif isinstance(exc, TemplateError):  # the template's own raise_exception: a message for the caller
            raise ValidationError(f"the model's chat template refused the conversation: {exc}") from None
        else:
            raise
    # the template wrote the special tokens itself: encoding adds none (as tokenize=True would)
    tokens = tokenizer.encode(text, add_special_tokens=False)
    return Prompt([int(t) for t in tokens], text[-PROMPT_TAIL_CHARS:])


def template_source(tokenizer: Any, *, tools: bool) -> str | None:
    """The source of the chat template that renders a request (with ``tools`` offered or not). A
    tokenizer_config.json may name several templates (a list of ``{"name", "template"}``, which
    transformers reads as a dict): as transformers does, a request with tools gets ``tool_use``
    where there is one, any other ``default``."""
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):
        named = source.get("tool_use") if tools else None
        source = named if named is not None else source.get("default")
    return source if isinstance(source, str) else None


def _render_mutable(
    tokenizer: Any, source: str | None, messages: list[dict[str, Any]], options: dict[str, Any]
) -> str:
    """The template rendered by us, with the messages as they are, in a sandbox that lets it change
    lists it made itself. Transformers renders templates in an immutable sandbox, where Kimi K2's
    templates (which append the ids of pending tool calls to a list) fail as soon as a conversation
    holds a tool call, and drops message keys whose value is None. The template's helpers
    (``raise_exception``, ``tojson``, ...) are transformers' own."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import SandboxedEnvironment
    from transformers.utils.chat_template_utils import _compile_jinja_template

    if source is None:  # mlx-lm's own template (a Python function), which cannot change a list
        raise ValidationError("the model's chat template changes its own lists and cannot be rendered here")
    helpers = _compile_jinja_template(source).environment
    env = SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters.update(helpers.filters)
    env.globals.update(helpers.globals)
    special = getattr(tokenizer, "special_tokens_map", None) or {}
    variables = {**special, **options, "messages": messages, "add_generation_prompt": True}
    try:
        return str(env.from_string(source).render(**variables))
    except Exception as exc:
        raise ValidationError(f"the model's chat template refused the conversation: {exc}") from None


def offered_tools(request: GenerationRequest) -> list[dict[str, Any]]:
    """The tools the template shows the model: none for ``tool_choice: none``, only the named one
    when ``tool_choice`` names a function, else all."""
    choice = request.tool_choice
    if choice == "none":
        return []
    if isinstance(choice, NamedFunction):
        return [t.as_openai() for t in request.tools if t.name == choice.name]
    return [t.as_openai() for t in request.tools]


def template_message(
    message: Message, index: int = 0, *, place: ReasoningPlace = NOWHERE, calls_as_text: bool = False
) -> dict[str, Any]:
    """``message`` (at ``index`` in the conversation) as chat templates take it: its reasoning where
    ``place`` says; with ``calls_as_text``, its calls as OpenAI sends them (see ``pastes_calls``)."""
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments if calls_as_text else _arguments(call.arguments),
                },
            }
            for call in message.tool_calls
        ]
        if calls_as_text and not message.text:
            out["content"] = None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning:
        place_reasoning(out, message.reasoning, place, index)
    return out


# `... + tool['function']['arguments'] + ...`: the template pastes the arguments into its text
_PASTED_ARGUMENTS = re.compile(r"\[\s*['\"]arguments['\"]\s*\]\s*\+")


@lru_cache(maxsize=32)
def pastes_calls(template: str | None) -> bool:
    """Whether ``template`` pastes a call's arguments into its text as they are, as DeepSeek R1's
    does: such templates were written for OpenAI's own message shape (arguments as JSON text, and
    ``content: null`` on a message of calls only, which is the only one they render calls for);
    the others read the arguments as an object and take the empty string for no content."""
    return isinstance(template, str) and _PASTED_ARGUMENTS.search(template) is not None


def _arguments(text: str) -> Any:
    """A call's arguments as a dict when they are a JSON object (templates serialize or iterate
    them), else the text as it came (a template may still print it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text
