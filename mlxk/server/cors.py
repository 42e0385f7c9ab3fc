"""Browser access (CORS): which origins may call the server, and the headers that say so.

A request with an ``Origin`` the user did not allow (``--cors-origin``) is refused. An allowed
origin gets the CORS headers on every response, errors included: without them the browser hides
the response, and a page sees an opaque network failure instead of, say, the 401 that tells it the
API key is missing. A preflight allows the headers the browser asks for (the OpenAI and Anthropic
JavaScript clients send their own ``x-stainless-*`` headers), so long as they are header names.
``--cors-origin '*'`` allows every origin (with a warning at start).
"""

from __future__ import annotations

import re

WILDCARD = "*"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_ASKED_HEADERS = 64
BASE_HEADERS = "authorization, content-type"
PREFLIGHT_MAX_AGE_S = 600


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.any_origin = WILDCARD in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != WILDCARD)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """For any response to a request from ``origin`` (none when it is absent or not allowed)."""
        if origin is None or not self.allows(origin):
            return []
        if self.any_origin:
            return [("access-control-allow-origin", "*"), ("access-control-expose-headers", "retry-after")]
        return [
            ("access-control-allow-origin", origin),
            ("access-control-expose-headers", "retry-after"),
            ("vary", "origin"),
        ]

    def preflight(self, origin: str | None, asked_headers: str | None) -> list[tuple[str, str]]:
        """For the answer to ``OPTIONS`` (a preflight when ``origin`` is there)."""
        found = self.headers(origin)
        if not found:
            return []
        return [
            *found,
            ("access-control-allow-methods", "GET, POST, DELETE, OPTIONS"),
            ("access-control-allow-headers", allowed_headers(asked_headers)),
            ("access-control-max-age", str(PREFLIGHT_MAX_AGE_S)),
        ]


def allowed_headers(asked: str | None) -> str:
    """The headers a preflight asked for (``Access-Control-Request-Headers``), when each is a header
    name; otherwise only the two every client needs."""
    names = [n.strip().lower() for n in (asked or "").split(",") if n.strip()]
    if not names or len(names) > MAX_ASKED_HEADERS or not all(_HEADER_NAME.fullmatch(n) for n in names):
        return BASE_HEADERS
    return ", ".join(dict.fromkeys(["authorization", "content-type", *names]))
