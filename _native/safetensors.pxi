# Strict safetensors header check, C level (included by _native.pyx).
#
# The C functions (st_check_buffer, st_check_fd) hold no GIL, create no Python objects, keep no
# global state and free every allocation on every path, so scan threads may call them freely.
# mlxk/core/twin/safetensors.py is the pure-Python twin; both must give identical (code, detail).
# "Offset" in a detail means a byte offset relative to the start of the header JSON (file byte 8).

from libc.stdint cimport int64_t, uint64_t, UINT64_MAX as ST_U64_MAX, SIZE_MAX as ST_SIZE_MAX
from libc.stdlib cimport malloc as st_malloc, realloc as st_realloc, free as st_free, qsort as st_qsort
from libc.string cimport memcmp as st_memcmp, memcpy as st_memcpy
from libc.errno cimport errno as st_errno, ENOMEM as ST_ENOMEM
from posix.unistd cimport close as st_close
from posix.fcntl cimport AT_FDCWD as ST_AT_FDCWD
from posix.stat cimport fstat as st_fstat, struct_stat as st_struct_stat

from common cimport mlxk_open_file as st_open_file, mlxk_read_full

import os as _st_os

# Result codes (MLXK_OK, MLXK_TRUNCATED, ...) and sizes come from codes.pxi, generated from
# mlxk/core/codes.py.
cdef enum:
    ST_NOMEM = -1  # internal only: an allocation failed; reported as IO_ERROR / ENOMEM

cdef enum:
    # entry members, as bits of a "seen" mask
    ST_M_DTYPE = 1
    ST_M_SHAPE = 2
    ST_M_OFFSETS = 4
    ST_M_ALL = 7

# the bytes the grammar looks at, by name rather than as magic numbers
cdef enum:
    CH_TAB = 9
    CH_LF = 10
    CH_CR = 13
    CH_SPACE = 32
    CH_QUOTE = 34
    CH_PLUS = 43
    CH_COMMA = 44
    CH_MINUS = 45
    CH_DOT = 46
    CH_SLASH = 47
    CH_0 = 48
    CH_1 = 49
    CH_9 = 57
    CH_COLON = 58
    CH_UPPER_E = 69
    CH_LBRACKET = 91
    CH_BACKSLASH = 92
    CH_RBRACKET = 93
    CH_LOWER_B = 98
    CH_LOWER_E = 101
    CH_LOWER_F = 102
    CH_LOWER_N = 110
    CH_LOWER_R = 114
    CH_LOWER_T = 116
    CH_LOWER_U = 117
    CH_LBRACE = 123
    CH_RBRACE = 125


cdef struct StKey:
    const unsigned char* ptr  # decoded bytes, resolved once the arena no longer moves
    size_t pos                # where the decoded bytes start: in the header or in the arena
    size_t length
    uint64_t offset           # offset of the key's opening quote
    int group                 # 0: top-level key, 1: key inside __metadata__
    int in_arena


cdef struct StRange:
    uint64_t begin
    uint64_t end


cdef struct StParser:
    const unsigned char* h    # the header JSON
    size_t n                  # its length
    size_t i                  # read position
    uint64_t detail           # offset of the first error
    StKey* keys               # every top-level and metadata key, for the duplicate check
    size_t nkeys
    size_t capkeys
    unsigned char* arena      # decoded forms of strings that contain escapes
    size_t arena_len
    size_t arena_cap
    StRange* ranges           # data_offsets of every tensor, for the layout check
    size_t nranges
    size_t capranges


cdef inline int st_fail(StParser* ps, int code, size_t at) noexcept nogil:
    ps.detail = at
    return code


cdef inline bint st_is_ws(unsigned char c) noexcept nogil:
    return c == CH_SPACE or c == CH_TAB or c == CH_LF or c == CH_CR


cdef inline bint st_is_digit(unsigned char c) noexcept nogil:
    return CH_0 <= c <= CH_9


cdef inline bint st_value_start(unsigned char c) noexcept nogil:
    # bytes that can begin a JSON value: a wrong-typed value is a semantic error at its first
    # byte, anything else where a value is due is a syntax error
    return (c == CH_LBRACE or c == CH_LBRACKET or c == CH_QUOTE or c == CH_MINUS or st_is_digit(c)
            or c == CH_LOWER_T or c == CH_LOWER_F or c == CH_LOWER_N)


cdef inline void st_skip_ws(StParser* ps) noexcept nogil:
    cdef size_t i = ps.i
    while i < ps.n and st_is_ws(ps.h[i]):
        i += 1
    ps.i = i


