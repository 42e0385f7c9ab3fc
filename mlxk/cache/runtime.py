"""Can the installed mlx-lm run a model type? Answered from mlx-lm's files, without importing it.

Importing mlx_lm costs about a second (it pulls in transformers), which ``mlxk list`` cannot
afford. mlx-lm loads ``mlx_lm.models.<model_type>`` after applying its ``MODEL_REMAPPING``
table, so the answer is: the module file exists, after remapping.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
from dataclasses import dataclass

_REMAPPING = re.compile(r"^MODEL_REMAPPING\s*=\s*(\{.*?^\})", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class MlxLmSupport:
    version: str | None  # None when mlx-lm is not installed
    model_types: frozenset[str]
    remapping: dict[str, str]

    def supports(self, model_type: str) -> bool:
        return self.remapping.get(model_type, model_type) in self.model_types


def _read_remapping(utils_path: str) -> dict[str, str]:
    try:
        with open(utils_path, encoding="utf-8") as fh:
            match = _REMAPPING.search(fh.read())
        if match is None:
            return {}
        table = ast.literal_eval(match.group(1))
    except (OSError, ValueError, SyntaxError):
        return {}
    return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}


def _read_version(package_dir: str) -> str | None:
    try:
        with open(os.path.join(package_dir, "_version.py"), encoding="utf-8") as fh:
            match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", fh.read())
    except OSError:
        return None
    return match.group(1) if match else None


@functools.lru_cache(maxsize=1)
def mlx_lm_support() -> MlxLmSupport:
    try:
        spec = importlib.util.find_spec("mlx_lm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return MlxLmSupport(None, frozenset(), {})
    package_dir = next(iter(spec.submodule_search_locations))
    try:
        names = os.listdir(os.path.join(package_dir, "models"))
    except OSError:
        names = []
    model_types = frozenset(n[:-3] for n in names if n.endswith(".py") and not n.startswith("_"))
    remapping = _read_remapping(os.path.join(package_dir, "utils.py"))
    return MlxLmSupport(_read_version(package_dir) or "unknown", model_types, remapping)
