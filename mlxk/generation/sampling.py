"""Sampling values -> mlx-lm's sampler and logits processors for one sequence.

The processors are where per-request changes to the logits plug in (penalties today); mlx and
mlx-lm are imported only when a sequence is made.
"""

from __future__ import annotations

from typing import Any

from mlxk.generation.request import Sampling


def sampler_and_processors(s: Sampling, vocab_size: int | None) -> tuple[Any, list[Any] | None]:
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    top_k = 0 if vocab_size is not None and s.top_k >= vocab_size else s.top_k  # the whole vocabulary: no cut
    top_p = s.top_p if s.top_p < 1.0 else 0.0  # mlx-lm: 0 means no cut
    # top_p 0 keeps only the most likely token (OpenAI's meaning): greedy decoding
    temperature = s.temperature if s.top_p > 0 else 0.0
    if s.seed is not None and temperature > 0:
        sampler = seeded_sampler(s.seed, temperature, top_p, s.min_p, top_k)
    else:
        sampler = make_sampler(temperature, top_p=top_p, min_p=s.min_p, top_k=top_k)
    if not (s.repetition_penalty or s.presence_penalty or s.frequency_penalty):
        return sampler, None
    processors = make_logits_processors(
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
    )
    return sampler, processors


def seeded_sampler(seed: int, temperature: float, top_p: float, min_p: float, top_k: int) -> Any:
    """A sampler with a random stream of its own (a key split at every token), so a seeded request
    repeats exactly whatever else runs beside it in a batch: mlx-lm's samplers draw from mlx's
    one global random state, which other requests advance too."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    filters: list[Any] = []
    if 0 < top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, top_p))
    if min_p:
        filters.append(lambda x: apply_min_p(x, min_p, 1))
    if top_k > 0:
        filters.append(lambda x: apply_top_k(x, top_k))
    key = [mx.random.key(seed % 2**64)]  # any 64-bit seed, negative ones too

    def sample(logprobs: Any) -> Any:
        for step in filters:
            logprobs = step(logprobs)
        key[0], draw = mx.random.split(key[0])
        return mx.random.categorical(logprobs * (1 / temperature), key=draw)

    return sample
