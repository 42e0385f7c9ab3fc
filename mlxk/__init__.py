"""mlxk: keep, check and serve MLX language models from the HuggingFace cache."""

from mlxk._accel import NATIVE
from mlxk._version import JSON_API_SPEC_VERSION, __version__

__all__ = ["JSON_API_SPEC_VERSION", "NATIVE", "__version__"]
