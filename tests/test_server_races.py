"""The server's answers when something happens in the instant between two steps of a request, on
tiny real models through ASGI: a stop that begins while a body is read, another request that
switches the model between a count's load and its count, a client that leaves just before the
engine thread settles its count, the request's event loop closed while the engine thread still
delivers to it, and a POST that arrives after the distributed group was lost but before the server
stopped.

A race cannot be staged by timing, so each test uses a named stand-in at exactly that point: the
other party's action happens there for real (the server really drains, another model is really
loaded, the client really leaves, the loop is really closed, the group is really declared lost),
then the real code goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import orjson
import pytest

from mlxk.generation.batch import BatchRunner
from mlxk.generation.chunks import Chunk, Usage
from mlxk.generation.lockstep import Group
from mlxk.generation.request import GenerationRequest, Message, Sampling
from mlxk.server.app import App, ServerSettings
from mlxk.server.worker import DELIVERY_INTERVAL_ALONE_S, EngineWorker, Job, Task, chunks
from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import served

ONE = "test/race-one"
OTHER = "test/race-other"
HANG_S = 120  # only turns a hang (a path that broke) into a failure; no test waits on it


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    hub = tmp_path_factory.mktemp("server-races")
    files = build_tiny_chat_model()
    install(hub, ONE, files)
    install(hub, OTHER, files)  # the same tiny model under another name: a switch loads it again
    return str(hub)


# --- the app through ASGI ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: nothing was sent (a client that left)
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: App,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    while_read: Callable[[], None] = lambda: None,
    leaves: asyncio.Event | None = None,
) -> Answer:
    """``method path`` with ``body`` through ASGI. ``while_read`` runs as the body is delivered (what
    happens while the server reads it); the client leaves when ``leaves`` is set, else it stays."""
    raw = orjson.dumps(body) if body is not None else b""
    sent: list[dict[str, Any]] = []
    stays = leaves or asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            while_read()
            return {"type": "http.request", "body": raw, "more_body": False}
        await stays.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
    await asyncio.wait_for(app(scope, receive, send), timeout=HANG_S)
    start = [m for m in sent if m["type"] == "http.response.start"]
    if not start:
        return Answer(None, {}, b"")
    answer_headers = {k.decode(): v.decode() for k, v in start[0].get("headers", [])}
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start[0]["status"], answer_headers, body_bytes)


def chat(model: str = ONE, tokens: int = 3) -> dict[str, Any]:
    hello = [{"role": "user", "content": "Hello"}]
    return {"model": model, "messages": hello, "max_tokens": tokens, "temperature": 0}


def messages(model: str = ONE, tokens: int = 3) -> dict[str, Any]:
    return {"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "Hello"}]}


def count(model: str = ONE) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello"}]}


COUNT = "/v1/messages/count_tokens"
SHUTTING_DOWN = "the server is shutting down"


def refused_for_stopping(answer: Answer, path: str) -> None:
    """503 in the shape of ``path``'s protocol, telling the client to retry elsewhere."""
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1" and answer.headers["connection"] == "close"
    if path.startswith("/v1/messages"):
        assert answer.json() == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": SHUTTING_DOWN},
        }
    else:
        assert answer.json() == {
            "error": {
                "message": SHUTTING_DOWN,
                "type": "server_error",
                "param": None,
                "code": "shutting_down",
            }
        }


# --- generate.py: a drain that began while the request was read -------------------------------------


@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", chat()), ("/v1/messages", messages())])
def test_a_stop_that_begins_while_the_body_is_read_refuses_the_generation_with_503(
    hub_root: str, path: str, body: dict[str, Any]
) -> None:
    """Race: the server starts to drain (SIGTERM) after the route let the POST in and before the
    generation is submitted, while its body is read. Stand-in: the ASGI ``receive`` that delivers
    the body drains the app for real first. The request is refused with the protocol's 503, and
    nothing is started for it: no model loaded, no job queued."""
    app = App(ServerSettings(hub_root=hub_root))

    async def scenario(app: App) -> Answer:
        return await call(app, "POST", path, body, while_read=app.drain)

    answer = served(app, scenario)
    refused_for_stopping(answer, path)
    assert app.worker.model is None and app.worker.queue_depth == 0


