# cython: language_level=3
"""mlxk's compiled core: the parallel cache scan and the safetensors header check.

The pure-Python twin (mlxk/_twin.py) has the same functions with the same results.
"""

include "safetensors.pxi"
include "scan.pxi"
