"""Versions, importable without loading anything else (``mlxk --version`` must start fast)."""

__version__ = "2.0.0.dev1"
JSON_API_SPEC_VERSION = "0.2.3"
