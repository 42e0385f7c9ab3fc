"""Stopping without cutting anyone off: the drain that SIGTERM starts.

A load balancer or an orchestrator stops a replica with SIGTERM and sends no new traffic once its
health check fails. So the first signal turns ``/health`` to 503 and refuses new work at once (503
with ``Retry-After``: a balancer retries it on another replica), lets the requests in progress run
to their own end for up to ``--drain-timeout`` seconds, then ends what is still open with a proper
last chunk, and the server stops. A second signal cuts the drain short; a third exits at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("mlxk.server")

# Inside the grace period of common orchestrators (Kubernetes and ECS give 30 s before SIGKILL,
# Nomad 5 s, docker stop 10 s: set --drain-timeout below yours) with room for the last chunks
# and the exit; long enough for a typical chat answer to finish.
DRAIN_TIMEOUT_S = 15.0


class OpenWork:
    """The requests a drain waits for (those that generate or embed), counted as they run."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Returns once no such request is in progress."""
        await self._idle.wait()


class Drain:
    """The signals' side of a stop: ``signal()`` is called on the event loop for each SIGINT or
    SIGTERM. ``begin`` refuses new work, ``open_work`` waits for the rest, ``end`` ends what is
    still open and stops the server, ``exit_now`` leaves at once."""

    def __init__(
        self,
        timeout_s: float,
        *,
        begin: Callable[[], None],
        open_work: OpenWork,
        end: Callable[[], None],
        exit_now: Callable[[str], None],
    ) -> None:
        self.timeout_s = timeout_s
        self._begin = begin
        self._open_work = open_work
        self._end = end
        self._exit_now = exit_now
        self._signals = 0
        self._cut = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self._begin()
            log.warning(
                "draining: new requests get 503; %d open, waiting up to %.0f s (a second signal ends them now)",
                self._open_work.count,
                self.timeout_s,
            )
            self._task = asyncio.ensure_future(self._run())
        elif self._signals == 2:
            self._cut.set()
        else:
            self._exit_now("a third signal: exiting without waiting for open responses")

    async def _run(self) -> None:
        idle = asyncio.ensure_future(self._open_work.idle())
        cut = asyncio.ensure_future(self._cut.wait())
        done, _ = await asyncio.wait({idle, cut}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (idle, cut):
            waiter.cancel()
        if idle not in done:
            why = "a second signal" if cut in done else f"the drain timeout ({self.timeout_s:g} s)"
            log.warning("%s: ending %d open requests now", why, self._open_work.count)
        self._end()
