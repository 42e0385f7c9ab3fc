"""One sequence's constraint, and the masks of a whole batch applied with plain mx operations.

A ``Constraint`` is told each token its sequence sampled (``advance``) and writes which tokens may
come next into a row of a bit mask (``fill``: bit ``j`` of word ``i`` is token ``32 i + j``, the
layout llguidance fills; a ``MaskBuffer`` holds the rows of a batch). While the model reasons
(the prompt left it inside a reasoning block, or it opened one as its first token) nothing is
constrained: the grammar starts after the end-of-reasoning marker, found in the bytes of the
sampled tokens whether the marker is one token or several.

``apply_masks`` turns the (rows, words) mask into ``-inf`` for every token a row may not take, in
one compiled mx function for the whole batch (rows of unconstrained sequences are all ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlxk.generation.tokens import Vocabulary


class Constraint:
    """The grammar state of one sequence.

    ``reasoning``: the (open, close) markers of the model's reasoning block, if it has one;
    ``in_reasoning``: the prompt ends inside that block; ``open_id``: the open marker as one token,
    which the model may choose as its first token instead of the grammar's (it thinks first)."""

    __slots__ = (
        "_close",
        "_open_id",
        "_tail",
        "broken",
        "matcher",
        "reasoning",
        "skip_next",
        "started",
        "vocab",
    )

    def __init__(
        self,
        matcher: Any,
        vocab: Vocabulary,
        *,
        reasoning: tuple[str, str] | None = None,
        in_reasoning: bool = False,
        open_id: int | None = None,
    ) -> None:
        self.matcher = matcher
        self.vocab = vocab
        self.reasoning = in_reasoning  # unconstrained until the close marker
        self._close = reasoning[1].encode() if reasoning is not None else b""
        self._open_id = open_id if reasoning is not None and not in_reasoning else None
        self._tail = b""
        self.started = False  # the grammar has consumed a token
        # the next token the loop reports was fed, not sampled (the prompt's last token, or a
        # token this constraint already consumed before the sequence moved into a batch)
        self.skip_next = True
        self.broken: str | None = None  # the matcher refused a token (cannot happen for masked ones)

    def advance(self, token: int) -> None:
        """The token the sequence just sampled (or was fed: see ``skip_next``)."""
        if self.skip_next:
            self.skip_next = False
            return
        if self.reasoning:
            self._tail = (self._tail + self.vocab.bytes_of(token))[-max(4 * len(self._close), 64) :]
            if self._close and self._close in self._tail:
                self.reasoning = False  # the answer starts with the next token
            return
        if not self.started and token == self._open_id:
            self.reasoning = True  # it thinks first
            self._open_id = None
            return
        self.started = True
        self._open_id = None
        if self.broken is None and not self.matcher.consume_token(token):
            self.broken = self.matcher.get_error() or f"token {token} refused"

    def fill(self, address: int, words: int) -> bool:
        """Writes the allowed next tokens as ``words`` int32 words at ``address`` (a row of a
        ``MaskBuffer``); returns False, writing nothing, when the next token is free."""
        if self.reasoning or self.broken is not None:
            return False
        self.matcher.unsafe_compute_mask_ptr(address, words * 4)
        return True

    @property
    def also_allowed(self) -> int | None:
        """A token allowed besides the grammar's: the reasoning block's open marker, until the
        answer starts (the model may think first)."""
        return None if self.started else self._open_id


def _bit(position: int) -> int:
    """Bit ``position`` of an int32 word (bit 31 is the sign bit)."""
    return -(1 << 31) if position == 31 else 1 << position


_APPLY: Callable[[Any, Any], Any] | None = None


def apply_masks(logits: Any, masks: Any) -> Any:
    """``logits`` (rows, ..., vocab) with ``-inf`` wherever the (rows, words) int32 ``masks`` has a
    0 bit; compiled once per process (mx recompiles it per shape on its own)."""
    global _APPLY
    if _APPLY is None:
        import mlx.core as mx

        def apply(logits: Any, masks: Any) -> Any:
            # made here, not captured: a lazy array belongs to the stream of the thread that
            # made it, and the engine thread of a later server may not be the first one
            shifts = mx.arange(32, dtype=mx.int32)
            vocab = logits.shape[-1]
            bits = ((masks[..., None] >> shifts) & 1).reshape(masks.shape[0], -1)[:, :vocab]
            bits = bits.reshape(logits.shape[0], *([1] * (logits.ndim - 2)), vocab)
            return mx.where(bits.astype(mx.bool_), logits, -mx.inf)

        _APPLY = mx.compile(apply)
    return _APPLY(logits, masks)