cdef inline int st_hexval(unsigned char c) noexcept nogil:
    if CH_0 <= c <= CH_9:
        return c - CH_0
    if 65 <= c <= 70:  # A-F
        return c - 55
    if 97 <= c <= 102:  # a-f
        return c - 87
    return -1


cdef int st_hex4(const unsigned char* h, size_t n, size_t j) noexcept nogil:
    # the four hex digits of a \u escape at h[j..j+4): the value, -1 for a bad digit, -2 for the
    # end of the header (whichever comes first)
    cdef int v = 0
    cdef int d
    cdef size_t k
    for k in range(4):
        if j + k >= n:
            return -2
        d = st_hexval(h[j + k])
        if d < 0:
            return -1
        v = v * 16 + d
    return v


cdef size_t st_utf8_error(const unsigned char* s, size_t n) noexcept nogil:
    # offset of the lead byte of the first invalid UTF-8 sequence, or n when all is valid
    cdef size_t i = 0
    cdef uint64_t w
    cdef unsigned char c, c1, lo, hi
    while i < n:
        # headers are mostly ASCII: skip it eight bytes at a time
        while i + 8 <= n:
            st_memcpy(&w, s + i, 8)
            if w & 0x8080808080808080ULL:
                break
            i += 8
        if i >= n:
            break
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2:  # stray continuation byte, or overlong 2-byte lead
            return i
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
            continue
        if c < 0xF0:
            lo = 0x80
            hi = 0xBF
            if c == 0xE0:
                lo = 0xA0  # overlong
            elif c == 0xED:
                hi = 0x9F  # UTF-16 surrogates
            if i + 1 >= n:
                return i
            c1 = s[i + 1]
            if c1 < lo or c1 > hi:
                return i
            if i + 2 >= n or (s[i + 2] & 0xC0) != 0x80:
                return i
            i += 3
            continue
        if c < 0xF5:
            lo = 0x80
            hi = 0xBF
            if c == 0xF0:
                lo = 0x90  # overlong
            elif c == 0xF4:
                hi = 0x8F  # above U+10FFFF
            if i + 1 >= n:
                return i
            c1 = s[i + 1]
            if c1 < lo or c1 > hi:
                return i
            if i + 2 >= n or (s[i + 2] & 0xC0) != 0x80:
                return i
            if i + 3 >= n or (s[i + 3] & 0xC0) != 0x80:
                return i
            i += 4
            continue
        return i
    return n


cdef int st_grow(void** mem, size_t* cap, size_t need, size_t item) noexcept nogil:
    # make room for `need` items of `item` bytes, doubling; 0 or ST_NOMEM
    cdef size_t newcap
    cdef void* p
    if need <= cap[0]:
        return 0
    newcap = cap[0] * 2 if cap[0] else 16
    if newcap < need:
        newcap = need
    if newcap > ST_SIZE_MAX / item:
        return ST_NOMEM
    p = st_realloc(mem[0], newcap * item)
    if p == NULL:
        return ST_NOMEM
    mem[0] = p
    cap[0] = newcap
    return 0


cdef size_t st_put_utf8(unsigned char* o, uint64_t cp) noexcept nogil:
    if cp < 0x80:
        o[0] = <unsigned char>cp
        return 1
    if cp < 0x800:
        o[0] = <unsigned char>(0xC0 | (cp >> 6))
        o[1] = <unsigned char>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        o[0] = <unsigned char>(0xE0 | (cp >> 12))
        o[1] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
        o[2] = <unsigned char>(0x80 | (cp & 0x3F))
        return 3
    o[0] = <unsigned char>(0xF0 | (cp >> 18))
    o[1] = <unsigned char>(0x80 | ((cp >> 12) & 0x3F))
    o[2] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
    o[3] = <unsigned char>(0x80 | (cp & 0x3F))
    return 4


