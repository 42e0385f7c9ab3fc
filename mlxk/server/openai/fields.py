"""Which request fields the server takes: nothing is silently ignored.

Each field of a request is one of three kinds:
- implemented: it does what OpenAI documents (``IMPLEMENTED``);
- accepted without effect, because here it has none to have (``NO_EFFECT``: ``user`` and
  ``metadata`` only label a request for OpenAI's own records, ``store: false`` asks for what the
  server does anyway); a value that would ask for more (``store: true``, a ``service_tier`` we do
  not have) is refused;
- anything else: refused with a 400 that names the field (``unsupported_field``), so that a client
  never believes an option took effect when it did not.
The clients people use send only implemented fields by default (measured: the ``openai`` SDK,
``langchain-openai``'s ``ChatOpenAI`` with ``bind_tools`` and streaming, ``openai-agents``' chat
completions model with its model settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlxk.server.values import NoEffect, check_known

SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
            "frequency_penalty", "seed")  # fmt: skip
COMMON = ("model", "stream", "stream_options", "max_tokens", "stop", "n", "logprobs", *SAMPLING)
IMPLEMENTED: Mapping[str, frozenset[str]] = {
    "chat": frozenset(
        {
            *COMMON,
            "messages",
            "max_completion_tokens",
            "top_logprobs",
            "response_format",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "chat_template_kwargs",
            "enable_thinking",
        }
    ),
    "completions": frozenset({*COMMON, "prompt", "echo", "suffix", "best_of", "response_format"}),
}


# field -> (which values have no effect here, what the field is for)
NO_EFFECT: NoEffect = {
    "user": (lambda v: isinstance(v, str), "a label of the end user, for OpenAI's abuse monitoring"),
    "safety_identifier": (lambda v: isinstance(v, str), "the newer name of user"),
    "metadata": (lambda v: isinstance(v, dict), "labels for OpenAI's stored completions"),
    "store": (lambda v: v is False, "false: nothing is stored (true asks for stored completions)"),
    "service_tier": (lambda v: v in ("auto", "default"), "auto or default: there is one tier"),
    "prompt_cache_key": (lambda v: isinstance(v, str), "prompts share a prefix cache anyway"),
    "modalities": (lambda v: v == ["text"], '["text"]: text is all that is generated'),
}
EMBEDDINGS: frozenset[str] = frozenset({"model", "input", "encoding_format", "dimensions"})


def check_fields(body: dict[str, Any], endpoint: str) -> None:
    """Raises HTTPError (400, the field named) for a field this endpoint neither implements nor may
    ignore, or a no-effect field whose value would ask for an effect."""
    implemented = EMBEDDINGS if endpoint == "embeddings" else IMPLEMENTED[endpoint]
    check_known(body, implemented, NO_EFFECT)
