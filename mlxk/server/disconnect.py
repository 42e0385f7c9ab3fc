"""Noticing that a client went away, whatever the request is waiting for.

Once a request's body is read, the only message ASGI still has for it is ``http.disconnect``. One
watcher per request waits for it, and every wait of the request (for a queue slot, the first token,
a whole answer, the next chunk of a stream) is raced against it, so a client that leaves frees its
place at the next decoding step instead of holding it until the answer is complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from mlxk.server.asgi import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


class DisconnectWatch:
    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.ensure_future(self._watch(receive))

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def race(self, work: Awaitable[T]) -> T:
        """The result of ``work``, or ClientGone (and ``work`` cancelled) if the client leaves first."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                return task.result()
            finally:
                del task  # it holds the exception, whose traceback holds this frame: no cycle
        await _cancel(task)
        raise ClientGone

    async def close(self) -> None:
        await _cancel(self._task)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for its end, whatever it ends with (its exception retrieved, none
    raised here). Gathered, not awaited: awaiting it would raise its CancelledError into this frame,
    and Python 3.11's tracing then loses the caller's following lines (CPython gh-106749), which
    coverage.py reports as never run. A cancellation of the caller itself still propagates."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