cdef int st_string(StParser* ps, bint decode, size_t* out_pos, size_t* out_len,
                   bint* out_arena) noexcept nogil:
    # Parses the string whose opening quote is at ps.i and leaves ps.i after its closing quote.
    # With `decode`, reports where its decoded UTF-8 bytes are: in place in the header when it
    # has no escapes, else appended to the arena (decoded is never longer than raw).
    cdef const unsigned char* h = ps.h
    cdef size_t n = ps.n
    cdef size_t start = ps.i + 1
    cdef size_t i = start
    cdef size_t end, j, o
    cdef bint escaped = False
    cdef unsigned char c
    cdef int v, w
    cdef uint64_t cp
    while True:
        if i >= n:
            return st_fail(ps, MLXK_HEADER_JSON, n)
        c = h[i]
        if c == CH_QUOTE:
            break
        if c < 0x20:
            return st_fail(ps, MLXK_HEADER_JSON, i)
        if c != CH_BACKSLASH:
            i += 1
            continue
        escaped = True
        if i + 1 >= n:
            return st_fail(ps, MLXK_HEADER_JSON, n)
        c = h[i + 1]
        if (c == CH_QUOTE or c == CH_BACKSLASH or c == CH_SLASH or c == CH_LOWER_B
                or c == CH_LOWER_F or c == CH_LOWER_N or c == CH_LOWER_R or c == CH_LOWER_T):
            i += 2
            continue
        if c != CH_LOWER_U:
            return st_fail(ps, MLXK_HEADER_JSON, i)
        v = st_hex4(h, n, i + 2)
        if v == -2:
            return st_fail(ps, MLXK_HEADER_JSON, n)
        if v < 0:
            return st_fail(ps, MLXK_HEADER_JSON, i)
        if 0xDC00 <= v <= 0xDFFF:  # low surrogate without a high one before it
            return st_fail(ps, MLXK_HEADER_JSON, i)
        if 0xD800 <= v <= 0xDBFF:  # high surrogate: a \u low surrogate must follow at once
            if i + 7 < n and h[i + 6] == CH_BACKSLASH and h[i + 7] == CH_LOWER_U:
                w = st_hex4(h, n, i + 8)
                if w == -2:
                    return st_fail(ps, MLXK_HEADER_JSON, n)
                if w < 0:
                    return st_fail(ps, MLXK_HEADER_JSON, i + 6)
                if not (0xDC00 <= w <= 0xDFFF):
                    return st_fail(ps, MLXK_HEADER_JSON, i)
                i += 12
            else:
                return st_fail(ps, MLXK_HEADER_JSON, i)
        else:
            i += 6
    end = i
    ps.i = end + 1
    if not decode:
        return 0
    if not escaped:
        out_pos[0] = start
        out_len[0] = end - start
        out_arena[0] = False
        return 0
    if st_grow(<void**>&ps.arena, &ps.arena_cap, ps.arena_len + (end - start), 1):
        return ST_NOMEM
    # second pass: the string is known to be valid, so no checks are needed here
    o = ps.arena_len
    j = start
    while j < end:
        c = h[j]
        if c != CH_BACKSLASH:
            ps.arena[o] = c
            o += 1
            j += 1
            continue
        c = h[j + 1]
        if c == CH_LOWER_U:
            cp = <uint64_t>st_hex4(h, n, j + 2)
            j += 6
            if 0xD800 <= cp <= 0xDBFF:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (<uint64_t>st_hex4(h, n, j + 2) - 0xDC00)
                j += 6
            o += st_put_utf8(ps.arena + o, cp)
            continue
        if c == CH_LOWER_B:
            c = 8
        elif c == CH_LOWER_F:
            c = 12
        elif c == CH_LOWER_N:
            c = 10
        elif c == CH_LOWER_R:
            c = 13
        elif c == CH_LOWER_T:
            c = 9
        ps.arena[o] = c  # '"', '\\' and '/' stand for themselves
        o += 1
        j += 2
    out_pos[0] = ps.arena_len
    out_len[0] = o - ps.arena_len
    out_arena[0] = True
    ps.arena_len = o
    return 0


cdef inline const unsigned char* st_decoded(StParser* ps, size_t pos, bint in_arena) noexcept nogil:
    if in_arena:
        return ps.arena + pos
    return ps.h + pos


cdef int st_number(StParser* ps, uint64_t* value, bint* is_uint) noexcept nogil:
    # Scans the JSON number at ps.i (a '-' or a digit). Syntax errors are HEADER_JSON; a valid
    # number sets is_uint only when it is a plain non-negative integer that fits 64 bits.
    cdef const unsigned char* h = ps.h
    cdef size_t n = ps.n
    cdef size_t i = ps.i
    cdef bint ok = True
    cdef uint64_t v = 0
    cdef uint64_t d
    if h[i] == CH_MINUS:
        ok = False  # negative, also "-0"
        i += 1
    if i >= n:
        return st_fail(ps, MLXK_HEADER_JSON, n)
    if h[i] == CH_0:
        i += 1  # a leading zero stands alone; a digit after it is a syntax error later
    elif st_is_digit(h[i]):
        while i < n and st_is_digit(h[i]):
            d = h[i] - CH_0
            if ok:
                # v * 10 + d must stay <= 18446744073709551615 (compared, not divided: hot loop)
                if v > 1844674407370955161ULL or (v == 1844674407370955161ULL and d > 5):
                    ok = False  # does not fit 64 bits; keep scanning the syntax
                else:
                    v = v * 10 + d
            i += 1
    else:
        return st_fail(ps, MLXK_HEADER_JSON, i)
    if i < n and h[i] == CH_DOT:
        ok = False
        i += 1
        if i >= n:
            return st_fail(ps, MLXK_HEADER_JSON, n)
        if not st_is_digit(h[i]):
            return st_fail(ps, MLXK_HEADER_JSON, i)
        while i < n and st_is_digit(h[i]):
            i += 1
    if i < n and (h[i] == CH_LOWER_E or h[i] == CH_UPPER_E):
        ok = False
        i += 1
        if i < n and (h[i] == CH_PLUS or h[i] == CH_MINUS):
            i += 1
        if i >= n:
            return st_fail(ps, MLXK_HEADER_JSON, n)
        if not st_is_digit(h[i]):
            return st_fail(ps, MLXK_HEADER_JSON, i)
        while i < n and st_is_digit(h[i]):
            i += 1
    ps.i = i
    value[0] = v
    is_uint[0] = ok
    return 0