def test_a_stop_that_begins_while_a_count_is_read_refuses_it_before_its_model_loads(hub_root: str) -> None:
    """Race: the server starts to drain after the route let a ``count_tokens`` POST in, while its
    body is read; the count's model is not loaded yet. Stand-in: the ASGI ``receive`` that delivers
    the body drains the app for real first. Anthropic's 503, and the model is not loaded for it."""
    app = App(ServerSettings(hub_root=hub_root))

    async def scenario(app: App) -> Answer:
        return await call(app, "POST", COUNT, count(), while_read=app.drain)

    answer = served(app, scenario)
    refused_for_stopping(answer, COUNT)
    assert app.worker.model is None and app.worker.queue_depth == 0


# --- generate.py: prompt_size, another request switching the model between load and count ----------


def switch_before_counts(app: App, times: int) -> list[str]:
    """Stand-in for another request, for ``OTHER``, that the engine thread takes between a count's
    load and its count: the first ``times`` counts handed to the engine thread wait until that
    request really loaded ``OTHER`` (unloading the count's model), then go in. Returns the models
    loaded, in order (the real loader's log)."""
    worker = app.worker
    real_call, real_load = worker.call, worker._load
    loads: list[str] = []
    switched: list[str] = []

    def load(name: str) -> Any:
        loads.append(name)
        return real_load(name)

    def switched_then_call(task: Task) -> None:
        if getattr(task, "__name__", "") == "count" and times > len(switched):
            worker.submit(Job(OTHER, None, asyncio.get_running_loop()))
            deadline = time.monotonic() + HANG_S
            while worker.model != OTHER:  # the other request's model is in before the count goes
                assert time.monotonic() < deadline, "the other model was never loaded"
                time.sleep(0.005)
            switched.append(OTHER)
        real_call(task)

    worker._load = load
    worker.call = switched_then_call  # type: ignore[method-assign]
    return loads


def test_a_count_whose_model_is_switched_three_times_answers_503_model_switching(hub_root: str) -> None:
    """Race: another request switches the model on the engine thread between each of a count's
    loads and its count, three times in a row. Stand-in: ``switch_before_counts``. The count gives
    up with Anthropic's 503 ``model_switching`` and a retry-after, rather than a wrong count or a
    loop for ever; the next count is answered."""
    app = App(ServerSettings(hub_root=hub_root))
    loads = switch_before_counts(app, times=3)

    async def scenario(app: App) -> tuple[Answer, Answer]:
        return await call(app, "POST", COUNT, count()), await call(app, "POST", COUNT, count())

    switching, after = served(app, scenario)
    assert switching.status == 503 and switching.headers["retry-after"] == "1"
    assert switching.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "the model changed while counting; retry"},
    }
    assert loads[:6] == [ONE, OTHER] * 3  # each attempt loaded the count's model, then lost it
    assert after.status == 200 and after.json()["input_tokens"] > 0


def test_a_count_whose_model_is_switched_once_is_counted_again_on_its_own_model(hub_root: str) -> None:
    """Race: another request switches the model between a count's load and its count, once.
    Stand-in: ``switch_before_counts``. The count loads its model again and answers the same number
    as a count that nothing disturbed (not the other model's, not an error)."""
    app = App(ServerSettings(hub_root=hub_root))

    async def scenario(app: App) -> tuple[Answer, Answer, list[str]]:
        undisturbed = await call(app, "POST", COUNT, count())
        loads = switch_before_counts(app, times=1)
        return undisturbed, await call(app, "POST", COUNT, count()), loads

    undisturbed, recounted, loads = served(app, scenario)
    assert undisturbed.status == 200 and recounted.status == 200
    assert recounted.json() == undisturbed.json()
    assert loads == [OTHER, ONE]  # switched away once, then loaded back for the count
    assert app.worker.model == ONE


# --- generate.py: _settle on a count the client no longer waits for ---------------------------------


