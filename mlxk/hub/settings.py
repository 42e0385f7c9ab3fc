"""The Hub settings a pull uses, read from the environment when the pull starts.

huggingface_hub reads its environment once, at import; mlxk reads it per call and passes the
values explicitly, so one process can talk to different endpoints (tests, the server).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "on", "yes", "true"})


@dataclass(frozen=True, slots=True)
class HubSettings:
    endpoint: str | None  # None: huggingface_hub's default (https://huggingface.co)
    token: str | None  # None: huggingface_hub looks for a stored login
    offline: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        env = os.environ if env is None else env
        endpoint = (env.get("HF_ENDPOINT") or "").rstrip("/") or None
        token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None
        offline = (env.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE
        return cls(endpoint, token, offline)
