"""What a caller asks of the pipeline, as plain values (no mlx types), checked once when built.

Every surface (``mlxk run``'s options, the HTTP schemas) turns its own syntax into these values;
the bounds of each number live in one table, ``BOUNDS``, and are checked here, so the CLI and the
server cannot disagree. A value that is out of bounds, or asks for what the pipeline cannot do yet,
raises ``InvalidField`` naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mlxk.errors import InvalidField


@dataclass(frozen=True, slots=True)
class Bound:
    """The accepted range of one number: ``[low, high]``, or ``(low, high]`` when ``low_open``."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        low, high = (f"{x}" if self.integer else f"{x:g}" for x in (self.low, self.high))
        return f"{'(' if self.low_open else '['}{low}, {high}]"

    def check(self, name: str, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidField(name, f"{name} must be a number")
        if self.integer and not isinstance(value, int):
            raise InvalidField(name, f"{name} must be a whole number")
        if not math.isfinite(value):
            raise InvalidField(name, f"{name} must be a finite number")
        if value < self.low or value > self.high or (self.low_open and value == self.low):
            raise InvalidField(name, f"{name} must be in {self.describe()}, not {value}")


# The one table of bounds, for `mlxk run`'s options and the HTTP fields alike: where the two
# disagreed before, the narrower range (OpenAI's, for the sampling fields it defines) was kept.
BOUNDS: Mapping[str, Bound] = {
    "max_tokens": Bound(1, 1_000_000, integer=True),
    "temperature": Bound(0.0, 2.0),
    "top_p": Bound(0.0, 1.0),  # 0: only the most likely token, as OpenAI means it
    "top_k": Bound(0, 1_000_000, integer=True),  # 0: off
    "min_p": Bound(0.0, 1.0),
    "repetition_penalty": Bound(0.01, 10.0),
    "presence_penalty": Bound(-2.0, 2.0),
    "frequency_penalty": Bound(-2.0, 2.0),
    "seed": Bound(-(2**63), 2**63 - 1, integer=True),  # OpenAI takes any 64-bit integer
    "top_logprobs": Bound(0, 20, integer=True),
    "n": Bound(1, 8, integer=True),  # choices of one request, each a sequence of the batch
}
MAX_STOPS = 16
MAX_STOP_LENGTH = 256
ROLES = ("system", "user", "assistant", "tool")
TOOL_CHOICES = ("auto", "none", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
# OpenAI's rule for function names; templates paste them into the prompt as they are
TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# variables the pipeline itself gives the chat template: a request may not override them
RESERVED_TEMPLATE_KEYS = frozenset(
    {"messages", "tools", "documents", "add_generation_prompt", "tokenize", "return_dict", "enable_thinking"}
)


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                BOUNDS[f.name].check(f.name, value)


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, as OpenAI's ``image_url`` part carries it (an http(s) or data: URL). The value
    exists so that protocols can say what they were given; the pipeline refuses it for now."""

    url: str


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier in the conversation, sent back by the client."""

    id: str
    name: str
    arguments: str  # JSON text, as the client received it


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str | tuple[ContentPart, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()  # assistant messages only
    tool_call_id: str | None = None  # tool messages: the call this is the result of
    name: str | None = None  # the speaker's name, or the function a tool result comes from
    reasoning: str | None = None  # assistant messages: the reasoning that came with the answer

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call, in the terms of OpenAI's ``tools`` entries."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None  # a JSON Schema object

    def as_openai(self) -> dict[str, Any]:
        """The shape chat templates (and OpenAI clients) expect."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class NamedFunction:
    """``tool_choice`` naming the one function to call."""

    name: str


ToolChoice = str | NamedFunction  # "auto" | "none" | "required", or a named function


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: str = "text"  # text | json_object | json_schema
    schema: Mapping[str, Any] | bool | None = None  # json_schema's schema (true/false: any, none)
    name: str | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either chat ``messages`` (rendered with the model's chat template) or a raw ``prompt``."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    max_tokens: int = 512
    sampling: Sampling = field(default_factory=Sampling)
    stops: tuple[str, ...] = ()
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True  # False: the answer has at most one call
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    # the template's thinking switch; None: not set, and mlx-lm then sets it on when the vocabulary has
    # thinking tokens (<think> and </think>, ...), else off
    thinking: bool | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)  # more chat template variables
    logprobs: int | None = None  # report each token's log-probability, with this many alternatives

    def __post_init__(self) -> None:
        if self.prompt is None and not self.messages:
            raise InvalidField("messages", "nothing to generate from: no prompt and no messages")
        if self.prompt is not None and self.messages:
            raise InvalidField("prompt", "a request has messages or a prompt, not both")
        BOUNDS["max_tokens"].check("max_tokens", self.max_tokens)
        _check_stops(self.stops)
        for index, message in enumerate(self.messages):
            _check_message(index, message)
        _check_tools(self)
        if self.response_format.type not in RESPONSE_FORMATS:
            raise InvalidField("response_format", f"response_format type must be one of {RESPONSE_FORMATS}")
        if self.logprobs is not None:
            BOUNDS["top_logprobs"].check("top_logprobs", self.logprobs)
        fmt = self.response_format
        if fmt.type == "json_schema" and not isinstance(fmt.schema, Mapping | bool):
            raise InvalidField(
                "response_format", "response_format json_schema needs json_schema.schema, a JSON Schema"
            )
        reserved = sorted(RESERVED_TEMPLATE_KEYS & set(self.template_kwargs))
        if reserved:
            raise InvalidField(
                "chat_template_kwargs", f"chat template variables set by the server: {', '.join(reserved)}"
            )
        if self.prompt is not None and (self.tools or self.thinking is not None or self.template_kwargs):
            raise InvalidField(
                "prompt", "tools and chat template options need messages (a raw prompt has no template)"
            )


def _check_stops(stops: tuple[str, ...]) -> None:
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise InvalidField(
            "stop", f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_LENGTH} characters"
        )
    if any(not s for s in stops):
        raise InvalidField("stop", "a stop string must not be empty")


def _check_message(index: int, message: Message) -> None:
    where = f"messages[{index}]"
    if message.role not in ROLES:
        raise InvalidField(f"{where}.role", f"each message needs a role among {', '.join(ROLES)}")
    if not isinstance(message.content, str) and any(isinstance(p, ImagePart) for p in message.content):
        raise InvalidField(f"{where}.content", "image content parts are not supported (text models only)")
    if message.tool_calls and message.role != "assistant":
        raise InvalidField(f"{where}.tool_calls", "only assistant messages carry tool_calls")
    if message.reasoning and message.role != "assistant":
        raise InvalidField(f"{where}.reasoning_content", "only assistant messages carry reasoning")
    if message.tool_call_id is not None and message.role != "tool":
        raise InvalidField(f"{where}.tool_call_id", "only tool messages carry a tool_call_id")


def _check_tools(request: GenerationRequest) -> None:
    names = [tool.name for tool in request.tools]
    for index, name in enumerate(names):
        if not TOOL_NAME.fullmatch(name):
            raise InvalidField(
                f"tools[{index}].function.name", "a function name is 1-64 letters, digits, '_', '.' or '-'"
            )
    if len(set(names)) != len(names):
        raise InvalidField("tools", "function names must be unique")
    choice = request.tool_choice
    if isinstance(choice, NamedFunction):
        if choice.name not in names:
            raise InvalidField("tool_choice", f"tool_choice names {choice.name!r}, which is not in tools")
    elif choice not in TOOL_CHOICES:
        raise InvalidField(
            "tool_choice", f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a function"
        )
    elif choice == "required" and not names:
        raise InvalidField("tool_choice", "tool_choice 'required' needs tools")
