"""``mlxk --version``: versions and the facts a controller needs about this machine."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk._version import JSON_API_SPEC_VERSION, __version__
from mlxk.cache.runnable import total_memory_bytes
from mlxk.core.blas import BlasPlan, blas_plan


@dataclass(frozen=True, slots=True)
class VersionInfo:
    cli_version: str
    json_api_spec_version: str
    memory_total_bytes: int | None
    native: bool
    blas: BlasPlan  # what MLX would multiply with if this process loaded it (nothing is loaded here)


def version_info(native: bool) -> VersionInfo:
    return VersionInfo(__version__, JSON_API_SPEC_VERSION, total_memory_bytes(), native, blas_plan())
