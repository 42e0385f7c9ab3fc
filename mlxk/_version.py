"""Versions, importable without loading anything else (``mlxk --version`` must start fast).

The build reads ``__version__`` from this file (pyproject.toml: ``dynamic = ["version"]``), so the
package metadata and ``mlxk --version`` cannot disagree.
"""

__version__ = "2.0.0b1"
JSON_API_SPEC_VERSION = "0.2.3"
