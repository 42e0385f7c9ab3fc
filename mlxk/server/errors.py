"""Errors as HTTP answers, in one place: the error object of the request's protocol (OpenAI's, or
Anthropic's on the Messages routes), the status of each library error, and the answer to an
exception that ends a request.

Every refusal the server makes is an ``HTTPError`` (its status, message, the request field it is
about, a code clients can act on); library errors (``MlxkError``) become one through
``from_library``; anything else is a bug, answered 500 without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from mlxk.errors import InvalidField, MlxkError, PromptTooLong

if TYPE_CHECKING:
    from mlxk.server.asgi import Tracked

log = logging.getLogger("mlxk.server")
CLIENT_GONE = 499  # nginx's status for a client that closed the connection before the answer


OPENAI = "openai"
ANTHROPIC = "anthropic"
# Anthropic's error types by status (its API documents these; 529 is its "overloaded")
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error",
                   413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip


class HTTPError(Exception):
    """An error response, in the shape of the request's protocol: OpenAI's
    ``{"error": {"message", "type", "param", "code"}}`` or Anthropic's
    ``{"type": "error", "error": {"type", "message"}}``."""

    TYPES: ClassVar[dict[int, str]] = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 500: "server_error"}  # fmt: skip

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

    def body(self, protocol: str = OPENAI) -> dict[str, Any]:
        if protocol == ANTHROPIC:
            kind = ANTHROPIC_TYPES.get(
                self.status, "api_error" if self.status >= 500 else "invalid_request_error"
            )
            message = (
                f"{self.param}: {self.message}"
                if self.param and self.param not in self.message
                else self.message
            )
            return {"type": "error", "error": {"type": kind, "message": message}}
        kind = self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def invalid(param: str, message: str) -> HTTPError:
    """A request field with a wrong type or value."""
    return HTTPError(400, message, param=param, code="invalid_value")


def from_library(error: MlxkError, param: str | None = None) -> HTTPError:
    """A library error as the answer to a request (a 5xx only for what the client cannot fix);
    ``param``: the request field it is about, where the error does not name one itself."""
    if isinstance(error, PromptTooLong):  # OpenAI's code, which clients act on (a shorter history)
        return HTTPError(400, error.message, param=param, code="context_length_exceeded")
    if isinstance(error, InvalidField):
        return invalid(error.param, error.message)
    # 503 (the service cannot generate now: a lost rank) is for the client to act on; other 5xx
    # are the server's trouble
    status = error.http_status if error.http_status < 500 or error.http_status == 503 else 500
    return HTTPError(status, error.message, param=param, code=error.error_type)


async def with_error_event(
    events: AsyncIterator[bytes], error_event: Callable[[HTTPError], bytes]
) -> AsyncIterator[bytes]:
    """The events of a stream; an error after it began (its 200 is sent: a rank of the group lost,
    the generation failed) ends it with ``error_event`` of that error, the protocol's own event,
    instead of a connection cut short."""
    try:
        async for item in events:
            yield item
    except Exception as exc:
        yield error_event(stream_error(exc))


def stream_error(exc: Exception) -> HTTPError:
    """What a stream that failed after it began tells its client: a library error as such; anything
    else (a device that failed mid-step, a bug) is logged with its traceback and told as a 500, as a
    whole answer's failure is."""
    if isinstance(exc, HTTPError):
        error = exc
    elif isinstance(exc, MlxkError):
        error = from_library(exc)
    else:
        log.error("a stream failed after it began", exc_info=exc)
        return HTTPError(500, "internal server error")
    log.warning("a stream ended with an error: %s", error.message)
    return error


def shutting_down() -> HTTPError:
    return HTTPError(
        503,
        "the server is shutting down",
        code="shutting_down",
        headers=[("retry-after", "1"), ("connection", "close")],
    )


def busy() -> HTTPError:
    return HTTPError(
        429, "the server is busy; retry shortly", code="queue_full", headers=[("retry-after", "1")]
    )


def model_not_found(message: str) -> HTTPError:
    return HTTPError(404, message, param="model", code="model_not_found")


def internal(method: Any, path: str) -> HTTPError:
    """A bug: logged with its traceback (call from an ``except``), answered without it."""
    log.exception("%s %s failed", method, path)
    return HTTPError(500, "internal server error")


async def send_error(
    response: Tracked, error: HTTPError, cors: Iterable[tuple[str, str]], protocol: str = OPENAI
) -> int:
    """Answer with ``error`` in ``protocol``'s shape (with the CORS headers, so that a browser lets
    the page see it); returns the status logged: the client-gone status when the client left or the
    answer had begun."""
    from mlxk.server.asgi import send_json

    if response.started:
        return CLIENT_GONE if error.status == CLIENT_GONE else 500
    try:
        await send_json(response, error.status, error.body(protocol), [*error.headers, *cors])
    except (OSError, RuntimeError):  # the client is gone (Granian raises RuntimeError for it)
        return CLIENT_GONE
    return error.status