class MaskBuffer:
    """The numpy mask of a batch, reused from step to step (grown when the batch grows)."""

    def __init__(self, words: int, model_vocab: int | None) -> None:
        self.grammar_words = words
        self.words = max(words, ((model_vocab or 0) + 31) // 32)
        self._buffer: Any = None
        self._addresses: list[int] = []

    def rows(self, count: int) -> Any:
        import numpy as np

        if self._buffer is None or self._buffer.shape[0] < count:
            self._buffer = np.empty((max(count, 8), self.words), dtype=np.int32)
            # each row's address, worked out once: a numpy view and its ``ctypes`` per row and
            # step would allocate, on the engine thread, at the busiest moment of the step
            base, stride = self._buffer.ctypes.data, self._buffer.strides[0]
            self._addresses = [base + row * stride for row in range(self._buffer.shape[0])]
        return self._buffer[:count]

    def address(self, row: int) -> int:
        """Where row ``row`` of the last ``rows`` starts in memory."""
        return self._addresses[row]

    def masked(self, logits: Any, constraints: Sequence[Constraint | None]) -> Any:
        """``logits`` (one row per constraint, in order) with each constrained row's mask applied;
        the same array when no row is constrained this step."""
        import mlx.core as mx

        mask = self.rows(len(constraints))
        addresses, words = self._addresses, self.grammar_words
        wider = words < self.words  # the model's vocabulary is wider: the rest of a row is zero
        any_row = False
        for row, constraint in enumerate(constraints):
            if constraint is not None and constraint.fill(addresses[row], words):
                any_row = True
                if wider:
                    mask[row, words:] = 0
                extra = constraint.also_allowed
                if extra is not None:
                    mask[row, extra >> 5] |= _bit(extra & 31)
            else:
                mask[row] = -1
        if not any_row:
            return logits
        return apply_masks(logits, mx.array(mask))


class ConstraintProcessor:
    """The constraint as an mlx-lm logits processor, for the single-sequence loop
    (``generate_step``): called with the tokens so far and the next token's logits. The loop's
    sampler is wrapped (``watching``) so that the processor reads the token just sampled from the
    sampler's own output, an array the loop has already launched."""

    def __init__(self, constraint: Constraint, buffer: MaskBuffer) -> None:
        import mlx.core as mx

        self.constraint = constraint
        self.buffer = buffer
        self._sampled: Any = None  # the token array the sampler returned last
        # On a GPU, the forward is launched before the grammar waits for the previous token, so
        # that the grammar works while the forward runs. On MLX's CPU backend the grammar goes
        # first, with the MLX thread idle: this loop's host work per token outlasts the model's
        # on the small models where it matters, so the token is ready, and llguidance's calls
        # then took half the time (27 against 53 us a token on the tiny model, 1 stream 0.86x ->
        # 0.90x the unconstrained tokens/s): while the forward runs, the MLX thread frees arrays
        # the engine thread allocated, and the two threads wait on one lock of glibc's malloc.
        self._forward_first = mx.default_device() != mx.cpu

    def watching(self, sampler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``sampler``, telling this processor each token array it returns."""

        def sample(logprobs: Any) -> Any:
            self._sampled = sampler(logprobs)
            return self._sampled

        return sample

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        constraint = self.constraint
        if constraint.skip_next:
            constraint.skip_next = False
        else:
            # ``tokens`` is not read: it is a new concatenation, one more evaluation to launch
            # and wait for. The previous token was launched with the previous step.
            if self._forward_first:
                mx.async_eval(logits)  # type: ignore[no-untyped-call]
            constraint.advance(self._sampled.item())
        return self.buffer.masked(logits, (constraint,))
