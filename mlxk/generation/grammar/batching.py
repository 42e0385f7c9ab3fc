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
        import mlx.core as mx

        self.model = model
        self.lookup = lookup
        self.buffer = buffer
        self.active = active  # any constrained sequence in the runner at all (else: no work)
        self.uids = uids
        self.sampled = sampled
        # Where the grammar works. On a GPU: once the whole forward is launched, while it runs.
        # On MLX's CPU backend, the thread that launches also prepares every operation, and MLX
        # lets it run only about a hundred operations ahead of the computing thread: launching
        # the whole forward first left the computing thread idle during the grammar and the
        # separate launch of the masked sampling after it. Launching the first layer, working
        # while MLX computes it, then launching the rest of the forward with the sampling in
        # one piece keeps both threads busy: 8 streams on the tests' tiny model, json_schema /
        # unconstrained tokens/s 0.83-0.91 -> 0.95 (three runs of 12 paired rounds each).
        layers = getattr(model, "layers", None) if mx.default_device() == mx.cpu else None
        self._layers: list[Any] | None = layers if isinstance(layers, list) and layers else None

    def __call__(self, inputs: Any, cache: Any = None, **kwargs: Any) -> Any:
        if not self.active():
            return self.model(inputs, cache=cache, **kwargs)
        constraints = [self.lookup(uid) for uid in self.uids()]
        if not any(constraints):
            return self.model(inputs, cache=cache, **kwargs)

        def advance_while(launched: Any) -> None:
            self._advance_while(launched, constraints, inputs)

        layers = self._layers
        if layers is None:
            logits = self.model(inputs, cache=cache, **kwargs)
            advance_while(logits)
        else:
            first = layers[0]
            layers[0] = hook = _FirstLayer(first, advance_while)
            try:
                logits = self.model(inputs, cache=cache, **kwargs)
            finally:
                layers[0] = first
            if not hook.ran:  # the model's forward does not go through its list of layers
                advance_while(logits)
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


class _FirstLayer:
    """The model's first layer during one forward: its first output goes to ``then`` (which
    launches the graph built so far and works while MLX computes it); anything else a model
    reads of its layer is the layer's own."""

    __slots__ = ("layer", "ran", "then")

    def __init__(self, layer: Any, then: Callable[[Any], None]) -> None:
        self.layer = layer
        self.then = then
        self.ran = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.layer(*args, **kwargs)
        if not self.ran:
            self.ran = True
            self.then(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)


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
