"""The drain's side of each signal, on an event loop of its own: the first refuses new work and
waits for the open requests, the second ends them now, the third leaves at once, and the timeout
ends what outlived it. ``Drain`` takes what it starts (refusing, ending, exiting) as callables:
here they record what was asked of them, where ``serve`` stops Granian and the process.
``tests/test_server_lifecycle.py`` drives the first two signals and the timeout through a real
server; a third signal there races the exit the second one starts, so it is driven here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from mlxk.server.drain import Drain, OpenWork

DEADLINE_S = 10.0  # bounds every wait: a drain that never ends fails the test instead of hanging it


class Stops:
    """What the drain asked for, in order; ``ended`` is set once it ended the open work."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ended = asyncio.Event()

    def drain(self, work: OpenWork, timeout_s: float = 600.0) -> Drain:
        return Drain(
            timeout_s,
            begin=lambda: self.calls.append("begin"),
            open_work=work,
            end=self._end,
            exit_now=lambda why: self.calls.append(f"exit: {why}"),
        )

    def _end(self) -> None:
        self.calls.append("end")
        self.ended.set()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "mlxk.server" and r.levelno == logging.WARNING
    ]


def test_the_first_signal_refuses_new_work_and_ends_when_the_open_work_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mlxk.server")

    async def scenario() -> None:
        stops, work = Stops(), OpenWork()
        work.enter()
        work.enter()
        drain = stops.drain(work)
        drain.signal()
        assert stops.calls == ["begin"]  # refused at once, ended only once the work is done
        work.leave()
        await asyncio.sleep(
            0
        )  # the drain's task runs a turn (no wait for an outcome): one is open, so nothing ends
        assert stops.calls == ["begin"] and not stops.ended.is_set()
        work.leave()
        await stops.ended.wait()
        assert stops.calls == ["begin", "end"]

    run(scenario)
    assert warnings_of(caplog) == [
        "draining: new requests get 503; 2 open, waiting up to 600 s (a second signal ends them now)"
    ]  # the work ended of itself: no line about ending it


def test_a_second_signal_ends_the_open_work_now_and_a_third_exits_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mlxk.server")

    async def scenario() -> None:
        stops, work = Stops(), OpenWork()
        work.enter()
        drain = stops.drain(work)
        drain.signal()
        drain.signal()
        await stops.ended.wait()
        assert stops.calls == ["begin", "end"]  # the request is still open: ended, not waited for
        drain.signal()
        assert stops.calls == [
            "begin",
            "end",
            "exit: a third signal: exiting without waiting for open responses",
        ]

    run(scenario)
    assert warnings_of(caplog)[1:] == ["a second signal: ending 1 open requests now"]


def test_the_drain_timeout_ends_what_is_still_open(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mlxk.server")

    async def scenario() -> None:
        stops, work = Stops(), OpenWork()
        work.enter()
        stops.drain(work, timeout_s=0.05).signal()
        await stops.ended.wait()
        assert stops.calls == ["begin", "end"] and work.count == 1

    run(scenario)
    assert warnings_of(caplog)[1:] == ["the drain timeout (0.05 s): ending 1 open requests now"]


def test_with_nothing_open_the_drain_ends_at_once() -> None:
    async def scenario() -> None:
        stops = Stops()
        stops.drain(OpenWork()).signal()
        await stops.ended.wait()
        assert stops.calls == ["begin", "end"]

    run(scenario)