cdef inline int st_after_value(StParser* ps, unsigned char close) noexcept nogil:
    # after a member or element: 1 for ',' (skipped, ws too), 0 for the closing byte (skipped),
    # else HEADER_JSON as a negative number
    st_skip_ws(ps)
    if ps.i >= ps.n:
        ps.detail = ps.n
        return -MLXK_HEADER_JSON
    if ps.h[ps.i] == CH_COMMA:
        ps.i += 1
        st_skip_ws(ps)
        return 1
    if ps.h[ps.i] == close:
        ps.i += 1
        return 0
    ps.detail = ps.i
    return -MLXK_HEADER_JSON


cdef inline int st_colon(StParser* ps) noexcept nogil:
    st_skip_ws(ps)
    if ps.i >= ps.n:
        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
    if ps.h[ps.i] != CH_COLON:
        return st_fail(ps, MLXK_HEADER_JSON, ps.i)
    ps.i += 1
    st_skip_ws(ps)
    return 0


cdef inline int st_key_start(StParser* ps) noexcept nogil:
    # a member key is due at ps.i (whitespace already skipped)
    if ps.i >= ps.n:
        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
    if ps.h[ps.i] != CH_QUOTE:
        return st_fail(ps, MLXK_HEADER_JSON, ps.i)
    return 0


cdef inline int st_wrong_type(StParser* ps, int code) noexcept nogil:
    # a value is due at ps.i but not of the wanted type: `code` if one starts there, else syntax
    if ps.i >= ps.n:
        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
    if st_value_start(ps.h[ps.i]):
        return st_fail(ps, code, ps.i)
    return st_fail(ps, MLXK_HEADER_JSON, ps.i)


cdef int st_add_key(StParser* ps, size_t pos, size_t length, bint in_arena, size_t offset,
                    int group) noexcept nogil:
    cdef StKey* k
    if st_grow(<void**>&ps.keys, &ps.capkeys, ps.nkeys + 1, sizeof(StKey)):
        return ST_NOMEM
    k = &ps.keys[ps.nkeys]
    k.ptr = NULL
    k.pos = pos
    k.length = length
    k.offset = offset
    k.group = group
    k.in_arena = in_arena
    ps.nkeys += 1
    return 0


cdef int st_metadata(StParser* ps) noexcept nogil:
    # the value of __metadata__ at ps.i: an object whose values are all strings
    cdef size_t pos, length, key_off
    cdef bint in_arena
    cdef int rc
    if ps.i >= ps.n or ps.h[ps.i] != CH_LBRACE:
        return st_wrong_type(ps, MLXK_BAD_METADATA)
    ps.i += 1
    st_skip_ws(ps)
    if ps.i < ps.n and ps.h[ps.i] == CH_RBRACE:
        ps.i += 1
        return 0
    while True:
        rc = st_key_start(ps)
        if rc:
            return rc
        key_off = ps.i
        rc = st_string(ps, True, &pos, &length, &in_arena)
        if rc:
            return rc
        rc = st_add_key(ps, pos, length, in_arena, key_off, 1)
        if rc:
            return rc
        rc = st_colon(ps)
        if rc:
            return rc
        if ps.i >= ps.n or ps.h[ps.i] != CH_QUOTE:
            return st_wrong_type(ps, MLXK_BAD_METADATA)
        rc = st_string(ps, False, &pos, &length, &in_arena)
        if rc:
            return rc
        rc = st_after_value(ps, CH_RBRACE)
        if rc < 0:
            return -rc
        if rc == 0:
            return 0


