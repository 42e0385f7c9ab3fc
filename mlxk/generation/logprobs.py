"""Log-probabilities of the sampled tokens, for ``logprobs`` / ``top_logprobs``.

They are read from the distribution the sampler drew from: the model's logits after penalties and
any grammar mask, normalized (before temperature and the top-p/top-k cuts, which shape the draw,
not the model's belief). With greedy decoding the sampled token is the top one. Computed only for
requests that ask (one device sync per token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxk.generation.tokens import Vocabulary

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class Alternative:
    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One sampled token: its text, log-probability and bytes, and the ``top`` most likely ones."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[Alternative, ...] = ()


def token_logprob(logprobs: Any, token: int, top: int, vocab: Vocabulary) -> TokenLogprob:
    """The entry of ``token`` from the (vocabulary,) log-probability vector ``logprobs``."""
    import mlx.core as mx

    values = logprobs.reshape(-1)
    alternatives: tuple[Alternative, ...] = ()
    if top > 0:
        ids = mx.argpartition(-values, top - 1)[:top]
        picked = values[ids]
        mx.eval(ids, picked, values[token])
        found: list[int] = ids.tolist()  # type: ignore[assignment]
        values_found: list[float] = picked.tolist()
        pairs = sorted(zip(found, values_found, strict=True), key=lambda p: -p[1])
        alternatives = tuple(Alternative(vocab.text(i), _finite(lp), vocab.bytes_of(i)) for i, lp in pairs)
    return TokenLogprob(vocab.text(token), _finite(values[token].item()), vocab.bytes_of(token), alternatives)


def _finite(value: float) -> float:
    """JSON has no -inf: a token the grammar forbade gets the lowest float instead."""
    return value if value > -float("inf") else -9999.0
