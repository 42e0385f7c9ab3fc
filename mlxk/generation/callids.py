"""Ids for tool calls whose format does not carry one."""

from __future__ import annotations

import random
import secrets
import string

_ALPHANUMERIC = string.ascii_letters + string.digits


class CallIds:
    """`call_` + 24 random letters and digits, or 9 of them (the style Mistral templates require of the
    ids they get back with tool results). Seeded, the sequence is repeatable: the same output parsed
    twice gets the same ids."""

    def __init__(self, seed: int | None = None, *, short: bool = False) -> None:
        self._random = random.Random(seed) if seed is not None else None
        self._short = short

    def next(self) -> str:
        size = 9 if self._short else 24
        if self._random is not None:
            token = "".join(self._random.choice(_ALPHANUMERIC) for _ in range(size))
        else:
            token = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(size))
        return token if self._short else f"call_{token}"