cdef int st_dtype_bits(const unsigned char* s, size_t n) noexcept nogil:
    # bits per element of a safetensors dtype name, 0 when unknown (exact, case-sensitive)
    if n == 2:
        if st_memcmp(s, b"U8", 2) == 0 or st_memcmp(s, b"I8", 2) == 0:
            return 8
        if st_memcmp(s, b"F4", 2) == 0:
            return 4
    elif n == 3:
        if (st_memcmp(s, b"I16", 3) == 0 or st_memcmp(s, b"U16", 3) == 0
                or st_memcmp(s, b"F16", 3) == 0):
            return 16
        if (st_memcmp(s, b"I32", 3) == 0 or st_memcmp(s, b"U32", 3) == 0
                or st_memcmp(s, b"F32", 3) == 0):
            return 32
        if (st_memcmp(s, b"C64", 3) == 0 or st_memcmp(s, b"F64", 3) == 0
                or st_memcmp(s, b"I64", 3) == 0 or st_memcmp(s, b"U64", 3) == 0):
            return 64
    elif n == 4:
        if st_memcmp(s, b"BOOL", 4) == 0:
            return 8
        if st_memcmp(s, b"BF16", 4) == 0:
            return 16
    elif n == 7:
        if (st_memcmp(s, b"F6_E2M3", 7) == 0 or st_memcmp(s, b"F6_E3M2", 7) == 0):
            return 6
        if (st_memcmp(s, b"F8_E5M2", 7) == 0 or st_memcmp(s, b"F8_E4M3", 7) == 0
                or st_memcmp(s, b"F8_E8M0", 7) == 0):
            return 8
    elif n == 11:
        if (st_memcmp(s, b"F8_E4M3FNUZ", 11) == 0 or st_memcmp(s, b"F8_E5M2FNUZ", 11) == 0):
            return 8
    return 0


cdef int st_member(const unsigned char* s, size_t n) noexcept nogil:
    if n == 5 and st_memcmp(s, b"dtype", 5) == 0:
        return ST_M_DTYPE
    if n == 5 and st_memcmp(s, b"shape", 5) == 0:
        return ST_M_SHAPE
    if n == 12 and st_memcmp(s, b"data_offsets", 12) == 0:
        return ST_M_OFFSETS
    return 0


