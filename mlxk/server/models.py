"""The model-name policy: which model a request gets, for chat, completions and embeddings alike.

A request's ``model`` must be the exact name of a cached model this server may serve: never a path,
a URL or an uncached repo (the server neither reads arbitrary folders nor downloads), and with
``--single-model`` only the one it was started with. A name that matches a ``--model-alias``
pattern (a glob, the first match wins) stands for the alias's model, which passes the same checks. No name (or the default's own name) means the
default: ``--model`` for generation, the embedding model ``--model`` named for embeddings. Loading
goes through the same checks as ``mlxk run`` and ``mlxk embed`` (healthy, runnable here).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlxk.cache.names import dirname_to_name, name_problem
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_models
from mlxk.server.errors import HTTPError, invalid, model_not_found
from mlxk.server.settings import ServerSettings

if TYPE_CHECKING:
    from mlxk.cache.model import CachedModel
    from mlxk.generation.engine import Engine


class ModelPolicy:
    def __init__(
        self,
        settings: ServerSettings,
        running: Callable[[], str | None],
        load: Callable[[str], Engine] | None = None,
    ) -> None:
        self.settings = settings
        self._running = running  # the generation model loaded now, if any
        self._load = load  # how a snapshot path is loaded (None: mlx-lm's load; a group: its shard)
        self._location = CacheLocation(settings.hub_root, None)

    # --- names ---------------------------------------------------------------------------------

    def for_generation(self, asked: Any) -> str:
        default = self.settings.model or self._running()
        return self._pick(
            self.aliased(asked), default, "name a model: the server was started without --model"
        )

    def aliased(self, asked: Any) -> Any:
        """The model an alias maps ``asked`` to, or ``asked`` itself (no pattern matches it)."""
        if isinstance(asked, str):
            for pattern, model in self.settings.model_aliases:
                if fnmatch.fnmatchcase(asked, pattern):
                    return model
        return asked

    def for_embedding(self, asked: Any) -> str:
        default = self.settings.embedding_model
        return self._pick(asked, default, "name an embedding model: the server has no default one")

    def _pick(self, asked: Any, default: str | None, no_default: str) -> str:
        if asked is None or asked == "" or asked == default:
            if default is None:
                raise HTTPError(400, no_default, param="model")
            return default
        if not isinstance(asked, str):
            raise invalid("model", "'model' must be a string")
        if "://" in asked or asked.startswith(("/", ".", "~")) or name_problem(asked) is not None:
            raise model_not_found(f"model {asked!r} is not a cached model name")
        if self.settings.single_model:
            served = self.settings.model or self.settings.embedding_model
            raise model_not_found(f"this server serves only {served}")
        names = {dirname_to_name(d) for d in repo_dirnames(self.settings.hub_root)}
        if asked not in names:  # exact names only: a server never guesses, loads from paths or downloads
            raise model_not_found(f"model {asked!r} is not in the cache")
        return asked

    # --- the models behind the names -----------------------------------------------------------

    async def served(self) -> list[CachedModel]:
        """The models this server can serve (``/v1/models``)."""
        models = await asyncio.to_thread(scan_models, self._location)
        served = []
        for m in models:
            if not m.healthy or not (m.runtime_compatible or m.model_type == "embedding"):
                continue
            if self.settings.single_model and m.name not in (
                self.settings.model,
                self.settings.embedding_model,
            ):
                continue
            served.append(m)
        return served

    async def find(self, model_id: str) -> CachedModel | None:
        if name_problem(model_id) is not None:
            return None
        return next((m for m in await self.served() if m.name == model_id), None)

    def check_runnable(self, name: str) -> None:
        """Raises the library's error when ``name`` cannot generate here (before the worker unloads
        the running model for it)."""
        from mlxk.cache.runnable import runnable_model

        runnable_model(self._location, name, shards=self.settings.group_size)

    def load_engine(self, name: str) -> Engine:
        from mlxk.cache.runnable import runnable_model
        from mlxk.generation.engine import load_engine

        shards = self.settings.group_size
        path = runnable_model(self._location, name, shards=shards).path
        engine = self._load(path) if self._load is not None else load_engine(path, name)
        chosen = self.settings.output_format(name)
        if chosen is not None:
            engine.use_format(chosen)
        return engine

    def load_embedder(self, name: str) -> Any:
        from mlxk.embedding.embeddable import embedding_model
        from mlxk.embedding.loader import load_embedder

        return load_embedder(embedding_model(self._location, name).path)
