"""``serve --distributed``: what every rank does before serving, and what the ranks other than 0
do instead of serving (they follow rank 0's batch steps with their shard of the model)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

from mlxk.cache.scan import CacheLocation

if TYPE_CHECKING:
    from mlxk.generation.lockstep import Group


def join_group(location: CacheLocation, model: str, backend: str, stall_s: float) -> tuple[Group, str]:
    """This rank's group and the model's cached name, once every rank has checked the model in
    its own cache (one error naming each host with a problem, on every rank, otherwise)."""
    from mlxk.cache.runnable import runnable_model
    from mlxk.generation.cluster import agree_on_model, join

    group = join(backend)
    group.stall_s = stall_s
    found = agree_on_model(group, lambda name: runnable_model(location, name, shards=group.size), model)
    group.watch()
    return group, str(found.model.name)


def follow_rank_0(group: Group, location: CacheLocation, model: str, output_format: str | None) -> None:
    """Load this rank's shard, then step with rank 0 until it stops (returns) or a rank is lost
    (raises GroupLost: the command exits non-zero)."""
    from mlxk.cache.runnable import runnable_model
    from mlxk.generation.cluster import load_sharded
    from mlxk.generation.lockstep import follow

    def lost(why: str) -> None:  # from the watchdog: the main thread may wait on the lost rank for ever
        sys.stderr.write(f"mlxk serve: rank {group.rank}: {why}\n")
        sys.stderr.flush()
        os._exit(1)

    # set before the shard loads: rank 0 serves (and may be stopped) as soon as both ranks hold
    # their shard, while this rank may still be on its way from the load to ``follow``
    group.on_lost = lost
    engine = load_sharded(group, str(runnable_model(location, model, shards=group.size).path))
    if output_format is not None:  # the same segmenter as rank 0's: the same finishing decisions
        engine.use_format(output_format)
    _leave_with_rank_0(group.rank)
    follow(engine, group)


def _leave_with_rank_0(rank: int) -> None:
    """A stop signal reaches every rank at once (Ctrl-C on mlx.launch, an orchestrator): this rank
    stays while rank 0 drains, and leaves when rank 0 tells it to; a second signal leaves now."""
    signals = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(1)
        sys.stderr.write(
            f"mlxk serve: rank {rank} stops with rank 0 (it drains); a second signal exits now\n"
        )

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