cdef int st_entry(StParser* ps, size_t name_off) noexcept nogil:
    # the value of a tensor name at ps.i: {"dtype": .., "shape": [..], "data_offsets": [b, e]}
    cdef size_t obj_off, key_off, val_off, pos, length, saved_arena
    cdef bint in_arena, is_uint, zero = False, overflow = False
    cdef int rc, which, bits = 0, seen = 0, count
    cdef uint64_t v, prod = 1, nbits, begin = 0, end = 0
    if ps.i >= ps.n or ps.h[ps.i] != CH_LBRACE:
        return st_wrong_type(ps, MLXK_BAD_ENTRY)
    obj_off = ps.i
    ps.i += 1
    st_skip_ws(ps)
    if ps.i < ps.n and ps.h[ps.i] == CH_RBRACE:
        ps.i += 1
        return st_fail(ps, MLXK_BAD_ENTRY, obj_off)
    while True:
        rc = st_key_start(ps)
        if rc:
            return rc
        key_off = ps.i
        saved_arena = ps.arena_len
        rc = st_string(ps, True, &pos, &length, &in_arena)
        if rc:
            return rc
        which = st_member(st_decoded(ps, pos, in_arena), length)
        ps.arena_len = saved_arena  # the member name was only needed for this comparison
        if which == 0 or (seen & which):
            return st_fail(ps, MLXK_BAD_ENTRY, key_off)
        seen |= which
        rc = st_colon(ps)
        if rc:
            return rc
        val_off = ps.i
        if which == ST_M_DTYPE:
            if ps.i >= ps.n or ps.h[ps.i] != CH_QUOTE:
                return st_wrong_type(ps, MLXK_BAD_DTYPE)
            rc = st_string(ps, True, &pos, &length, &in_arena)
            if rc:
                return rc
            bits = st_dtype_bits(st_decoded(ps, pos, in_arena), length)
            ps.arena_len = saved_arena
            if bits == 0:
                return st_fail(ps, MLXK_BAD_DTYPE, val_off)
        elif which == ST_M_SHAPE:
            if ps.i >= ps.n or ps.h[ps.i] != CH_LBRACKET:
                return st_wrong_type(ps, MLXK_BAD_SHAPE)
            ps.i += 1
            st_skip_ws(ps)
            if ps.i < ps.n and ps.h[ps.i] == CH_RBRACKET:
                ps.i += 1  # rank 0: one element
            else:
                while True:
                    if ps.i >= ps.n:
                        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
                    if not (ps.h[ps.i] == CH_MINUS or st_is_digit(ps.h[ps.i])):
                        return st_wrong_type(ps, MLXK_BAD_SHAPE)
                    val_off = ps.i
                    rc = st_number(ps, &v, &is_uint)
                    if rc:
                        return rc
                    if not is_uint:
                        return st_fail(ps, MLXK_BAD_SHAPE, val_off)
                    # left to right, as the safetensors package does: an overflow before a
                    # zero dim is an error; after a zero dim the running product stays 0
                    if overflow or zero:
                        pass
                    elif v == 0:
                        zero = True
                    elif prod > ST_U64_MAX // v:
                        overflow = True
                    else:
                        prod *= v
                    rc = st_after_value(ps, CH_RBRACKET)
                    if rc < 0:
                        return -rc
                    if rc == 0:
                        break
        else:
            if ps.i >= ps.n or ps.h[ps.i] != CH_LBRACKET:
                return st_wrong_type(ps, MLXK_BAD_OFFSETS)
            ps.i += 1
            st_skip_ws(ps)
            count = 0
            if ps.i < ps.n and ps.h[ps.i] == CH_RBRACKET:
                ps.i += 1
            else:
                while True:
                    if ps.i >= ps.n:
                        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
                    if not st_value_start(ps.h[ps.i]):
                        return st_fail(ps, MLXK_HEADER_JSON, ps.i)
                    if count == 2 or not (ps.h[ps.i] == CH_MINUS or st_is_digit(ps.h[ps.i])):
                        return st_fail(ps, MLXK_BAD_OFFSETS, val_off)
                    rc = st_number(ps, &v, &is_uint)
                    if rc:
                        return rc
                    if not is_uint:
                        return st_fail(ps, MLXK_BAD_OFFSETS, val_off)
                    if count == 0:
                        begin = v
                    else:
                        end = v
                    count += 1
                    rc = st_after_value(ps, CH_RBRACKET)
                    if rc < 0:
                        return -rc
                    if rc == 0:
                        break
            if count != 2 or begin > end:
                return st_fail(ps, MLXK_BAD_OFFSETS, val_off)
        rc = st_after_value(ps, CH_RBRACE)
        if rc < 0:
            return -rc
        if rc == 0:
            break
    if seen != ST_M_ALL:
        return st_fail(ps, MLXK_BAD_ENTRY, obj_off)
    # nbits = prod(shape) * bits, exact or SIZE_MISMATCH on 64-bit overflow
    if overflow:
        return st_fail(ps, MLXK_SIZE_MISMATCH, name_off)
    elif zero:
        nbits = 0
    elif prod > ST_U64_MAX // <uint64_t>bits:
        return st_fail(ps, MLXK_SIZE_MISMATCH, name_off)
    else:
        nbits = prod * <uint64_t>bits
    if nbits % 8 != 0 or nbits // 8 != end - begin:
        return st_fail(ps, MLXK_SIZE_MISMATCH, name_off)
    if st_grow(<void**>&ps.ranges, &ps.capranges, ps.nranges + 1, sizeof(StRange)):
        return ST_NOMEM
    ps.ranges[ps.nranges].begin = begin
    ps.ranges[ps.nranges].end = end
    ps.nranges += 1
    return 0


cdef int st_parse(StParser* ps) noexcept nogil:
    # one pass over the whole header, in document order; the first error wins
    cdef size_t pos, length, key_off
    cdef bint in_arena
    cdef int rc
    st_skip_ws(ps)
    if ps.i >= ps.n:
        return st_fail(ps, MLXK_HEADER_JSON, ps.n)
    if ps.h[ps.i] != CH_LBRACE:
        if st_value_start(ps.h[ps.i]):
            return st_fail(ps, MLXK_NOT_AN_OBJECT, ps.i)
        return st_fail(ps, MLXK_HEADER_JSON, ps.i)
    ps.i += 1
    st_skip_ws(ps)
    if ps.i < ps.n and ps.h[ps.i] == CH_RBRACE:
        ps.i += 1
    else:
        while True:
            rc = st_key_start(ps)
            if rc:
                return rc
            key_off = ps.i
            rc = st_string(ps, True, &pos, &length, &in_arena)
            if rc:
                return rc
            rc = st_add_key(ps, pos, length, in_arena, key_off, 0)
            if rc:
                return rc
            rc = st_colon(ps)
            if rc:
                return rc
            if length == 12 and st_memcmp(st_decoded(ps, pos, in_arena), b"__metadata__", 12) == 0:
                rc = st_metadata(ps)
            else:
                rc = st_entry(ps, key_off)
            if rc:
                return rc
            rc = st_after_value(ps, CH_RBRACE)
            if rc < 0:
                return -rc
            if rc == 0:
                break
    st_skip_ws(ps)
    if ps.i < ps.n:  # e.g. NUL padding after the object
        return st_fail(ps, MLXK_HEADER_JSON, ps.i)
    return 0


