"""Where a decoding step's grammar work goes: while MLX computes the model's first layer.

The grammar of a step needs the token the previous step sampled, and the step's sampling needs
the grammar's mask: so the grammar can only overlap the step's forward. On a GPU the whole
forward is launched first and the grammar works while it runs. On MLX's CPU backend, the thread
that launches also prepares every operation, and MLX lets it run only about a hundred operations
ahead of the thread that computes them: after launching a whole forward, that thread had little
left to compute while the grammar worked, and nothing during the separate launch of the masked
sampling after it. So on the CPU the model's first layer is launched as soon as it is in the
graph, the grammar works while MLX computes it, and the rest of the forward goes out with the
masked sampling in one launch. Measured on the tests' tiny model, json_schema / unconstrained
tokens/s at 8 streams, 12 paired rounds per process: 0.85 and 0.88 before, 0.91 and 0.92 after on
a quiet 2-core machine (0.78-0.86 before, 0.85-0.95 after on a busy one).

The batch (``batching``) works this way. The single-sequence loop does not: there the thread that
launches is the busy one throughout, and the same order measured no faster (0.90 either way, 10
paired rounds) than the grammar before the launch (``ConstraintProcessor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Then = Callable[[Any], None]  # launches the graph it is given, then does the grammar's work


def hookable_layers(model: Any) -> list[Any] | None:
    """The list of layers whose first one launches early: on MLX's CPU backend, a model's
    ``layers`` list; None on a GPU, or for a model without such a list."""
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return None
    layers = getattr(model, "layers", None)
    return layers if isinstance(layers, list) and layers else None


def forward_then(
    model: Any, layers: list[Any] | None, then: Then, inputs: Any, cache: Any, **kwargs: Any
) -> Any:
    """``model(inputs, cache=cache, **kwargs)``, with ``then`` called once: on the first layer's
    output as soon as it is in the graph, or on the logits where there are no ``layers`` to hook
    (``hookable_layers``) or the model's forward does not go through them."""
    if layers is None:
        logits = model(inputs, cache=cache, **kwargs)
        then(logits)
        return logits
    first = layers[0]
    layers[0] = hook = _FirstLayer(first, then)
    try:
        logits = model(inputs, cache=cache, **kwargs)
    finally:
        layers[0] = first
    if not hook.ran:
        then(logits)
    return logits


class _FirstLayer:
    """The model's first layer during one forward: its first output goes to ``then``; anything
    else a model reads of its layer is the layer's own."""

    __slots__ = ("layer", "ran", "then")

    def __init__(self, layer: Any, then: Then) -> None:
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
