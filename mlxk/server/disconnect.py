"""Noticing that a client went away, whatever the request is waiting for.

Once a request's body is read, the only message ASGI still has for it is ``http.disconnect``. One
watcher per request waits for it, and every wait of the request (for a queue slot, the first token,
a whole answer, the next chunk of a stream) is raced against it, so a client that leaves frees its
place at the next decoding step instead of holding it until the answer is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

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

    @property
    def gone(self) -> bool:
        return self._task.done()

    async def race(self, work: Awaitable[T]) -> T:
        """The result of ``work``, or ClientGone (and ``work`` cancelled) if the client leaves first."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                return task.result()
            finally:
                del task  # it holds the exception, whose traceback holds this frame: no cycle
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientGone

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