cdef int st_key_cmp(const void* a, const void* b) noexcept nogil:
    # order keys by (group, length, decoded bytes, offset): any order that makes equal keys
    # neighbours, first one first, will do; lengths first spares many memcmp calls
    cdef const StKey* x = <const StKey*>a
    cdef const StKey* y = <const StKey*>b
    cdef int c
    if x.group != y.group:
        return -1 if x.group < y.group else 1
    if x.length != y.length:
        return -1 if x.length < y.length else 1
    if x.length:
        c = st_memcmp(x.ptr, y.ptr, x.length)
        if c:
            return c
    if x.offset != y.offset:
        return -1 if x.offset < y.offset else 1
    return 0


cdef int st_range_cmp(const void* a, const void* b) noexcept nogil:
    cdef const StRange* x = <const StRange*>a
    cdef const StRange* y = <const StRange*>b
    if x.begin != y.begin:
        return -1 if x.begin < y.begin else 1
    if x.end != y.end:
        return -1 if x.end < y.end else 1
    return 0


cdef int st_duplicates(StParser* ps) noexcept nogil:
    # DUPLICATE_KEY at the smallest offset of a key that repeats an earlier one in its object
    cdef size_t k
    cdef bint found = False
    cdef uint64_t best = ST_U64_MAX
    cdef StKey* x
    cdef StKey* y
    if ps.nkeys < 2:
        return 0
    for k in range(ps.nkeys):
        ps.keys[k].ptr = st_decoded(ps, ps.keys[k].pos, ps.keys[k].in_arena)
    st_qsort(ps.keys, ps.nkeys, sizeof(StKey), st_key_cmp)
    for k in range(1, ps.nkeys):
        x = &ps.keys[k - 1]
        y = &ps.keys[k]
        if (x.group == y.group and x.length == y.length
                and (x.length == 0 or st_memcmp(x.ptr, y.ptr, x.length) == 0)):
            found = True
            if y.offset < best:
                best = y.offset
    if found:
        ps.detail = best
        return MLXK_DUPLICATE_KEY
    return 0


cdef int st_check_buffer(const unsigned char* buf, size_t buflen, uint64_t file_size,
                         uint64_t* detail) noexcept nogil:
    """Checks a safetensors file from its leading bytes; returns the code, sets *detail."""
    cdef uint64_t hlen, need, expect, base
    cdef size_t k, bad
    cdef int rc
    cdef StParser ps
    detail[0] = 0
    if file_size == 0:
        return MLXK_EMPTY
    if buflen > file_size:
        buflen = <size_t>file_size
    if buflen >= 23 and st_memcmp(buf, b"version https://git-lfs", 23) == 0:
        return MLXK_LFS_POINTER
    if file_size < 8:
        return MLXK_TOO_SMALL
    if buflen < 8:  # the caller has fewer bytes than the file: report what was needed
        detail[0] = 8
        return MLXK_TRUNCATED
    hlen = 0
    for k in range(8):
        hlen |= (<uint64_t>buf[k]) << (8 * k)
    if hlen == 0 or hlen > MLXK_MAX_HEADER_LENGTH or 8 + hlen > file_size:
        detail[0] = hlen
        return MLXK_HEADER_LENGTH
    if buflen - 8 < hlen:
        detail[0] = 8 + hlen
        return MLXK_TRUNCATED
    bad = st_utf8_error(buf + 8, <size_t>hlen)
    if bad != <size_t>hlen:
        detail[0] = bad
        return MLXK_HEADER_UTF8

    ps.h = buf + 8
    ps.n = <size_t>hlen
    ps.i = 0
    ps.detail = 0
    ps.keys = NULL
    ps.nkeys = 0
    ps.capkeys = 0
    ps.arena = NULL
    ps.arena_len = 0
    ps.arena_cap = 0
    ps.ranges = NULL
    ps.nranges = 0
    ps.capranges = 0
    rc = st_parse(&ps)
    if rc == 0:
        rc = st_duplicates(&ps)
    if rc == 0:
        # layout: sorted by (begin, end), the tensors must tile [0, last end) exactly
        # writers list tensors in data order, so the sort is usually skipped (and qsort must
        # not be given a NULL array, even to sort nothing)
        for k in range(1, ps.nranges):
            if st_range_cmp(&ps.ranges[k - 1], &ps.ranges[k]) > 0:
                st_qsort(ps.ranges, ps.nranges, sizeof(StRange), st_range_cmp)
                break
        expect = 0
        for k in range(ps.nranges):
            if ps.ranges[k].begin != expect:
                rc = MLXK_LAYOUT
                ps.detail = ps.ranges[k].begin
                break
            expect = ps.ranges[k].end
    if rc == 0:
        base = 8 + hlen
        if expect > ST_U64_MAX - base:  # needs more than 2**64-1 bytes: reported saturated
            rc = MLXK_TRUNCATED
            ps.detail = ST_U64_MAX
        else:
            need = base + expect
            if need > file_size:
                rc = MLXK_TRUNCATED
                ps.detail = need
            elif need < file_size:
                rc = MLXK_TRAILING_BYTES
                ps.detail = need
    st_free(ps.keys)
    st_free(ps.arena)
    st_free(ps.ranges)
    if rc == ST_NOMEM:
        detail[0] = ST_ENOMEM
        return MLXK_IO_ERROR
    detail[0] = ps.detail if rc != 0 else 0
    return rc


