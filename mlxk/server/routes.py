"""The server's routes as templates: one fixed set, used for dispatch and as the metrics label
(a raw URL path in a label would let any client add series, or lines, to ``/metrics``). Each route
names the protocol its answers (errors included) speak."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.server.errors import ANTHROPIC, OPENAI

MODEL_PREFIX = "/v1/models/"
RESPONSE_PREFIX = "/v1/responses/"
ANTHROPIC_PREFIX = "/v1/messages/"
UNMATCHED = "unmatched"
# the web chat: its page at / and its assets under /ui/, all counted under one label
UI_PREFIX = "/ui/"
UI_LABEL = "/ui"


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    methods: tuple[str, ...]
    protocol: str = OPENAI


ROUTES: tuple[Route, ...] = (
    Route("/health", ("GET",)),
    Route("/metrics", ("GET",)),
    Route("/v1/models", ("GET",)),
    Route("/v1/models/{id}", ("GET",)),
    Route("/v1/chat/completions", ("POST",)),
    Route("/v1/completions", ("POST",)),
    Route("/v1/embeddings", ("POST",)),
    Route("/v1/responses", ("POST",)),
    Route("/v1/responses/{id}", ("GET", "DELETE")),
    Route("/v1/messages", ("POST",), ANTHROPIC),
    Route("/v1/messages/count_tokens", ("POST",), ANTHROPIC),
)
_EXACT = {route.template: route for route in ROUTES if "{" not in route.template}
_WITH_ID = {
    MODEL_PREFIX: next(route for route in ROUTES if route.template == "/v1/models/{id}"),
    RESPONSE_PREFIX: next(route for route in ROUTES if route.template == "/v1/responses/{id}"),
}


def match(path: str) -> tuple[Route | None, str | None]:
    """The route of ``path`` and its parameter (a model or response id), or (None, None)."""
    route = _EXACT.get(path)
    if route is not None:
        return route, None
    for prefix, with_id in _WITH_ID.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            return with_id, path[len(prefix) :]
    return None, None


def is_ui(path: str) -> bool:
    """Whether ``path`` is the web chat's (its page or a name under /ui/, known or not)."""
    return path == "/" or path.startswith(UI_PREFIX)


def protocol(path: str) -> str:
    """The protocol whose error objects the answers on ``path`` carry: Anthropic's under
    /v1/messages (routes it has and we do not, such as message batches, included), else OpenAI's."""
    route, _ = match(path)
    if route is not None:
        return route.protocol
    return ANTHROPIC if path.startswith(ANTHROPIC_PREFIX) else OPENAI


def label(path: str) -> str:
    """The route template of ``path`` for metrics (``/ui`` for the web chat's), ``unmatched`` for
    any other path."""
    if is_ui(path):
        return UI_LABEL
    route, _ = match(path)
    return route.template if route is not None else UNMATCHED
