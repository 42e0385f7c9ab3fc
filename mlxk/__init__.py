"""mlxk: keep, check and serve MLX language models from the HuggingFace cache."""

from mlxk._version import JSON_API_SPEC_VERSION, __version__
from mlxk.core import NATIVE

__all__ = ["JSON_API_SPEC_VERSION", "NATIVE", "__version__"]
