"""Rank 0's side of continuous batching on several ranks (``mlxk.generation.lockstep``), in one
process: MLX's real ``mx.distributed`` group of one (what ``init`` gives outside a launch), so the
shares are real collectives whose sum is rank 0's own message, and a tiny real model. What the
other ranks do is tested with real ranks in ``tests/test_distributed*.py``."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import mlx.core as mx
import pytest

from mlxk.generation.batch import BatchRunner
from mlxk.generation.chunks import Chunk
from mlxk.generation.lockstep import STEP, STOP, Decisions, Group, GroupLost, LockstepRunner, share
from mlxk.generation.request import GenerationRequest, Message, Sampling
from tests.modelfix import build_tiny_chat_model, install


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("lockstep")
    yield load_engine(str(install(hub, "test/lockstep", build_tiny_chat_model()).snapshot))


def one_rank(told: list[str] | None = None) -> Group:
    return Group(
        mx.distributed.init(), "ring", hosts=("a",), on_lost=(told if told is not None else []).append
    )


def request(tokens: int = 20) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "Hello"),), max_tokens=tokens, sampling=Sampling(temperature=0.0)
    )


class _PeerGoneSilently(Group):
    """MLX's group of one, said to have two ranks: its all_sum holds rank 0's part only, as a ring
    collective would that came back without its lost peer's part and raised nothing."""

    @property
    def size(self) -> int:
        return 2


class _StepFails(BatchRunner):
    """Stand-in: a batch whose forward pass raises ``error`` (a device out of memory, or a
    collective inside the model that lost its peer); the CPU backend here fails neither way."""

    error = RuntimeError("out of memory")

    def step(self) -> None:
        raise self.error


def test_rank_0_gets_its_own_message_back_from_a_group_of_one() -> None:
    group = one_rank()
    decisions = Decisions(joined=((3, request()),), cancelled=(1,))
    assert share(group, STEP, decisions, 0.125) == (STEP, decisions, 0.125)
    assert share(group, STOP) == (STOP, Decisions(), 0.0)
    assert group.lost is None


def test_a_share_without_a_peers_part_loses_the_group_once() -> None:
    told: list[str] = []
    group = _PeerGoneSilently(mx.distributed.init(), "ring", hosts=("a", "b"), on_lost=told.append)
    with pytest.raises(GroupLost, match=r"lost a rank \(rank 1 \(b\)\): a share came back with 1 of 2 ranks"):
        share(group, STEP)
    assert told == [group.lost]
    with pytest.raises(GroupLost):  # every later share fails at once, without a collective
        share(group, STEP)
    # a second failure (the watchdog's, say) keeps the first reason and tells no one again
    assert str(group.lose(TimeoutError("a step made no progress"))) == told[0]
    assert len(told) == 1


def test_rank_0s_runner_answers_as_the_batch_runner_does(engine: Any) -> None:
    alone: list[Chunk | BaseException] = []
    batch = BatchRunner(engine)
    batch.add(request(), alone.append, threading.Event())
    while batch.active:
        batch.step()
    shared: list[Chunk | BaseException] = []
    runner = LockstepRunner(engine, one_rank())
    runner.add(request(), shared.append, threading.Event())
    assert runner.active == 1  # waiting for the next share
    while runner.active:
        runner.step()
    assert [c.content for c in shared if isinstance(c, Chunk)] == [
        c.content for c in alone if isinstance(c, Chunk)
    ]
    assert isinstance(shared[-1], Chunk) and shared[-1].finish_reason == "length"


def test_a_failed_batch_ends_the_requests_still_waiting_to_join(engine: Any) -> None:
    runner = LockstepRunner(engine, one_rank())
    waiting: list[Chunk | BaseException] = []
    runner.add(request(), waiting.append, threading.Event())
    error = RuntimeError("the batch failed")
    runner.fail(error)
    assert waiting == [error] and runner.active == 0


