"""Batch steps of the tiny model, timed inside each rank (run by ``test_bench_scale.py``, alone or
under ``mlx.launch``): ``python -m benchmarks.lockstep_steps SNAPSHOT STREAMS TOKENS ROUNDS``.

One process: the model whole, plain ``BatchRunner`` steps. Under ``mlx.launch`` (2 ranks): the
model sharded, paired rounds of plain steps (both ranks step the same batch with no sharing: what
the model's own collectives cost) and lockstep steps (rank 0's ``LockstepRunner``, rank 1
following: what sharing the batch changes adds). Rank 0 prints one JSON line per round.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from mlxk.generation.batch import BatchRunner
from mlxk.generation.engine import Engine, load_engine
from mlxk.generation.lockstep import Group, LockstepRunner, follow
from mlxk.generation.request import GenerationRequest, Message


def _requests(streams: int, tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(messages=(Message("user", f"Hello {i}"),), max_tokens=tokens)
        for i in range(streams)
    ]


def _plain(engine: Engine, streams: int, tokens: int) -> tuple[float, int]:
    runner = BatchRunner(engine)
    for request in _requests(streams, tokens):
        runner.add(request, lambda item: None, threading.Event())
    started, steps = time.perf_counter(), 0
    while runner.active:
        runner.step()
        steps += 1
    runner.close()
    return time.perf_counter() - started, steps


def _lockstep(engine: Engine, group: Group, streams: int, tokens: int) -> tuple[float, int]:
    if group.rank != 0:
        follow(engine, group)
        return 0.0, 0
    runner = LockstepRunner(engine, group)
    for request in _requests(streams, tokens):
        runner.add(request, lambda item: None, threading.Event())
    started, steps = time.perf_counter(), 0
    while runner.active:
        runner.step()
        steps += 1
    seconds = time.perf_counter() - started
    runner.close()  # rank 1 leaves follow() for the next round
    return seconds, steps


def main(snapshot: str, streams: int, tokens: int, rounds: int) -> None:
    import os

    if "MLX_RANK" not in os.environ:
        engine = load_engine(snapshot)
        for _ in range(rounds):
            seconds, steps = _plain(engine, streams, tokens)
            print(json.dumps({"ranks": 1, "mode": "plain", "seconds": seconds, "steps": steps}), flush=True)
        return
    from mlxk.generation.cluster import join, load_sharded

    group = join("ring")
    engine = load_sharded(group, snapshot)
    for _ in range(rounds):  # paired: each round measures both, in turn
        for mode in ("plain", "lockstep"):
            if mode == "plain":
                seconds, steps = _plain(engine, streams, tokens)
            else:
                seconds, steps = _lockstep(engine, group, streams, tokens)
            if group.rank == 0:
                print(json.dumps({"ranks": 2, "mode": mode, "seconds": seconds, "steps": steps}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
