"""The token masks of constrained decoding: bit ``j`` of word ``i`` of a row allows token ``32 i + j``
(llguidance's layout), and a 0 bit makes that token's logit ``-inf`` (``apply_masks``, checked here
against the layout on every shape the batch and the single-sequence loop give it)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxk.generation.grammar.constraint import apply_masks


def random_masks(rows: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(int32 masks of ``rows`` x words, the bool table of allowed tokens they encode)."""
    rng = np.random.default_rng(seed)
    allowed = rng.random((rows, vocab)) < 0.3
    words = (vocab + 31) // 32 + 1  # wider than the vocabulary, as a model's own vocabulary can be
    masks = np.zeros((rows, words), dtype=np.int64)
    for row, token in zip(*np.nonzero(allowed), strict=True):
        masks[row, token >> 5] |= 1 << (token & 31)
    return masks.astype(np.uint32).view(np.int32), allowed  # bit 31 is the sign bit


@pytest.mark.parametrize(("rows", "vocab", "middle"), [(1, 100, ()), (8, 257, (1,)), (3, 64, (1,))])
def test_a_zero_bit_makes_that_tokens_logit_minus_infinity_and_nothing_else(
    rows: int, vocab: int, middle: tuple[int, ...]
) -> None:
    masks, allowed = random_masks(rows, vocab, seed=rows * vocab)
    logits = mx.random.normal((rows, *middle, vocab), key=mx.random.key(vocab))
    expected = np.where(allowed.reshape(rows, *middle, vocab), np.array(logits), -np.inf)
    assert np.array_equal(np.array(apply_masks(logits, mx.array(masks))), expected)


def test_a_row_of_ones_leaves_its_logits_as_they_were() -> None:
    masks = np.full((2, 4), -1, dtype=np.int32)
    masks[1, 0] = 0  # the second row may not take tokens 0..31
    logits = mx.arange(200, dtype=mx.float32).reshape(2, 100)
    out = np.array(apply_masks(logits, mx.array(masks)))
    assert np.array_equal(out[0], np.arange(100, dtype=np.float32))
    assert np.isneginf(out[1, :32]).all() and np.array_equal(out[1, 32:], np.arange(132, 200))
