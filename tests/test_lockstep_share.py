"""The share of rank 0's decisions (``mlxk.generation.lockstep.share``) on a real ``mx.distributed``
group of one process: what every rank gets, and the roll call that finds a collective that came
back without a peer's part."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlxk.generation.lockstep import STEP, STOP, Decisions, Group, GroupLost, share
from mlxk.generation.request import GenerationRequest


class _PeerGoneSilently(Group):
    """MLX's singleton group, said to have two ranks: its all_sum holds rank 0's part only, as a
    ring collective would that returned without its lost peer's part and raised nothing."""

    @property
    def size(self) -> int:
        return 2


def test_rank_0_gets_its_own_message_back_from_a_group_of_one() -> None:
    group = Group(mx.distributed.init(), "ring")
    decisions = Decisions(joined=((3, GenerationRequest(prompt="Hello", max_tokens=5)),), cancelled=(1,))
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
    assert len(told) == 1
