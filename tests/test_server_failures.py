"""The engine thread's edges on a tiny real model: a client that leaves while its model loads, and
a decoding step that fails after some text went out (the text reaches the client, then the error;
the thread lives on and serves the next request). The server's answers to what only a bug or a
device failure causes (named stand-ins): a handler that raises (500 in the protocol's shape), an
embedding batch that fails, and a step that fails while one or several streams are open."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlxk.generation.batch import BatchRunner
from mlxk.generation.chunks import Chunk
from mlxk.generation.request import GenerationRequest, Message, Sampling
from mlxk.server.app import App, ServerSettings
from mlxk.server.asgi import Receive, Scope, Send
from mlxk.server.embeddings import EmbeddingWorker, EmbedJob, EmbedRequest
from mlxk.server.openai.endpoints import Headers
from mlxk.server.worker import EngineWorker, Job, chunks
from tests.embedfix import build_tiny_qwen3_embedding
from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import served

CHAT = "test/worker-edges"
HANG_S = 300  # only turns a hang (a path that broke) into a failure; no test waits on it


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("worker-edges")
    return install(hub, CHAT, build_tiny_chat_model()).snapshot


@pytest.fixture(scope="module")
def engine(snapshot: Path) -> Any:
    from mlxk.generation.engine import load_engine

    return load_engine(str(snapshot))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop that runs only when the test reads: the engine thread's deliveries wait in it
    until then (so what a job received is read after the thread has stopped)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def request(tokens: int = 40) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "Hello"),), max_tokens=tokens, sampling=Sampling(temperature=0.0)
    )


def received(loop: asyncio.AbstractEventLoop, job: Job) -> tuple[list[Chunk], BaseException | None]:
    """What ``chunks(job)`` hands its reader: the chunks, and the error that ended them, if any."""

    async def read() -> tuple[list[Chunk], BaseException | None]:
        got: list[Chunk] = []
        try:
            async for chunk in chunks(job):
                got.append(chunk)
        except Exception as exc:
            return got, exc
        return got, None

    return loop.run_until_complete(read())


def test_a_client_that_leaves_while_its_model_loads_is_cancelled_and_the_model_stays(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    job = Job("tiny", request(), loop)
    loading, admitted = threading.Event(), threading.Event()

    def load(name: str) -> Any:
        job.cancel.set()  # the client goes away while the model loads
        loading.set()
        return engine

    worker = EngineWorker(load=load, max_queue=4)
    worker.start()
    try:
        worker.submit(job)
        assert loading.wait(timeout=60)
        worker.call(admitted.set)  # runs on the engine thread once the job's turn is over
        assert admitted.wait(timeout=60)
    finally:
        worker.stop()
    got, error = received(loop, job)
    assert error is None
    assert [(c.content, c.finish_reason, c.usage) for c in got] == [("", "cancelled", None)]
    assert worker.model == "tiny"  # loaded for it, and kept for the next request
    assert worker.queue_depth == 0


def test_a_task_that_raises_on_the_engine_thread_is_logged_and_the_thread_serves_on(
    engine: Any, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    def buggy() -> None:  # stand-in for a bug in a task (a count, an embedding batch)
        raise HandlerBug("a bug in a task")

    after, done = threading.Event(), threading.Event()
    job = Job("tiny", request(tokens=3), loop)
    worker = EngineWorker(load=lambda name: engine, max_queue=4, finished=lambda usage, reason: done.set())
    worker.start()
    try:
        with caplog.at_level("ERROR", logger="mlxk.server"):
            worker.call(buggy)
            worker.call(after.set)  # the next task still runs
            assert after.wait(timeout=60)
        worker.submit(job)
        assert done.wait(timeout=60)
    finally:
        worker.stop()
    [logged] = [r for r in caplog.records if r.getMessage() == "a task on the engine thread failed"]
    assert logged.exc_info is not None and logged.exc_info[0] is HandlerBug
    got, error = received(loop, job)  # and so does the next generation
    assert error is None and got[-1].finish_reason == "length"


class StepFailed(RuntimeError):
    pass


class FailingStep(BatchRunner):
    """Stand-in for a decoding step that fails (a device out of memory, say: no such failure can
    be caused with the CPU backend here). Steps normally until ``FAIL_AT`` steps were taken, then
    raises ``StepFailed`` and sets ``failed``."""

    FAIL_AT = 6

    def __init__(self, engine: Any, max_batch: int, failed: threading.Event) -> None:
        super().__init__(engine, max_batch)
        self.steps = 0
        self.failed = failed

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.FAIL_AT:
            self.failed.set()
            raise StepFailed("the device failed")
        super().step()


def test_a_failed_step_delivers_the_text_before_the_error_and_the_worker_lives_on(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    reference = "".join(c.content for c in engine.generate(request(tokens=FailingStep.FAIL_AT)))
    assert reference  # the steps before the failure wrote text
    first = Job("tiny", request(), loop)
    second = Job("tiny", request(tokens=3), loop)
    failed, second_done = threading.Event(), threading.Event()
    worker = EngineWorker(
        load=lambda name: engine,
        max_queue=4,
        finished=lambda usage, reason: second_done.set(),  # only the second ends with usage
        runner=lambda engine, max_batch: FailingStep(engine, max_batch, failed),
    )
    worker.start()
    try:
        worker.submit(first)
        assert failed.wait(timeout=120)
        worker.submit(second)
        assert second_done.wait(timeout=120)
    finally:
        worker.stop()
    got, error = received(loop, first)
    text = "".join(c.content for c in got)
    assert isinstance(error, StepFailed)  # the error, after the text (none of it lost)
    assert text and reference.startswith(text)
    assert all(c.finish_reason is None for c in got)
    again, error = received(loop, second)  # a fresh runner serves the next request
    assert error is None and again[-1].finish_reason == "length"
    assert again[-1].usage is not None and again[-1].usage.completion_tokens == 3


# --- the server's answers to bugs and failures (the real App, through ASGI) ---------------------


class HandlerBug(Exception):
    """What a bug in a handler raises (no handler raises anything but ``HTTPError``/``MlxkError``
    on purpose)."""


class StepBug(Exception):
    """A step that fails with an exception nobody foresaw (not an ``MlxkError``)."""


class DeviceFailed(RuntimeError):
    """What mlx raises for a device that fails mid-step (out of memory on Metal or CUDA): a
    ``RuntimeError``, the type Granian also raises for a socket that went away."""


class FailingStepTogether(BatchRunner):
    """Stand-in for a step that fails while ``TOGETHER`` requests are running: steps normally,
    counting only the steps taken with all of them in the batch, and raises ``error`` at the
    ``FAIL_AT``-th such step (so each has had text by then, whatever the order they came in)."""

    FAIL_AT = 4

    def __init__(self, engine: Any, max_batch: int, together: int, error: Exception | None = None) -> None:
        super().__init__(engine, max_batch)
        self.together = together
        self.error = error or StepBug("the step failed")
        self.steps = 0

    def step(self) -> None:
        if self.active >= self.together:
            self.steps += 1
            if self.steps >= self.FAIL_AT:
                raise self.error
        super().step()


@pytest.fixture(scope="module")
def hub_root(snapshot: Path) -> str:
    return str(snapshot.parents[2])  # hub/models--test--worker-edges/snapshots/<hash>


def chat_body(n: int = 1, stream: bool = False, tokens: int = 40) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Hello"}]
    return {
        "model": CHAT,
        "messages": messages,
        "max_tokens": tokens,
        "n": n,
        "stream": stream,
        "temperature": 0,
    }


async def post(app: App, path: str, body: dict[str, Any]) -> tuple[int, bytes, bool]:
    """POST ``body`` to ``app`` through ASGI, a client that stays: the status, the body, and
    whether the body was ended properly (a last ``more_body: False``) rather than cut short."""
    raw = orjson.dumps(body)
    sent: list[dict[str, Any]] = []
    stays = asyncio.Event()  # never set: the client does not leave
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await stays.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    await asyncio.wait_for(app(scope, receive, send), timeout=HANG_S)  # a guard against a hang only
    start = [m for m in sent if m["type"] == "http.response.start"]
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    ended = bool(bodies) and not bodies[-1].get("more_body", False)
    return start[0]["status"], b"".join(m.get("body", b"") for m in bodies), ended


def events(body: bytes) -> list[Any]:
    """The data of each server-sent event (``[DONE]`` as the string)."""
    found: list[Any] = []
    for block in body.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                found.append(data if data == "[DONE]" else orjson.loads(data))
    return found


def test_a_bug_in_a_handler_is_answered_500_in_the_protocols_shape_and_the_server_lives_on(
    hub_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(ServerSettings(hub_root=hub_root))
    calls = 0

    async def buggy(scope: Scope, receive: Receive, send: Send, cors: Headers) -> int:
        nonlocal calls
        calls += 1
        raise HandlerBug("a bug")

    app.openai.chat = buggy  # type: ignore[method-assign]  # the stand-in handlers
    app.messages.messages = buggy  # type: ignore[method-assign]

    async def scenario(app: App) -> list[tuple[int, bytes, bool]]:
        anthropic = {"model": CHAT, "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
        return [
            await post(app, "/v1/chat/completions", chat_body()),
            await post(app, "/v1/messages", anthropic),
            await post(app, "/v1/completions", {"model": CHAT, "prompt": "Hello", "max_tokens": 3}),
        ]

    with caplog.at_level("INFO", logger="mlxk.server"):
        (o_status, o_body, _), (a_status, a_body, _), (status, body, _) = served(app, scenario)
    assert calls == 2
    assert o_status == 500
    assert orjson.loads(o_body) == {
        "error": {"message": "internal server error", "type": "server_error", "param": None, "code": None}
    }
    assert a_status == 500
    assert orjson.loads(a_body) == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal server error"},
    }
    failures = [r for r in caplog.records if r.getMessage().endswith(" failed")]
    assert [r.getMessage() for r in failures] == [
        "POST /v1/chat/completions failed",
        "POST /v1/messages failed",
    ]
    assert all(r.exc_info is not None and r.exc_info[0] is HandlerBug for r in failures)
    assert "a bug" not in o_body.decode() + a_body.decode()  # the traceback stays in the log
    assert status == 200  # the server lives on: the next request is generated
    assert orjson.loads(body)["usage"]["completion_tokens"] == 3
    assert "/v1/chat/completions 500 " in caplog.text and "/v1/completions 200 " in caplog.text


STREAMS: dict[str, dict[str, Any]] = {  # a stream of each protocol, and how its text is read
    "/v1/chat/completions": chat_body(stream=True),
    "/v1/messages": {
        "model": CHAT,
        "max_tokens": 40,
        "stream": True,
        "messages": [{"role": "user", "content": "Hello"}],
    },
    "/v1/responses": {"model": CHAT, "max_output_tokens": 40, "stream": True, "input": "Hello"},
}


def failure_logged(caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    [failure] = [r for r in caplog.records if r.getMessage() == "a stream failed after it began"]
    assert failure.exc_info is not None and failure.exc_info[1] is error  # with its traceback


@pytest.mark.parametrize("error", [StepBug("the step failed"), DeviceFailed("[metal] out of memory")])
@pytest.mark.parametrize("path", list(STREAMS))
def test_a_step_failing_after_the_stream_began_ends_it_with_the_protocols_error_event(
    hub_root: str, caplog: pytest.LogCaptureFixture, path: str, error: Exception
) -> None:
    app = App(ServerSettings(hub_root=hub_root))
    runners: list[BatchRunner] = []

    def runner(engine: Any, max_batch: int) -> BatchRunner:  # the first fails, the next is sound
        runners.append(
            FailingStepTogether(engine, max_batch, 1, error) if not runners else BatchRunner(engine)
        )
        return runners[-1]

    app.worker._new_runner = runner

    async def scenario(app: App) -> list[tuple[int, bytes, bool]]:
        return [await post(app, path, STREAMS[path]), await post(app, "/v1/chat/completions", chat_body())]

    with caplog.at_level("INFO", logger="mlxk.server"):
        [(status, body, ended), (after, _answer, _)] = served(app, scenario)
    got = events(body)
    assert status == 200 and ended  # the answer had begun; it ends properly, not cut short
    assert "[DONE]" not in got  # not ended as if whole
    last = got[-1]
    if path == "/v1/chat/completions":
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in got[:-1])
        assert last == {
            "error": {"message": "internal server error", "type": "server_error", "param": None, "code": None}
        }
    elif path == "/v1/messages":
        text = "".join(e["delta"].get("text", "") for e in got if e["type"] == "content_block_delta")
        assert last == {"type": "error", "error": {"type": "api_error", "message": "internal server error"}}
    else:
        text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
        assert last["type"] == "response.failed"
        assert last["response"]["error"]["message"] == "internal server error"
    assert text  # the text before the failure went out first
    assert str(error) not in body.decode()  # what failed stays in the log
    failure_logged(caplog, error)
    assert f"POST {path} 200 " in caplog.text  # not logged as a client that left (499)
    assert after == 200  # the worker lives on: the next request is generated


def test_one_of_several_streams_failing_ends_the_answer_and_the_worker_serves_the_next(
    hub_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(ServerSettings(hub_root=hub_root))
    runners: list[FailingStepTogether] = []

    def runner(engine: Any, max_batch: int) -> FailingStepTogether:
        runners.append(FailingStepTogether(engine, max_batch, 2))
        return runners[-1]

    app.worker._new_runner = runner

    async def scenario(app: App) -> list[tuple[int, bytes, bool]]:
        return [
            await post(app, "/v1/chat/completions", chat_body(n=2, stream=True)),
            await post(app, "/v1/chat/completions", chat_body(tokens=3)),
        ]

    with caplog.at_level("INFO", logger="mlxk.server"):
        [(status, body, ended), (after, answer, _)] = served(app, scenario)
    got = events(body)
    assert status == 200 and ended
    *chunks, last = got
    texts = {0: "", 1: ""}
    for e in chunks:
        choice = e["choices"][0]
        assert choice["finish_reason"] is None
        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts[0] and texts[1]  # both choices streamed text before the step failed
    assert last["error"]["type"] == "server_error" and "[DONE]" not in got  # one error ends both
    failure_logged(caplog, runners[0].error)
    assert runners[0].steps == FailingStepTogether.FAIL_AT  # it failed while both were running
    assert after == 200 and orjson.loads(answer)["usage"]["completion_tokens"] == 3
    assert len(runners) == 2  # a fresh runner served it


class EmbedFailed(RuntimeError):
    pass


class FailingEmbedder:
    """Stand-in for an embedding model whose first forward pass fails (a device out of memory,
    say); the later ones are the real model's."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def embed(self, texts: list[str]) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise EmbedFailed("the device failed")
        return self.real.embed(texts)


