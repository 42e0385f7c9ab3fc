"""The small part of ASGI the server needs: bodies with a size limit, JSON responses, SSE that
races the stream against the client going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HTTPError(Exception):
    """An OpenAI-shaped error response: ``{"error": {"message", "type", "param", "code"}}``."""

    TYPES: ClassVar[dict[int, str]] = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
             429: "rate_limit_error", 503: "server_error", 500: "server_error"}  # fmt: skip

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = tuple(headers)

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_json(send: Send, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
    body = orjson.dumps(obj)
    await send_bytes(send, status, body, [("content-type", "application/json"), *headers])


async def send_bytes(send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_events(
    send: Send, receive: Receive, events: AsyncIterator[bytes], headers: Iterable[tuple[str, str]] = ()
) -> bool:
    """Stream server-sent events; returns False when the client disconnected first.

    The events are raced against ``http.disconnect``: when the client goes away the event source
    is closed at once (which cancels the generation behind it), not at the next write.
    """
    raw = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": 200, "headers": raw})

    async def pump() -> None:
        async for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            if not task.done():
                task.cancel()
        await asyncio.gather(pumping, watching, return_exceptions=True)
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()
    if pumping in done and pumping.exception() is not None:
        exc = pumping.exception()
        if isinstance(exc, OSError):
            return False  # the socket went first
        raise exc  # type: ignore[misc]
    return pumping in done
