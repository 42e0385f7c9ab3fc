"""The pure-Python twin of ``mlxk.core._native``: same functions, same results."""

from __future__ import annotations

from mlxk.core.twin.hashing import HashJob
from mlxk.core.twin.safetensors import check_safetensors_bytes, check_safetensors_file
from mlxk.core.twin.scan import scan_cache

__all__ = ["HashJob", "check_safetensors_bytes", "check_safetensors_file", "scan_cache"]