cdef int st_check_fd(int fd, uint64_t file_size, uint64_t* detail) noexcept nogil:
    """Reads the header of an open file with pread and checks it (see st_check_buffer)."""
    cdef size_t first = <size_t>(file_size if file_size < MLXK_HEADER_FIRST_READ
                                 else MLXK_HEADER_FIRST_READ)
    cdef size_t got = 0, more = 0
    cdef uint64_t hlen, need
    cdef unsigned char* buf
    cdef unsigned char* bigger
    cdef int err, rc, k
    buf = <unsigned char*>st_malloc(first if first else 1)
    if buf == NULL:
        detail[0] = ST_ENOMEM
        return MLXK_IO_ERROR
    err = mlxk_read_full(fd, buf, first, 0, False, &got)
    if err == 0 and got >= 8:
        hlen = 0
        for k in range(8):
            hlen |= (<uint64_t>buf[k]) << (8 * k)
        # a header longer than the first read: fetch the rest (only when its length is sane)
        if 0 < hlen <= MLXK_MAX_HEADER_LENGTH and 8 + hlen <= file_size and 8 + hlen > got:
            need = 8 + hlen
            bigger = <unsigned char*>st_realloc(buf, <size_t>need)
            if bigger == NULL:
                st_free(buf)
                detail[0] = ST_ENOMEM
                return MLXK_IO_ERROR
            buf = bigger
            err = mlxk_read_full(fd, buf + got, <size_t>need - got, <int64_t>got, False, &more)
            got += more
    if err:
        st_free(buf)
        detail[0] = <uint64_t>err
        return MLXK_IO_ERROR
    rc = st_check_buffer(buf, got, file_size, detail)
    st_free(buf)
    return rc


def check_safetensors_bytes(data, file_size=None):
    """Checks safetensors bytes (the whole file, or its leading bytes with file_size given).

    Returns ``(code, detail)`` with the codes of ``mlxk.core.codes``.
    """
    cdef const unsigned char[::1] view = data
    cdef size_t n = view.shape[0]
    cdef const unsigned char* ptr = &view[0] if n > 0 else NULL
    cdef uint64_t size = n if file_size is None else file_size  # OverflowError if < 0
    cdef uint64_t detail = 0
    cdef int code
    with nogil:
        code = st_check_buffer(ptr, n, size, &detail)
    return code, detail


def check_safetensors_file(path):
    """Checks the safetensors file at ``path``; ``(IO_ERROR, errno)`` when it cannot be read."""
    cdef bytes bpath = _st_os.fsencode(path)
    if b"\0" in bpath:
        raise ValueError("embedded null byte")  # as os.open would; C would cut the path short
    cdef const char* cpath = bpath
    cdef int fd
    cdef int code = MLXK_OK
    cdef uint64_t detail = 0
    cdef st_struct_stat st
    with nogil:
        fd = st_open_file(ST_AT_FDCWD, cpath)
        if fd < 0:
            code = MLXK_IO_ERROR
            detail = <uint64_t>st_errno
        else:
            if st_fstat(fd, &st) != 0:
                code = MLXK_IO_ERROR
                detail = <uint64_t>st_errno
            else:
                code = st_check_fd(fd, <uint64_t>st.st_size, &detail)
            st_close(fd)
    return code, detail
