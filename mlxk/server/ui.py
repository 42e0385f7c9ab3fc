"""The built-in web chat: ``GET /`` and its assets under ``/ui/``, files shipped in the package
(``mlxk/server/ui/``), so the page works offline and needs nothing from elsewhere.

The page is plain HTML, CSS and JavaScript modules. It talks to the server's own API
(``/v1/models``, ``/v1/chat/completions``) with the API key the user gives it, so the page and its
assets are served without one. Every answer carries a Content-Security-Policy that lets only this
server's own files run and load (no inline script, no other origin, no frames) and asks the
browser to refuse HTML from strings (Trusted Types): the page builds model output as text nodes,
and these headers are the second line of defence should it ever not. Assets are revalidated on
every load (``no-cache`` with an ``ETag``), so an upgraded mlxk never runs with a stale page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from mlxk.server import routes
from mlxk.server.asgi import Scope, Send, header, send_bytes
from mlxk.server.errors import HTTPError

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# the page's assets, by URL path (a fixed set: a request never names a file to open)
ASSET_FILES = {"/": "index.html"} | {
    routes.UI_PREFIX + name: name
    for name in ("app.js", "api.js", "store.js", "markdown.js", "app.css", "icon.svg")
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load(name: str) -> Asset:
    body = (resources.files("mlxk.server") / "ui" / name).read_bytes()
    suffix = name[name.rfind(".") :]
    return Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class WebUI:
    """Serves the chat page and its assets (read from the package once, at start)."""

    def __init__(self) -> None:
        self.assets = {path: _load(name) for path, name in ASSET_FILES.items()}

    async def respond(self, scope: Scope, send: Send) -> int:
        """Answers a request for a path of the page's (``routes.is_ui``); the status sent."""
        path = scope.get("path", "")
        asset = self.assets.get(path)
        if asset is None:
            raise HTTPError(404, f"no route {path}", code="not_found")
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            raise HTTPError(
                405, f"{path} takes GET", code="method_not_allowed", headers=[("allow", "GET, HEAD")]
            )
        headers = [
            ("content-type", asset.content_type),
            ("cache-control", "no-cache"),
            ("etag", asset.etag),
            *SECURITY_HEADERS,
        ]
        if asset.etag in _tags(header(scope, b"if-none-match")):
            await _send_head(send, 304, headers)
            return 304
        if method == "HEAD":
            await _send_head(send, 200, [*headers, ("content-length", str(len(asset.body)))])
            return 200
        await send_bytes(send, 200, asset.body, headers)
        return 200


def _tags(if_none_match: str | None) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}


async def _send_head(send: Send, status: int, headers: list[tuple[str, str]]) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b""})
