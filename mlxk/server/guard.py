"""The safety checks every request passes before it reaches a route: the ``Host`` it names (DNS
rebinding), its ``Origin`` (browser pages), and the API key. One home for all three, so no route
can be reached around them."""

from __future__ import annotations

import hmac

from mlxk.server.asgi import Scope, header
from mlxk.server.cors import CorsPolicy
from mlxk.server.errors import HTTPError
from mlxk.server.hosts import HostPolicy

OPEN_PATHS = frozenset({"/health"})  # answered without the API key (a load balancer's probe)


class Guard:
    def __init__(
        self, bound: str, allowed_hosts: tuple[str, ...], origins: tuple[str, ...], api_key: str | None
    ) -> None:
        self.hosts = HostPolicy(bound, allowed_hosts)
        self.cors = CorsPolicy(origins)
        self._key = api_key.encode() if api_key is not None else None

    def admit(self, scope: Scope) -> list[tuple[str, str]]:
        """Raises HTTPError for a foreign host or origin; returns the CORS headers every response
        to this request carries (errors included, so that a browser lets the page see them)."""
        host = header(scope, b"host")
        if not self.hosts.allows(host):  # DNS rebinding: a foreign name resolving to our loopback port
            raise HTTPError(403, f"host {host!r} is not allowed (see --allow-host)", code="forbidden_host")
        origin = header(scope, b"origin")
        if origin is not None and not (self.cors.allows(origin) or self.hosts.own_origin(origin, host)):
            raise HTTPError(
                403, f"origin {origin!r} is not allowed (see --cors-origin)", code="forbidden_origin"
            )
        return self.cors.headers(origin)

    def preflight(self, scope: Scope) -> list[tuple[str, str]]:
        """The headers of the answer to ``OPTIONS`` (no key needed: browsers send none there)."""
        return self.cors.preflight(header(scope, b"origin"), header(scope, b"access-control-request-headers"))

    def check_key(self, scope: Scope, path: str) -> None:
        if self._key is None or path in OPEN_PATHS:
            return
        # Anthropic's clients send the key as x-api-key, OpenAI's as a bearer token: either will do
        given = header(scope, b"authorization") or ""
        token = given[7:] if given.lower().startswith("bearer ") else header(scope, b"x-api-key") or ""
        if not hmac.compare_digest(token.encode(), self._key):
            raise HTTPError(
                401,
                "a valid API key is needed (Authorization: Bearer ..., or x-api-key)",
                code="invalid_api_key",
            )