@pytest.mark.parametrize(
    ("error", "lost"),
    [(RuntimeError("out of memory"), False), (RuntimeError("[ring] connection to a peer was lost"), True)],
)
def test_a_failed_step_loses_the_group_only_for_a_lost_peer(
    engine: Any, error: RuntimeError, lost: bool
) -> None:
    told: list[str] = []
    group = one_rank(told)
    runner = LockstepRunner(engine, group)
    runner._runner = _StepFails(engine)  # the stand-in batch behind rank 0's runner
    runner._runner.error = error
    runner.add(request(), lambda item: None, threading.Event())
    with pytest.raises(GroupLost if lost else RuntimeError) as raised:
        runner.step()  # the share (the request joins the failing batch), then its first step
    assert (group.lost is not None) is lost and len(told) == int(lost)
    if not lost:  # the worker ends this batch; the group serves on
        assert raised.value is error
        runner.fail(error)
        assert runner.active == 0
        runner.add(request(), lambda item: None, threading.Event())
        assert runner.active == 1


def test_after_a_lost_rank_nothing_joins_and_the_runner_closes_without_a_share(engine: Any) -> None:
    group = _PeerGoneSilently(mx.distributed.init(), "ring")
    runner = LockstepRunner(engine, group)
    with pytest.raises(GroupLost):
        runner.step()  # the idle heartbeat finds the group short of a rank
    with pytest.raises(GroupLost):
        runner.add(request(), lambda item: None, threading.Event())
    assert runner.active == 0
    runner.close()  # no STOP share to the lost rank (it would wait for a peer that is gone)


class _FirstBatchFails(BatchRunner):
    """Stand-in for rank 1's batches: the first one's step raises ``error`` (a device out of
    memory, a lost peer, or a bug), every later one runs the real model. ``made`` lists them."""

    error: Exception = RuntimeError("out of memory")
    made: ClassVar[list[_FirstBatchFails]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = 0
        self.made.append(self)

    def step(self) -> None:
        if self is self.made[0]:
            raise self.error
        super().step()
        self.steps += 1


def scripted_rank_0(*shares: tuple[int, Decisions, float]) -> Callable[..., tuple[int, Decisions, float]]:
    """Stand-in for rank 0 on the other side of ``follow``'s shares: each call gets the next of
    ``shares`` (then STOP). A real rank 0 cannot be made to fail in the middle of rank 1's step
    on purpose, so its decisions are scripted and the step's failure is ``_FirstBatchFails``."""
    script = iter(shares)

    def share_from_rank_0(group: Group, what: int, *rest: Any) -> tuple[int, Decisions, float]:
        return next(script, (STOP, Decisions(), 0.0))

    return share_from_rank_0


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (RuntimeError("[ring] connection to a peer was lost"), True),
        (RuntimeError("out of memory"), True),
        (ValueError("a bug in the batch"), False),
    ],
)
def test_a_step_that_fails_on_rank_1_for_the_backend_loses_the_group_and_a_bug_ends_only_its_batch(
    engine: Any, monkeypatch: pytest.MonkeyPatch, error: Exception, lost: bool
) -> None:
    """A step of rank 1 that the backend fails (a RuntimeError: a lost peer, or its device out of
    memory, which rank 0 may not share) ends ``follow`` with GroupLost: rank 1 cannot go on in step
    with a rank 0 that may not have failed. Any other failure is the same bug on every rank: that
    batch ends, and the next request rank 0 shares runs in a new one to its end."""
    from mlxk.generation import lockstep

    monkeypatch.setattr(_FirstBatchFails, "made", [])
    monkeypatch.setattr(_FirstBatchFails, "error", error)
    monkeypatch.setattr(lockstep, "BatchRunner", _FirstBatchFails)
    monkeypatch.setattr(
        lockstep,
        "share",
        scripted_rank_0(
            (STEP, Decisions(joined=((1, request(4)),)), 0.0),
            (STEP, Decisions(joined=((2, request(4)),)), 0.0),
        ),
    )
    told: list[str] = []
    group = one_rank(told)
    if lost:
        with pytest.raises(GroupLost, match=re.escape(str(error))):
            lockstep.follow(engine, group)
        assert told == [group.lost] and len(_FirstBatchFails.made) == 1
    else:
        lockstep.follow(engine, group)  # returns at rank 0's STOP: the group served on
        assert group.lost is None and told == []
        first, second = _FirstBatchFails.made
        assert first.active == 0  # the failed batch ended its request
        assert second.active == 0 and second.steps >= 4  # request 2 ran in a new batch to its end