def test_a_failed_embedding_batch_fails_each_of_its_requests_and_the_next_is_served(
    tmp_path: Path,
) -> None:
    from mlxk.embedding.loader import load_embedder

    embedder = tmp_path / "hub"
    snapshot = install(embedder, "test/embed", build_tiny_qwen3_embedding()).snapshot
    failing = FailingEmbedder(load_embedder(str(snapshot)))

    def no_chat_model(name: str) -> Any:
        raise AssertionError("no chat model is asked for here")

    worker = EngineWorker(load=no_chat_model, max_queue=4)
    batches = EmbeddingWorker(lambda name: failing, worker.call)

    def request(*texts: str) -> EmbedRequest:
        return EmbedRequest(texts=list(texts), ids=None, encoding_format="float", dimensions=None)

    async def scenario() -> tuple[list[BaseException | None], Any]:
        loop = asyncio.get_running_loop()
        hold, holding = threading.Event(), threading.Event()

        def block() -> None:  # the engine thread is busy while both requests arrive
            holding.set()
            hold.wait()

        worker.call(block)
        assert await asyncio.to_thread(holding.wait, 60)
        first, second = (
            EmbedJob("test/embed", request("a"), loop),
            EmbedJob("test/embed", request("b", "c"), loop),
        )
        batches.submit(first)
        batches.submit(second)
        hold.set()  # one batch: both jobs
        outcomes: list[BaseException | None] = []
        for job in (first, second):
            try:
                await asyncio.wait_for(job.future, HANG_S)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        after = EmbedJob("test/embed", request("d"), loop)
        batches.submit(after)
        return outcomes, await asyncio.wait_for(after.future, HANG_S)

    worker.start()
    try:
        outcomes, reply = asyncio.run(scenario())
    finally:
        worker.stop()
        batches.stop()
    assert [type(o) for o in outcomes] == [EmbedFailed, EmbedFailed]  # the same error for each
    assert outcomes[0] is outcomes[1]
    assert failing.calls == 2  # one failed batch with both, then the next request's
    assert [d["index"] for d in reply["data"]] == [0] and len(reply["data"][0]["embedding"]) == 64
