"""``POST /v1/embeddings``: sentence encoders beside the chat engine, batched across requests.

The engine thread runs the encoder (loaded on first use, or switched when a request names another
embedding model), between two decoding steps of the chat engine: one thread owns MLX. Requests
that arrive while the thread is busy wait together and go into the next forward pass as one batch,
then each gets its own slice of the result.
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

from mlxk.server.errors import HTTPError, shutting_down

MAX_INPUTS = 2048
MAX_BATCH_TEXTS = 256


@dataclass
class EmbedJob:
    model: str
    texts: list[str]
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
            texts = len(job.texts)
            while texts < MAX_BATCH_TEXTS and not self._jobs.empty():  # whoever waited meanwhile joins
                following = self._jobs.get_nowait()
                batch.append(following)
                texts += len(following.texts)
            for model in dict.fromkeys(j.model for j in batch):
                self._embed([j for j in batch if j.model == model], model)

    def _embed(self, jobs: list[EmbedJob], model: str) -> None:
        try:
            if self._model != model:  # the encoder in use stays until its successor has loaded
                self._encoder = self._load(model)
                self._model = model
            texts = [t for j in jobs for t in j.texts]
            result = self._encoder.embed(texts, normalize=True)
        except BaseException as exc:
            for job in jobs:
                job.settle(exc)
            return
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            job.settle((self._encoder, result, start, end))
            start = end


def parse_inputs(body: dict[str, Any]) -> tuple[list[str], str, int | None]:
    """(texts, encoding_format, dimensions) of an embeddings request, checked."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise HTTPError(400, "'input' must be a string or a non-empty list of strings", param="input")
    if len(texts) > MAX_INPUTS or not all(isinstance(t, str) for t in texts):
        raise HTTPError(
            400, f"'input' takes at most {MAX_INPUTS} strings (token arrays are not supported)", param="input"
        )
    if any(not t for t in texts):
        raise HTTPError(400, "'input' may not contain empty strings", param="input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise HTTPError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise HTTPError(400, "'dimensions' must be a positive integer", param="dimensions")
    return texts, fmt, dimensions


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
