# cython: language_level=3
"""mlxk's compiled core: the parallel cache scan, the safetensors header check and content hashing.

The pure-Python twin (mlxk/core/twin/) has the same functions with the same results.
"""

include "codes.pxi"  # generated from mlxk/core/codes.py (setup.py)
include "safetensors.pxi"
include "scan.pxi"
include "hashing.pxi"
