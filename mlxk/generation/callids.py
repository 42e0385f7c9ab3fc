"""Ids for tool calls whose format does not carry one."""

from __future__ import annotations

import random
import secrets


class CallIds:
    """`call_` + 24 hex digits, or 9 hex digits (the shape Mistral's templates require of the ids they
    get back with tool results: 9 letters and digits). Seeded, the sequence is repeatable: the same
    output parsed twice gets the same ids."""

    def __init__(self, seed: int | None = None, *, short: bool = False) -> None:
        self._random = random.Random(seed) if seed is not None else None
        self._short = short

    def next(self) -> str:
        digits = 9 if self._short else 24
        bits = (
            self._random.getrandbits(4 * digits) if self._random is not None else secrets.randbits(4 * digits)
        )
        token = f"{bits:0{digits}x}"
        return token if self._short else f"call_{token}"
