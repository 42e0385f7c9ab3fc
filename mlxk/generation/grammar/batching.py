"""Constraints inside mlx-lm's continuous batching, applied once per step for the whole batch.

mlx-lm's per-sequence logits processors slice the batch's logits row by row and concatenate them
again (measured: 0.6x the tokens/s of 8 unconstrained streams on a tiny model); a grammar mask
wants one operation for the batch. mlx-lm's ``GenerationBatch`` calls ``self.model(inputs,
cache=...)`` at each decoding step with the tokens the previous step sampled, then turns the
logits into log-probabilities and samples. So the model each generation batch calls is wrapped
(``MaskedForward``): it launches the forward (on the CPU, its first layer), advances the
constraints of the batch's rows with those input tokens while MLX computes it, and returns the
logits with the batch's masks applied, before any processor or sampler sees them (so logprobs and
sampling see the masked distribution).

Two generation batches exist: the generator's main one (wrapped once, for good) and the one made
for sequences whose prefill just ended, whose first decoding step (their first token) runs before
it joins the main one; ``PromptBatch.generate`` hands that one a wrapped model too. Prefill itself
calls the plain model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from mlxk.generation.grammar.constraint import Constraint, MaskBuffer
from mlxk.generation.grammar.overlap import forward_then, hookable_layers

Lookup = Callable[[int], "Constraint | None"]  # batch uid -> its constraint


class MaskedForward:
    """The model as a generation batch calls it, with the constraints of the rows ``uids()``.

    ``sampled()``, where given, is the batch's array of the tokens its previous step sampled (one
    per row): the array the model's ``inputs`` are a reshape of, already launched with that step."""

    __slots__ = ("_layers", "active", "buffer", "lookup", "model", "sampled", "uids")

    def __init__(
        self,
        model: Any,
        lookup: Lookup,
        buffer: Callable[[], MaskBuffer],
        active: Callable[[], bool],
        uids: Callable[[], list[int]],
        sampled: Callable[[], Any] | None = None,
    ) -> None:
        self.model = model
        self.lookup = lookup
        self.buffer = buffer
        self.active = active  # any constrained sequence in the runner at all (else: no work)
        self.uids = uids
        self.sampled = sampled
        self._layers = hookable_layers(model)  # on the CPU: the grammar after the first layer

    def __call__(self, inputs: Any, cache: Any = None, **kwargs: Any) -> Any:
        if not self.active():
            return self.model(inputs, cache=cache, **kwargs)
        constraints = [self.lookup(uid) for uid in self.uids()]
        if not any(constraints):
            return self.model(inputs, cache=cache, **kwargs)

        def advance_while(launched: Any) -> None:
            self._advance_while(launched, constraints, inputs)

        logits = forward_then(self.model, self._layers, advance_while, inputs, cache, **kwargs)
        return self.buffer().masked(logits, constraints)

    def _advance_while(self, launched: Any, constraints: list[Constraint | None], inputs: Any) -> None:
        """Launches ``launched`` (the forward, or its first part) and, while MLX computes it,
        advances each row's constraint with the token its previous step sampled."""
        import mlx.core as mx

        # mx signals the end of an evaluation once for all it computes, so the tokens must be
        # launched apart from the forward, before it: reading an array launched with the forward
        # would wait for the whole of it. The sampled array was launched with the previous step
        # (launching it again costs 0.5 us); it is a new array only after rows left or joined.
        # ``inputs``, a reshape of it, would be one more launch at every step: 2.4 % of the
        # constrained tokens/s at 8 streams, measured.
        previous = self.sampled() if self.sampled is not None else inputs
        mx.async_eval(previous)  # type: ignore[no-untyped-call]
        mx.async_eval(launched)  # type: ignore[no-untyped-call]
        listed = previous.tolist()  # (rows,), or (rows, 1) for ``inputs``
        tokens = listed if self.sampled is not None else [token for row in listed for token in row]
        for constraint, token in zip(constraints, tokens, strict=True):
            if constraint is not None:
                constraint.advance(token)

    def __getattr__(self, name: str) -> Any:  # anything else a batch may read of its model
        return getattr(self.model, name)


def install(
    generator: Any, lookup: Lookup, buffer: Callable[[], MaskBuffer], active: Callable[[], bool]
) -> None:
    """Makes ``generator`` (an mlx-lm ``BatchGenerator``, fresh) apply constraints at each step."""
    model = generator.model
    main = generator._generation_batch
    # mlx-lm's step sets ``_current_tokens`` to the tokens it feeds, then calls the model
    main.model = MaskedForward(model, lookup, buffer, active, lambda: main.uids, lambda: main._current_tokens)
    generator._prompt_batch = _prompt_batch_class().empty(
        model, generator.sampler, prefill_step_size=generator.prefill_step_size
    )
    generator._prompt_batch.masked = (lookup, buffer, active)


@cache
def _prompt_batch_class() -> type[Any]:
    from mlx_lm.generate import PromptProcessingBatch

    class PromptBatch(PromptProcessingBatch):
        """mlx-lm's prompt batch whose generation batches start with the constraints applied."""

        masked: tuple[Lookup, Callable[[], MaskBuffer], Callable[[], bool]]

        def _copy(self) -> Any:
            new = super()._copy()  # type: ignore[no-untyped-call]
            new.masked = self.masked
            return new

        def generate(self, tokens: list[list[int]]) -> Any:
            if any(len(t) > 1 for t in tokens):  # prefill what precedes the last tokens, unmasked
                self.prompt([t[:-1] for t in tokens])
                tokens = [t[-1:] for t in tokens]
            model, uids = self.model, self.uids  # the new batch takes this very uid list
            self.model = MaskedForward(model, *self.masked, lambda: uids)
            try:
                return super().generate(tokens)
            finally:
                self.model = model

    return PromptBatch
