"""``POST /v1/embeddings``: embedding models beside the chat engine, batched across requests.

The engine thread runs the embedding model (loaded on first use, or switched when a request
names another embedding model), between two decoding steps of the chat engine: one thread owns
MLX. Requests that arrive while the thread is busy wait together and go into the next forward pass
as one batch (texts with texts, token arrays with token arrays), then each gets its own slice of
the result, checked and shaped into its response on that thread.

``input`` is a string, a list of strings, a list of token ids or a list of such lists, as OpenAI
takes it (LangChain's OpenAIEmbeddings sends token arrays by default). Token ids are the model's
own; the vectors of token arrays are those of the ids as given (no special tokens added).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import queue
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxk.embedding.common import Embedder, Embeddings, shorten
from mlxk.errors import MlxkError
from mlxk.server.errors import HTTPError, shutting_down

MAX_INPUTS = 2048
MAX_BATCH_TEXTS = 256
INPUT_FORMS = "a string, a list of strings, a list of token ids, or a list of token id lists"


@dataclass(frozen=True)
class EmbedRequest:
    texts: list[str] | None  # exactly one of texts and ids
    ids: list[list[int]] | None
    encoding_format: str
    dimensions: int | None

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.ids or [])


@dataclass
class EmbedJob:
    model: str
    request: EmbedRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def settle(self, result: Any) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for this any more
            self.loop.call_soon_threadsafe(apply)


class EmbeddingWorker:
    """The embedding batches, run by whoever owns MLX: ``run_on_mlx_thread`` takes a callable and
    runs it there (the engine worker's ``call``)."""

    def __init__(
        self, load: Callable[[str], Any], run_on_mlx_thread: Callable[[Callable[[], None]], None]
    ) -> None:
        self._load = load
        self._jobs: queue.Queue[EmbedJob] = queue.Queue()
        self._encoder: Any = None
        self._model: str | None = None
        self._run_on_mlx_thread = run_on_mlx_thread

    def submit(self, job: EmbedJob) -> None:
        self._jobs.put(job)
        self._run_on_mlx_thread(self.run_pending)  # a later call finds the queue empty: no cost

    def stop(self) -> None:
        """The MLX thread has stopped: whoever still waits gets the server's 503."""
        while not self._jobs.empty():
            self._jobs.get_nowait().settle(shutting_down())

    def run_pending(self) -> None:
        """On the MLX thread: every job waiting now, in batches of up to MAX_BATCH_TEXTS texts."""
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            batch = [job]
            count = job.request.count
            while count < MAX_BATCH_TEXTS and not self._jobs.empty():  # whoever waited meanwhile joins
                following = self._jobs.get_nowait()
                batch.append(following)
                count += following.request.count
            for model in dict.fromkeys(j.model for j in batch):
                self._embed([j for j in batch if j.model == model], model)

    def _embed(self, jobs: list[EmbedJob], model: str) -> None:
        try:
            if self._model != model:  # the encoder in use stays until its successor has loaded
                self._encoder = self._load(model)
                self._model = model
        except BaseException as exc:
            for job in jobs:
                job.settle(exc)
            return
        embedder: Embedder = self._encoder
        ready = []
        for job in jobs:  # a request's own mistakes fail that request only, before the batch runs
            try:
                _check(embedder, job.request)
                ready.append(job)
            except (HTTPError, MlxkError) as exc:
                job.settle(exc)
        for tokens in (False, True):
            group = [j for j in ready if (j.request.ids is not None) == tokens]
            if group:
                self._embed_group(embedder, group)

    def _embed_group(self, embedder: Embedder, jobs: list[EmbedJob]) -> None:
        try:
            if jobs[0].request.ids is not None:
                result = embedder.embed_ids([row for j in jobs for row in j.request.ids or []])
            else:
                result = embedder.embed([t for j in jobs for t in j.request.texts or []])
        except BaseException as exc:
            for job in jobs:
                job.settle(exc)
            return
        start = 0
        for job in jobs:
            end = start + job.request.count
            try:
                job.settle(_reply(job, embedder, result, start, end))
            except HTTPError as exc:
                job.settle(exc)
            start = end


def _check(embedder: Embedder, request: EmbedRequest) -> None:
    if request.dimensions is not None:
        try:
            embedder.check_dimensions(request.dimensions)
        except MlxkError as exc:
            raise HTTPError(400, exc.message, param="dimensions") from None
    if request.ids is not None:
        vocab = embedder.vocab_size
        for i, row in enumerate(request.ids):
            for j, token in enumerate(row):
                if not 0 <= token < vocab:
                    raise HTTPError(
                        400,
                        f"input[{i}][{j}] is token id {token}, outside the model's vocabulary (0 to {vocab - 1})",
                        param="input",
                    )


def _reply(job: EmbedJob, embedder: Embedder, result: Embeddings, start: int, end: int) -> dict[str, Any]:
    too_long = [i for i, t in enumerate(result.truncated[start:end]) if t]
    if too_long:
        raise HTTPError(
            400, f"input {too_long[0]} is longer than the model's {embedder.max_length} tokens", param="input"
        )
    vectors = result.vectors[start:end]
    size = job.request.dimensions
    if size is not None and size != result.dimensions:
        vectors = shorten(vectors, size, normalize=True)
    tokens = sum(result.token_counts[start:end])
    return response_body(job.model, vectors, tokens, job.request.encoding_format)


def _token_rows(raw: list[Any]) -> list[list[int]] | None:
    """The token arrays of ``input`` (one list of ints, or a list of them); None for other forms."""
    rows = [raw] if all(isinstance(t, int) and not isinstance(t, bool) for t in raw) else raw
    if not all(isinstance(row, list) for row in rows):
        return None
    for row in rows:
        if not row or not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
            return None
    return rows


def parse_request(body: dict[str, Any]) -> EmbedRequest:
    """The checked fields of an embeddings request."""
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise HTTPError(400, f"'input' must be {INPUT_FORMS}, not empty", param="input")
    texts: list[str] | None = None
    ids = None if all(isinstance(t, str) for t in items) else _token_rows(items)
    if ids is None:
        if not all(isinstance(t, str) for t in items):
            raise HTTPError(400, f"'input' must be {INPUT_FORMS} (non-empty lists)", param="input")
        texts = items
        if any(not t for t in texts):
            raise HTTPError(400, "'input' may not contain empty strings", param="input")
    if len(texts if texts is not None else ids or []) > MAX_INPUTS:
        raise HTTPError(400, f"'input' takes at most {MAX_INPUTS} inputs", param="input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise HTTPError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise HTTPError(400, "'dimensions' must be a positive integer", param="dimensions")
    return EmbedRequest(texts, ids, fmt, dimensions)


def response_body(model: str, vectors: list[list[float]], tokens: int, fmt: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> Any:
        if fmt == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
