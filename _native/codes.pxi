# Generated from mlxk/core/codes.py by _native/generate_codes.py (setup.py runs it before each
# build): edit codes.py, not this file. tests/test_native_codes.py checks that it is in sync.

cdef enum:
    MLXK_OK = 0
    MLXK_IO_ERROR = 1
    MLXK_EMPTY = 2
    MLXK_TOO_SMALL = 3
    MLXK_LFS_POINTER = 4
    MLXK_HEADER_LENGTH = 5
    MLXK_HEADER_UTF8 = 6
    MLXK_HEADER_JSON = 7
    MLXK_NOT_AN_OBJECT = 8
    MLXK_DUPLICATE_KEY = 9
    MLXK_BAD_ENTRY = 10
    MLXK_BAD_DTYPE = 11
    MLXK_BAD_SHAPE = 12
    MLXK_BAD_OFFSETS = 13
    MLXK_SIZE_MISMATCH = 14
    MLXK_LAYOUT = 15
    MLXK_TRUNCATED = 16
    MLXK_TRAILING_BYTES = 17
    MLXK_BAD_METADATA = 18
    MLXK_CONTENT_MISMATCH = 19
    MLXK_LINK_OUTSIDE = 20
    MLXK_BLOB_IS_LINK = 21
    MLXK_MAX_HEADER_LENGTH = 100000000
    MLXK_HEADER_FIRST_READ = 65536
    MLXK_ALGO_SHA256 = 1
    MLXK_ALGO_GIT_SHA1 = 2
    MLXK_HASH_CHUNK = 1048576
