"""What a request's answer must be, as grammar text (llguidance's Lark dialect), or None.

- ``tool_choice`` required, or a named function, where the model's output format has a grammar
  here (``CALL_GRAMMARS``): one call (``parallel_tool_calls`` false) or several, of the offered
  tools (the named one only), in the model's own call format, arguments valid for the tool;
- ``response_format`` json_object / json_schema: one JSON value (an object for json_object);
  with ``tool_choice: auto`` and tools offered, a call (same grammar) is allowed instead;
- anything else: nothing to enforce.
Formats without a call grammar here keep their calls parsed as written (never enforced).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlxk.generation.grammar.lark import Lark, call_object, json_value, parameters
from mlxk.generation.request import FunctionTool, GenerationRequest, NamedFunction

JSON_OBJECT: dict[str, Any] = {"type": "object"}
# the reasoning block of each format that has one (open, close); the model's vocabulary decides
# between the two Mistral spellings
REASONING: Mapping[str, tuple[tuple[str, str], ...]] = {
    "mistral": (("[THINK]", "[/THINK]"), ("<think>", "</think>")),
    "harmony": (),
    "llama3_json": (),
    "llama4_pythonic": (),
}
DEFAULT_REASONING = (("<think>", "</think>"),)


def _hermes(lark: Lark, tools: list[FunctionTool], parallel: bool) -> str:
    call = f'{lark.lit("<tool_call>")} "\\n" tool "\\n" {lark.lit("</tool_call>")}'
    start = 'call ("\\n" call)*' if parallel else "call"
    alternatives = " | ".join(f"tool_{i}" for i in range(len(tools)))
    rules = [f"start: {start}", f"call: {call}", f"tool: {alternatives}"]
    rules += [
        f"tool_{i}: {json_value(call_object(t.name, parameters(t.parameters)))}" for i, t in enumerate(tools)
    ]
    return "\n".join(rules)


def _llama3(lark: Lark, tools: list[FunctionTool], parallel: bool) -> str:
    # one bare JSON object per answer: the templates of Llama 3.x ask for one call at a time
    alternatives = " | ".join(f"tool_{i}" for i in range(len(tools)))
    rules = [f"start: {alternatives}"]
    rules += [
        f"tool_{i}: {json_value(call_object(t.name, parameters(t.parameters), key='parameters'))}"
        for i, t in enumerate(tools)
    ]
    return "\n".join(rules)


def _mistral(lark: Lark, tools: list[FunctionTool], parallel: bool) -> str:
    if lark.has("[ARGS]"):  # the newer layout: [TOOL_CALLS]NAME[ARGS]{...} per call
        rules = [f"start: {'call+' if parallel else 'call'}", f"call: {lark.lit('[TOOL_CALLS]')} tool"]
        rules.append("tool: " + " | ".join(f"tool_{i}" for i in range(len(tools))))
        rules += [
            f"tool_{i}: {lark.lit(t.name)} {lark.lit('[ARGS]')} {json_value(parameters(t.parameters))}"
            for i, t in enumerate(tools)
        ]
        return "\n".join(rules)
    # the older one: [TOOL_CALLS] and a JSON list of call objects
    calls = [call_object(t.name, parameters(t.parameters)) for t in tools]
    items: dict[str, Any] = {"anyOf": calls} if len(calls) > 1 else calls[0]
    schema = {"type": "array", "items": items, "minItems": 1, **({} if parallel else {"maxItems": 1})}
    return f"start: {lark.lit('[TOOL_CALLS]')} {json_value(schema)}"


CallGrammar = Callable[[Lark, list[FunctionTool], bool], str]
CALL_GRAMMARS: Mapping[str, CallGrammar] = {"hermes": _hermes, "llama3_json": _llama3, "mistral": _mistral}


def _called_tools(request: GenerationRequest) -> list[FunctionTool]:
    choice = request.tool_choice
    if isinstance(choice, NamedFunction):
        return [t for t in request.tools if t.name == choice.name]
    return list(request.tools) if choice != "none" else []


def request_grammar(
    request: GenerationRequest, output_format: str | None, lark: Lark
) -> tuple[str, str] | None:
    """(grammar text, the request field it enforces) for ``request``, or None."""
    fmt = request.response_format
    answer = None
    if fmt.type == "json_object":
        answer = json_value(JSON_OBJECT)
    elif fmt.type == "json_schema":
        answer = json_value(fmt.schema if fmt.schema is not None else {})
    calls = CALL_GRAMMARS.get(output_format or "") if request.prompt is None else None
    tools = _called_tools(request)
    forced = request.tool_choice == "required" or isinstance(request.tool_choice, NamedFunction)
    if calls is not None and tools and (forced or answer is not None):
        grammar = calls(lark, tools, request.parallel_tool_calls)
        if forced or answer is None:
            return grammar, "tool_choice"
        # a call, or the answer in the asked format
        renamed = grammar.replace("start:", "calls:", 1)
        return f"start: calls | answer\nanswer: {answer}\n{renamed}", "response_format"
    if answer is not None:
        return f"start: {answer}", "response_format"
    return None


def reasoning_markers(output_format: str | None, added: Mapping[str, int]) -> tuple[str, str] | None:
    """The model's reasoning block (open, close) where its format has one: the spelling its
    vocabulary has as tokens of their own, else the first (found in text, token by token)."""
    pairs = REASONING.get(output_format or "", DEFAULT_REASONING)
    return next((pair for pair in pairs if pair[1] in added), pairs[0] if pairs else None)


def starts_in_reasoning(prompt_tail: str, markers: tuple[str, str]) -> bool:
    """The prompt leaves the model inside a reasoning block (it opened one and did not close it)."""
    opened, closed = prompt_tail.rfind(markers[0]), prompt_tail.rfind(markers[1])
    return opened >= 0 and opened > closed
