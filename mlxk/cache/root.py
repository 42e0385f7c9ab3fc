"""Where the hub cache is: huggingface_hub's rules, without importing huggingface_hub."""

from __future__ import annotations

import os
from collections.abc import Mapping


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _xdg_cache(env: Mapping[str, str]) -> str:
    return env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def hub_cache_root(env: Mapping[str, str] | None = None) -> str:
    """``HF_HUB_CACHE`` (or the legacy ``HUGGINGFACE_HUB_CACHE``), else ``HF_HOME/hub``,
    else ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``)."""
    env = os.environ if env is None else env
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    # absolute and normalized: symlink targets are compared with paths built from it
    if explicit:
        return os.path.abspath(_expand(explicit))
    hf_home = env.get("HF_HOME") or os.path.join(_xdg_cache(env), "huggingface")
    return os.path.abspath(os.path.join(_expand(hf_home), "hub"))


def mlxk_cache_dir(env: Mapping[str, str] | None = None) -> str:
    """mlxk's own cache folder (the verification memo); never inside the hub folder, where
    huggingface_hub would report any foreign entry as a corrupt repo."""
    env = os.environ if env is None else env
    explicit = env.get("MLXK_CACHE_DIR")
    if explicit:
        return _expand(explicit)
    return os.path.join(_expand(_xdg_cache(env)), "mlxk")
