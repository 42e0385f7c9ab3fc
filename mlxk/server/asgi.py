"""The small part of ASGI the server needs: bodies with a size limit, JSON responses, SSE that
races the stream against the client going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from mlxk.server.errors import HTTPError, shutting_down

if TYPE_CHECKING:
    from mlxk.server.disconnect import DisconnectWatch

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(
    receive: Receive,
    scope: Scope,
    limit: int,
    *,
    idle_s: float,
    total_s: float,
    stopping: asyncio.Event | None = None,
) -> bytes:
    """The whole request body: at most ``limit`` bytes (413), each part within ``idle_s`` seconds
    of the one before and all of it within ``total_s`` (408: a body that trickles in holds a
    connection and a task for as long as it lasts); 503 when ``stopping`` is set meanwhile.

    A wait that ends without a part cancels that ``receive()``: Granian then lets go of the body,
    and the connection closes after the answer (a read of the body left pending would keep it open
    for as long as the client cares to). The errors are raised here, in no task, so that no
    traceback cycle keeps the request (and its connection) alive until the garbage collector runs.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    stop = asyncio.ensure_future(stopping.wait()) if stopping is not None else None
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            part = asyncio.ensure_future(receive())
            waits = {part} if stop is None else {part, stop}
            timeout = max(min(idle_s, deadline - loop.time()), 0.0)
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not part.done():
                part.cancel()
                if stop is not None and stop.done():  # the server stops: no waiting for the rest
                    raise shutting_down()
                raise HTTPError(
                    408,
                    f"the request body did not arrive in time ({idle_s:g} s between parts, {total_s:g} s in all)",
                    code="request_timeout",
                    headers=[("connection", "close")],
                )
            message = part.result()
            if message["type"] == "http.disconnect":
                # also what Granian reports for a malformed body (a bad chunk size): the answer
                # reaches a client that is still there, and harms none that left
                raise HTTPError(
                    400,
                    "the request body could not be read (malformed chunked encoding, or the connection closed)",
                    code="invalid_body",
                    headers=[("connection", "close")],
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(
                    413,
                    f"the request body is larger than {limit} bytes",
                    code="request_too_large",
                    headers=[("connection", "close")],
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)
    finally:
        if stop is not None:
            stop.cancel()


async def send_json(send: Send, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
    body = orjson.dumps(obj)
    await send_bytes(send, status, body, [("content-type", "application/json"), *headers])


async def send_bytes(send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _SocketGone(Exception):
    """A write of a stream failed: the client's connection is gone."""


async def send_events(
    send: Send, watch: DisconnectWatch, events: AsyncIterator[bytes], headers: Iterable[tuple[str, str]] = ()
) -> bool:
    """Stream server-sent events; returns False when the client disconnected first.

    The events are raced against the client going away: then the event source is closed at once
    (which cancels the generation behind it), not at the next write.
    """
    from mlxk.server.disconnect import ClientGone

    raw = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": 200, "headers": raw})

    async def write(body: bytes, more: bool) -> None:
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        except (OSError, RuntimeError) as exc:  # the socket went first (Granian raises RuntimeError)
            raise _SocketGone from exc

    async def pump() -> None:
        # an error of the events themselves is not the client's leaving: it goes on to the caller
        async for event in events:
            await write(event, True)
        await write(b"", False)

    try:
        await watch.race(pump())
    except (ClientGone, _SocketGone):
        return False
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()
    return True


class Tracked:
    """``send``, remembering whether the response has begun (an error can then no longer be sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
