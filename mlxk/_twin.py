"""The pure-Python twin of ``mlxk._native``: same functions, same results."""

from __future__ import annotations

from mlxk._hash_py import HashJob
from mlxk._safetensors_py import check_safetensors_bytes, check_safetensors_file
from mlxk._scan_py import scan_cache

__all__ = ["HashJob", "check_safetensors_bytes", "check_safetensors_file", "scan_cache"]
