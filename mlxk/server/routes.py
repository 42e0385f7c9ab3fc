"""The server's routes as templates: one fixed set, used for dispatch and as the metrics label
(a raw URL path in a label would let any client add series, or lines, to ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_PREFIX = "/v1/models/"
UNMATCHED = "unmatched"
# the web chat: its page at / and its assets under /ui/, all counted under one label
UI_PREFIX = "/ui/"
UI_LABEL = "/ui"


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    method: str


ROUTES: tuple[Route, ...] = (
    Route("/health", "GET"),
    Route("/metrics", "GET"),
    Route("/v1/models", "GET"),
    Route("/v1/models/{id}", "GET"),
    Route("/v1/chat/completions", "POST"),
    Route("/v1/completions", "POST"),
    Route("/v1/embeddings", "POST"),
)
_EXACT = {route.template: route for route in ROUTES if "{" not in route.template}
_MODEL = next(route for route in ROUTES if route.template == "/v1/models/{id}")


def match(path: str) -> tuple[Route | None, str | None]:
    """The route of ``path`` and its parameter (a model id), or (None, None)."""
    route = _EXACT.get(path)
    if route is not None:
        return route, None
    if path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        return _MODEL, path[len(MODEL_PREFIX) :]
    return None, None


def is_ui(path: str) -> bool:
    """Whether ``path`` is the web chat's (its page or a name under /ui/, known or not)."""
    return path == "/" or path.startswith(UI_PREFIX)


def label(path: str) -> str:
    """The route template of ``path`` for metrics (``/ui`` for the web chat's), ``unmatched`` for
    any other path."""
    if is_ui(path):
        return UI_LABEL
    route, _ = match(path)
    return route.template if route is not None else UNMATCHED