def test_a_client_that_leaves_just_before_its_count_is_settled_gets_nothing_and_no_error(
    hub_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Race: the client leaves (its future cancelled by the disconnect watch) in the instant before
    the engine thread settles its count. Stand-in: the count handed to the engine thread first makes
    the client leave for real and waits until its request has ended, then counts and settles. The
    request ends as a client gone (499, nothing sent), the late result is dropped without an error
    on the event loop, and the next count is answered."""
    app = App(ServerSettings(hub_root=hub_root))
    real_call = app.worker.call
    request_ended = threading.Event()
    loop_errors: list[dict[str, Any]] = []

    async def scenario(app: App) -> tuple[Answer, Answer]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: loop_errors.append(context))
        leaves = asyncio.Event()

        def left_then_call(task: Task) -> None:
            if getattr(task, "__name__", "") != "count" or request_ended.is_set():
                real_call(task)
                return

            def left_then_count() -> None:  # on the engine thread
                loop.call_soon_threadsafe(leaves.set)  # the client leaves ...
                assert request_ended.wait(HANG_S)  # ... and its request is over
                task()  # then the count is done and settled

            real_call(left_then_count)

        app.worker.call = left_then_call  # type: ignore[method-assign]
        gone = await call(app, "POST", COUNT, count(), leaves=leaves)
        request_ended.set()
        # the next count's result comes after the late one on the same loop: both settled by then
        return gone, await call(app, "POST", COUNT, count())

    with caplog.at_level("INFO", logger="mlxk.server"):
        gone, after = served(app, scenario)
    assert gone.status is None  # nobody to answer
    assert f"POST {COUNT} 499 " in caplog.text
    assert loop_errors == []  # the late result was dropped, not set on a cancelled future
    assert after.status == 200 and after.json()["input_tokens"] > 0


# --- worker.py: the request's event loop closed while the engine thread delivers --------------------


@pytest.fixture(scope="module")
def engine(hub_root: str) -> Any:
    from mlxk.generation.engine import load_engine

    [snapshot] = (Path(hub_root) / "models--test--race-one" / "snapshots").iterdir()
    return load_engine(str(snapshot))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A live request's event loop, run only when the test reads from it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def generation(tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "Hello"),), max_tokens=tokens, sampling=Sampling(temperature=0.0)
    )


def answer_of(loop: asyncio.AbstractEventLoop, job: Job) -> list[Chunk]:
    async def read() -> list[Chunk]:
        return [chunk async for chunk in chunks(job)]

    return loop.run_until_complete(asyncio.wait_for(read(), HANG_S))


def test_a_load_whose_requests_loop_closed_meanwhile_is_cancelled_and_the_worker_serves_on(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    """Race: the request's event loop closes (the server stops) while the engine thread loads the
    model for it, so the answer has no loop to go to. Stand-in: the loader closes that loop for
    real, then loads. The job is marked cancelled, its place in the queue is freed, and the engine
    thread lives on: the next request is generated."""
    gone_loop = asyncio.new_event_loop()
    job = Job("tiny", None, gone_loop)

    def closed_then_load(name: str) -> Any:
        gone_loop.close()  # the server's loop ends while the model loads
        return engine

    worker = EngineWorker(load=closed_then_load, max_queue=4)
    worker.start()
    try:
        worker.submit(job)
        following = Job("tiny", generation(3), loop)
        worker.submit(following)
        got = answer_of(loop, following)
    finally:
        worker.stop()
    assert gone_loop.is_closed() and job.cancel.is_set()
    assert worker.queue_depth == 0
    assert got[-1].finish_reason == "length" and got[-1].usage is not None
    assert got[-1].usage.completion_tokens == 3


class HeldAfterFirstStep(BatchRunner):
    """Stand-in for the moment the server's loop closes in the middle of a generation: the first
    step runs, then the next waits until ``closed`` is set (the test closed the loop) and until its
    chunk is due for delivery at once (no batching of chunks hides the closed loop for a few
    steps), then the steps run on as usual."""

    def __init__(self, engine: Any, max_batch: int, closed: threading.Event) -> None:
        super().__init__(engine, max_batch)
        self.closed = closed
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps == 2:
            assert self.closed.wait(HANG_S)
            time.sleep(DELIVERY_INTERVAL_ALONE_S)
        super().step()


def test_a_generation_whose_loop_closed_mid_stream_is_cancelled_and_the_worker_serves_on(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    """Race: the request's event loop closes while the engine thread is still generating for it
    and delivering its chunks. Stand-in: ``HeldAfterFirstStep`` holds the second step until the
    test, having read the first chunk, really closed that loop. The generation is cancelled at the
    next step (engine time not spent on an answer nobody reads), its place is freed, and the next
    request is generated."""
    gone_loop = asyncio.new_event_loop()
    closed, ended = threading.Event(), threading.Event()
    finished: list[tuple[Usage, str]] = []

    def record(usage: Usage, reason: str) -> None:
        finished.append((usage, reason))
        ended.set()

    worker = EngineWorker(
        load=lambda name: engine,
        max_queue=4,
        finished=record,
        runner=lambda engine, max_batch: HeldAfterFirstStep(engine, max_batch, closed),
    )
    job = Job("tiny", generation(200), gone_loop)
    worker.start()
    try:
        worker.submit(job)
        first = gone_loop.run_until_complete(asyncio.wait_for(job.out.get(), HANG_S))
        gone_loop.close()  # the server's loop ends with the generation under way
        closed.set()
        assert ended.wait(HANG_S)
        following = Job("tiny", generation(3), loop)
        worker.submit(following)
        got = answer_of(loop, following)
    finally:
        worker.stop()
    assert isinstance(first, Chunk) and first.finish_reason is None
    assert job.cancel.is_set()
    [(usage, reason), _following] = finished
    assert reason == "cancelled"
    assert usage.completion_tokens == 2  # the token whose delivery found the loop closed; none after
    assert worker.queue_depth == 0
    assert got[-1].finish_reason == "length" and got[-1].usage is not None
    assert got[-1].usage.completion_tokens == 3


# --- app.py: a POST after the distributed group was lost --------------------------------------------


class TwoRanks(Group):
    """MLX's real group of one (what ``init`` gives outside a launch), said to have two ranks: this
    rank 0 and a rank 1 (host ``b``) that can be lost."""

    @property
    def size(self) -> int:
        return 2


def test_a_post_that_arrives_after_the_group_was_lost_gets_503_group_lost(
    hub_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Race: a rank of the distributed group is lost, and a POST arrives in the instant before the
    server stops for it (``_end_lost`` runs in the same turn of the loop that learns of the loss).
    Stand-in: MLX's real group of one, really declared lost (``Group.lose``) with an ``on_lost``
    that does not stop the server yet. Each POST gets 503 ``group_lost`` in its protocol's shape,
    nothing is generated, and ``/health`` says why."""
    told: list[str] = []
    group = TwoRanks(mx.distributed.init(), "ring", hosts=("a", "b"), on_lost=told.append)
    app = App(ServerSettings(hub_root=hub_root), group=group)

    async def scenario(app: App) -> list[Answer]:
        with caplog.at_level(logging.ERROR, logger="mlxk.generation"):
            group.lose(ConnectionResetError("rank 1 closed its connection"))
        return [
            await call(app, "POST", "/v1/chat/completions", chat()),
            await call(app, "POST", "/v1/messages", messages()),
            await call(app, "GET", "/health"),
        ]

    try:
        openai, anthropic, health = served(app, scenario)
    finally:
        app.worker.stop()  # App.close leaves a lost group's engine thread alone
    assert app.worker.model is None and app.worker.queue_depth == 0  # nothing loaded, nothing queued
    why = group.lost
    assert why == "the distributed group lost a rank (rank 1 (b)): rank 1 closed its connection"
    assert told == [why]
    assert openai.status == 503
    assert openai.json() == {
        "error": {"message": why, "type": "server_error", "param": None, "code": "group_lost"}
    }
    assert anthropic.status == 503
    assert anthropic.json() == {"type": "error", "error": {"type": "overloaded_error", "message": why}}
    assert health.status == 503 and health.json()["status"] == "group_lost"
