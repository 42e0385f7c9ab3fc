"""Generation for any protocol: requests in, chunks out, whatever the wire format.

A protocol adapter (``openai/`` today; Responses and Anthropic Messages later) turns its request
body into ``GenerationRequest`` values and hands them to ``Generations.start``; what comes back is
a ``Running`` generation whose first chunks are already there (so that a bad prompt is still an
ordinary error response), and which gives either each choice's whole answer (``answers``) or the
chunks of all choices as they come (``chunks``). The adapter only shapes those values into its
protocol's responses: it never sees tokens, the worker or the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mlxk.errors import MlxkError
from mlxk.generation.chunks import Chunk, merge
from mlxk.generation.request import GenerationRequest
from mlxk.server.disconnect import DisconnectWatch
from mlxk.server.errors import HTTPError, busy, from_library, shutting_down
from mlxk.server.models import ModelPolicy
from mlxk.server.worker import Busy, EngineWorker, Job, chunks


@dataclass
class Running:
    """Started generations, one per choice, with their first chunks."""

    firsts: list[Chunk]
    streams: list[AsyncIterator[Chunk]]
    watch: DisconnectWatch

    async def answers(self) -> list[Chunk]:
        """Each choice's whole answer (its chunks merged), in order."""
        return await self.watch.race(
            asyncio.gather(*(_collect(f, s) for f, s in zip(self.firsts, self.streams, strict=True)))
        )

    async def only(self) -> AsyncIterator[Chunk]:
        """The chunks of a generation with one choice (the Responses and Messages protocols)."""
        async for _index, chunk in self.chunks():
            yield chunk

    async def chunks(self) -> AsyncIterator[tuple[int, Chunk]]:
        """The chunks of every choice as they come, each with its choice index: first the first
        chunk of each, then the rest interleaved; each choice's last chunk has its finish."""
        open_streams: dict[int, AsyncIterator[Chunk]] = {}
        for index, first in enumerate(self.firsts):
            yield index, first
            if first.finish_reason is None:
                open_streams[index] = self.streams[index]
        async for item in _merged(open_streams):
            yield item


class Generations:
    """The server's side of the engine worker: submits requests, tracks them for a stop."""

    def __init__(self, worker: EngineWorker, models: ModelPolicy) -> None:
        self.worker = worker
        self.models = models
        self.draining = False  # stopping: new generations are refused, open ones go on
        self.ending = False  # the drain is over: open generations end at their next step
        self._jobs: set[Job] = set()

    def drain(self) -> None:
        """The server is stopping: new generations are refused from now on (503); those in
        progress go on to their own end."""
        self.draining = True

    def end_open(self) -> None:
        """The drain is over: every generation in progress ends at its next step (its response with
        a proper last chunk)."""
        self.draining = self.ending = True
        for job in list(self._jobs):
            job.cancel.set()

    def fail_open(self, error: BaseException) -> None:
        """Nothing can be generated any more (a lost rank): every open generation ends with
        ``error`` now, from here, whatever the engine thread is doing."""
        self.draining = self.ending = True
        for job in list(self._jobs):
            job.out.put_nowait(error)

    async def start(
        self, model: str, requests: tuple[GenerationRequest, ...], watch: DisconnectWatch, param: str
    ) -> tuple[Running, list[Job]]:
        """Submit one job per request and wait for each first chunk. ``param`` names the request
        field an error about the prompt concerns. The caller must ``finish`` the jobs."""
        if model not in (self.worker.model, self.worker.loading):
            # before the worker unloads the running model for it: can this one run at all?
            try:
                await watch.race(asyncio.to_thread(self.models.check_runnable, model))
            except MlxkError as error:
                raise from_library(error, "model") from None
        if self.draining:  # the stop began while this request was read: it has not started yet
            raise shutting_down()
        loop = asyncio.get_running_loop()
        jobs = [Job(model, request, loop) for request in requests]
        try:
            self.worker.submit_all(jobs)
        except Busy:
            raise busy() from None
        self._jobs.update(jobs)
        streams = [chunks(job) for job in jobs]
        firsts = [await watch.race(_first(stream, param)) for stream in streams]
        return Running(firsts, streams, watch), jobs

    async def prompt_size(
        self, model: str, request: GenerationRequest, watch: DisconnectWatch, param: str
    ) -> int:
        """How many tokens ``request``'s prompt has for ``model`` (loaded for it, as a generation
        would): the template rendered and tokenized on the engine thread, nothing generated."""
        for _attempt in range(3):  # another request may switch the model between the load and the count
            if model != self.worker.model:
                await self._load(model, watch)
            counted: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

            def count(counted: asyncio.Future[int | None] = counted) -> None:
                try:
                    engine = self.worker.engine if self.worker.model == model else None
                    result: int | BaseException | None = (
                        None if engine is None else len(engine.prompt(request).tokens)
                    )
                except BaseException as exc:  # the template refused the conversation...
                    result = exc
                counted.get_loop().call_soon_threadsafe(_settle, counted, result)

            self.worker.call(count)
            try:
                size = await watch.race(counted)
            except MlxkError as error:
                raise from_library(error, param) from None
            if size is not None:
                return size
        raise HTTPError(
            503,
            "the model changed while counting; retry",
            code="model_switching",
            headers=[("retry-after", "1")],
        )

    async def _load(self, model: str, watch: DisconnectWatch) -> None:
        """Until ``model`` is loaded (or the error that came instead)."""
        if self.draining:
            raise shutting_down()
        try:
            await watch.race(asyncio.to_thread(self.models.check_runnable, model))
        except MlxkError as error:
            raise from_library(error, "model") from None
        job = Job(model, None, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except Busy:
            raise busy() from None
        await watch.race(_first(chunks(job), "model"))

    def finish(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.cancel.set()  # a client that left: its generations stop at the next step
        self._jobs.difference_update(jobs)


def _settle(future: asyncio.Future[int | None], result: int | BaseException | None) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _first(stream: AsyncIterator[Chunk], param: str) -> Chunk:
    """The first chunk, or the error that came instead (a prompt too long for the context...)."""
    try:
        first = await stream.__anext__()
    except MlxkError as error:
        raise from_library(error, param) from None
    except StopAsyncIteration:
        raise HTTPError(500, "the generation ended without output") from None
    if first.finish_reason == "cancelled" and first.usage is None:  # never started: the server stops
        raise shutting_down()
    return first


async def _collect(first: Chunk, stream: AsyncIterator[Chunk]) -> Chunk:
    """One generation's chunks merged: its whole answer, with the finish and usage of its last."""
    received = [first]
    if first.finish_reason is None:
        async for chunk in stream:
            received.append(chunk)
    return merge(received)


async def _merged(streams: dict[int, AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of several generations as they come, each with its choice index."""
    if len(streams) <= 1:  # the common case: no tasks, no extra queue
        for index, stream in streams.items():
            async for chunk in stream:
                yield index, chunk
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:
            await queue.put((index, exc))
            return
        await queue.put((index, None))

    tasks = [asyncio.ensure_future(pump(index, stream)) for index, stream in streams.items()]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
