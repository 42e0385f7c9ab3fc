# The cache scan, C level (included by _native.pyx). The pure-Python twin is mlxk/core/twin/scan.py;
# both return exactly the same records, in the same order.
#
# Design: the repo folder names are sorted in Python, then worker pthreads (the calling thread is
# one of them) take repos one at a time from a shared atomic counter and scan each completely
# without the GIL: every system call (openat, getdents64/readdir, fstatat, readlinkat, read, the
# safetensors header check) and every record lives in C, in per-thread arenas. Once all threads
# are joined, the calling thread turns the C records into the NamedTuples of mlxk.core.records, in
# repo order, and frees everything.
#
# Fidelity rules, where C could otherwise differ from the twin's os.* calls on full paths:
# - system calls go relative to an open folder (openat, fstatat, readlinkat), but the full path
#   the twin would pass is tracked, and one of PATH_MAX bytes or more fails (ENAMETOOLONG) as in
#   the twin: that entry is skipped, or that folder counts as unreadable;
# - a folder is read completely and closed before its subfolders are entered, so a thread holds
#   at most four descriptors (no EMFILE the twin would not see);
# - names are sorted by their decoded code points (utf-8 + surrogateescape), as sorted() on str;
# - EINTR is retried, as Python does; scan threads block signals, so they go to the caller;
# - a short read() of a regular file is taken as its end (Python would read once more to see 0).
#
# Nothing outside the hub root is read: a link is followed only when realpath() puts it inside
# the root (a repo folder, its refs/ snapshots/ blobs/ folders, a lock folder, a snapshot file).
# Folders are opened with O_NOFOLLOW first, so only a link pays for realpath(). A snapshot link
# written the way huggingface_hub writes it (../../blobs/<name>) is resolved by name in the open
# blobs/ folder, without following the blob: a blob that is itself a link is reported, not read.
# Refs that are links are not read at all.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcmp, memcpy, memset, strlen
from libc.errno cimport EINTR, EIO, EISDIR, ELOOP, EMLINK, ENAMETOOLONG, ENOENT, ENOMEM, ENOTDIR, EXDEV, errno
from posix.fcntl cimport AT_FDCWD, AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_DIRECTORY, O_RDONLY, openat
from posix.stat cimport S_ISDIR, S_ISLNK, S_ISREG, fstat, fstatat, stat, struct_stat
from posix.stdlib cimport realpath
from posix.unistd cimport close, sysconf
from posix.signal cimport sigfillset
from posix.types cimport sigset_t
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM

from common cimport (
    MLXK_DEV_RAW, MLXK_MTIME_NSEC, MLXK_MTIME_SEC, SIG_BLOCK, SIG_SETMASK, mlxk_dev_nonnegative,
    mlxk_dev_to_py, mlxk_fetch_inc, mlxk_ns_fits, mlxk_read_full, pthread_create, pthread_join,
    pthread_sigmask, pthread_t,
)
from common cimport mlxk_err as sc_err, mlxk_ns_to_py as _sc_ns, mlxk_open_file as sc_open_at
from scan_posix cimport (
    PATH_MAX, _SC_NPROCESSORS_ONLN, memmem, mlxk_dir, mlxk_dir_end, mlxk_dir_next, mlxk_dir_open,
    mlxk_le32, mlxk_le64, readlinkat,
)

import os as _sc_os
import sys as _sc_sys

from mlxk.core import codes as _sc_codes
from mlxk.core import memo_format as _sc_memo_format
from mlxk.core import records as _sc_records
from mlxk.core.records import CheckResult as _ScCheckResult
from mlxk.core.records import FileEntry as _ScFileEntry
from mlxk.core.records import RepoRecord as _ScRepoRecord
from mlxk.core.records import SnapshotRecord as _ScSnapshotRecord


cdef extern from "<fcntl.h>" nogil:
    enum: O_NOFOLLOW


cdef extern from "<string.h>" nogil:
    const void* memchr(const void* s, int c, size_t n)


cdef extern from "Python.h":
    object PyUnicode_DecodeFSDefaultAndSize(const char* s, Py_ssize_t size)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_EncodeFSDefault(object unicode)
    int PyGC_Disable()
    int PyGC_Enable()


cdef extern from *:
    """
    /* A NamedTuple (tuple subclass) of n still-empty items: what tuple.__new__(cls, ...) does
       after building its argument tuple, without that tuple. */
    static PyObject *mlxk_tuple_alloc(PyObject *cls, Py_ssize_t n) {
        PyTypeObject *t = (PyTypeObject *)cls;
        return t->tp_alloc(t, n);
    }
    """
    object mlxk_tuple_alloc(object cls, Py_ssize_t n)


# ---------------------------------------------------------------------------------------------
# The rules' constants, taken from the Python modules so that both sides share one table.

cdef enum:
    SC_MAX_SUFFIXES = 32
    SC_MEMO_RECORD = 48
    SC_CHUNK = 256 * 1024 - 64   # arena chunk payload
    SC_REF_HEAD = 256            # bytes of a ref file the twin reads
    SC_LIST_INITIAL = 64         # first capacity of a directory listing
    SC_MAX_THREADS = 256
    SC_DIRBUF = 32768            # getdents64 buffer, as glibc's readdir uses

cdef size_t SC_README_HEAD = _sc_records.README_HEAD
cdef int64_t SC_READ_WHOLE_LIMIT = _sc_records.READ_WHOLE_LIMIT
cdef int SC_MAX_DEPTH = _sc_records.MAX_DEPTH
cdef int SC_FLAG_CHAT_TEMPLATE = _sc_records.FLAG_CHAT_TEMPLATE
cdef bytes _sc_lfs_prefix = bytes(_sc_records.LFS_PREFIX)
cdef const char* SC_LFS_PREFIX = _sc_lfs_prefix
cdef size_t SC_LFS_LEN = len(_sc_lfs_prefix)
cdef int SC_OK = _sc_codes.OK
cdef int SC_IO_ERROR = _sc_codes.IO_ERROR
cdef int SC_EMPTY = _sc_codes.EMPTY
cdef int SC_LFS_POINTER = _sc_codes.LFS_POINTER
cdef int SC_LINK_OUTSIDE = _sc_codes.LINK_OUTSIDE
cdef int SC_BLOB_IS_LINK = _sc_codes.BLOB_IS_LINK
cdef uint32_t SC_KIND_SAFETENSORS = _sc_memo_format.KIND_SAFETENSORS
cdef uint32_t SC_KIND_WEIGHT_HEAD = _sc_memo_format.KIND_WEIGHT_HEAD

cdef tuple _sc_suffix_bytes = tuple(_sc_os.fsencode(s) for s in _sc_records.WEIGHT_SUFFIXES)
cdef const char* SC_SUFFIX[SC_MAX_SUFFIXES]
cdef size_t SC_SUFFIX_LEN[SC_MAX_SUFFIXES]
cdef int SC_NSUFFIX = len(_sc_suffix_bytes)


cdef void _sc_init_tables() except *:
    cdef int k
    cdef bytes b
    if SC_NSUFFIX > SC_MAX_SUFFIXES:
        raise ImportError("too many WEIGHT_SUFFIXES for the native scan")
    for k in range(SC_NSUFFIX):
        b = _sc_suffix_bytes[k]
        SC_SUFFIX[k] = b
        SC_SUFFIX_LEN[k] = len(b)
    if _sc_memo_format.RECORD.format not in ("<QQQqIIQ", b"<QQQqIIQ") or _sc_memo_format.RECORD.size != 48:
        raise ImportError("the memo record layout changed; update _native/scan.pxi")
    for cls, n in ((_ScFileEntry, 13), (_ScSnapshotRecord, 4), (_ScRepoRecord, 6), (_ScCheckResult, 7)):
        if not (isinstance(cls, type) and issubclass(cls, tuple) and len(cls._fields) == n):
            raise ImportError(f"{cls.__name__} changed shape; update _native/scan.pxi")


_sc_init_tables()


# ---------------------------------------------------------------------------------------------
# Arenas: bump allocation in chunks. The output arena of a thread lives until the records are
# converted; the scratch arena is used like a stack (mark / release) for directory listings.

cdef struct ScChunk:
    ScChunk* prev
    size_t cap
    size_t used
    size_t pad  # keeps the payload 16-byte aligned after this 32-byte header


cdef struct ScArena:
    ScChunk* top
    ScChunk* spare  # one released standard chunk, kept to avoid malloc churn


cdef struct ScMark:
    ScChunk* chunk
    size_t used


cdef void* sc_alloc_slow(ScArena* a, size_t need, bint stack) noexcept nogil:
    cdef ScChunk* c
    cdef size_t cap = SC_CHUNK if need <= SC_CHUNK else need
    if cap == SC_CHUNK and a.spare != NULL:
        c = a.spare
        a.spare = NULL
    else:
        c = <ScChunk*>malloc(sizeof(ScChunk) + cap)
        if c == NULL:
            return NULL
        c.cap = cap
    c.used = need
    if not stack and a.top != NULL and need > SC_CHUNK // 4:
        # a big block goes under the current chunk, which keeps serving small requests
        c.prev = a.top.prev
        a.top.prev = c
    else:
        c.prev = a.top
        a.top = c
    return <void*>(c + 1)


cdef inline void* sc_alloc(ScArena* a, size_t n, bint stack) noexcept nogil:
    cdef ScChunk* c = a.top
    cdef size_t need = (n + 15) & ~(<size_t>15)
    cdef char* p
    if need < n:
        return NULL  # overflow
    if c != NULL and c.cap - c.used >= need:
        p = (<char*>(c + 1)) + c.used
        c.used += need
        return p
    return sc_alloc_slow(a, need, stack)


cdef inline ScMark sc_mark(ScArena* a) noexcept nogil:
    cdef ScMark m
    m.chunk = a.top
    m.used = a.top.used if a.top != NULL else 0
    return m


cdef void sc_release(ScArena* a, ScMark m) noexcept nogil:
    cdef ScChunk* c
    while a.top != m.chunk:
        c = a.top
        a.top = c.prev
        if c.cap == SC_CHUNK and a.spare == NULL:
            a.spare = c
        else:
            free(c)
    if a.top != NULL:
        a.top.used = m.used


cdef void sc_arena_free(ScArena* a) noexcept nogil:
    cdef ScChunk* c
    while a.top != NULL:
        c = a.top
        a.top = c.prev
        free(c)
    free(a.spare)
    a.spare = NULL


# ---------------------------------------------------------------------------------------------
# Records, as singly linked lists in the output arena (every record starts with its link).

cdef struct ScNode:
    ScNode* next


cdef struct ScList:
    ScNode* head
    ScNode* tail
    size_t n


cdef struct ScFile:
    ScNode link
    const char* path
    const char* target
    const char* content
    int64_t path_len
    int64_t target_len    # -1: None (not a link)
    int64_t content_len   # -1: None
    int64_t size
    int64_t mt_sec
    int64_t mt_nsec
    int64_t lmt_sec
    int64_t lmt_nsec
    uint64_t dev          # raw, see mlxk_dev_to_py
    uint64_t ino
    uint64_t detail
    int64_t check
    int flags
    uint32_t kind         # memo kind of a weight file, 0 otherwise
    uint8_t is_link
    uint8_t exists
    uint8_t fresh         # checked now (memo miss): also a CheckResult


cdef struct ScSnap:
    ScNode link
    const char* name
    int64_t name_len
    int64_t mt_sec
    int64_t mt_nsec
    int err
    ScList files


cdef struct ScRef:
    ScNode link
    const char* name
    const char* text
    int64_t name_len
    int64_t text_len


cdef struct ScIncomplete:
    ScNode link
    const char* name
    int64_t name_len
    int64_t size


cdef struct ScStr:
    ScNode link
    const char* s
    int64_t len


cdef struct ScRepo:
    int err
    ScList refs
    ScList snaps
    ScList incomplete
    ScList locks


cdef struct ScJob:
    const char* path       # os.path.join(root, name), encoded
    const char* lock_path  # os.path.join(root, ".locks", name), encoded
    size_t path_len
    size_t lock_len
    ScRepo out


cdef struct ScMemo:
    const unsigned char* base
    size_t n
    const unsigned char** order  # sorted record pointers when the body is not sorted, else NULL


cdef struct ScShared:
    ScJob* jobs
    size_t njobs
    size_t next
    ScMemo memo
    const char* root_real  # the hub root, links resolved (os.path.realpath)
    size_t root_real_len


cdef struct ScCtx:
    ScShared* sh
    ScArena out
    ScArena scratch
    char* path             # the full path the twin would use, NUL-terminated
    size_t path_cap
    char* link             # readlink buffer (PATH_MAX)
    unsigned char* head    # small reads (README head, ref text, git-lfs prefix)
    size_t head_cap
    char* dirbuf           # directory entries (getdents64)
    size_t dirbuf_cap
    char* real             # realpath() buffer (PATH_MAX)
    int blobs_fd           # the repo being scanned: its blobs/ folder, or -1
    bint direct_blobs      # its snapshots/ is a real folder: ../../blobs/<name> is blobs_fd's <name>
    int oom


cdef inline void sc_append(ScList* lst, ScNode* node) noexcept nogil:
    node.next = NULL
    if lst.tail == NULL:
        lst.head = node
    else:
        lst.tail.next = node
    lst.tail = node
    lst.n += 1


cdef inline const char* sc_copy(ScCtx* c, const char* s, size_t n) noexcept nogil:
    cdef char* p = <char*>sc_alloc(&c.out, n + 1, False)
    if p == NULL:
        c.oom = 1
        return NULL
    memcpy(p, s, n)
    p[n] = 0
    return p


# ---------------------------------------------------------------------------------------------
# Names: sorted like Python's sorted() on the os.fsdecode()d str.

cdef struct ScName:
    const char* s
    size_t len
    void* item   # phase 1 result (a record), or NULL
    int high     # has a byte >= 0x80: compare by code point
    int what     # SC_SKIP, SC_LEAF, SC_DIR


cdef enum:
    SC_SKIP = 0
    SC_LEAF = 1
    SC_DIR = 2


cdef inline uint32_t sc_next_cp(const unsigned char* s, size_t n, size_t* pos) noexcept nogil:
    # one code point of the utf-8 + surrogateescape decoding (invalid bytes -> U+DC80..U+DCFF)
    cdef size_t i = pos[0]
    cdef uint32_t b0 = s[i]
    cdef uint32_t lo = 0x80, hi = 0xBF, cp
    cdef int need, k
    if b0 < 0x80:
        pos[0] = i + 1
        return b0
    if 0xC2 <= b0 <= 0xDF:
        need = 1
        cp = b0 & 0x1F
    elif 0xE0 <= b0 <= 0xEF:
        need = 2
        cp = b0 & 0x0F
        if b0 == 0xE0:
            lo = 0xA0
        elif b0 == 0xED:
            hi = 0x9F
    elif 0xF0 <= b0 <= 0xF4:
        need = 3
        cp = b0 & 0x07
        if b0 == 0xF0:
            lo = 0x90
        elif b0 == 0xF4:
            hi = 0x8F
    else:
        pos[0] = i + 1
        return 0xDC00 + b0
    if i + <size_t>need >= n:
        pos[0] = i + 1  # truncated sequence
        return 0xDC00 + b0
    if not (lo <= s[i + 1] <= hi):
        pos[0] = i + 1
        return 0xDC00 + b0
    for k in range(1, need + 1):
        if k > 1 and not (0x80 <= s[i + k] <= 0xBF):
            pos[0] = i + 1
            return 0xDC00 + b0
        cp = (cp << 6) | (s[i + k] & 0x3F)
    pos[0] = i + 1 + need
    return cp


cdef int sc_cmp_codepoints(const unsigned char* a, size_t na, const unsigned char* b, size_t nb) noexcept nogil:
    cdef size_t i = 0, j = 0
    cdef uint32_t x, y
    while i < na and j < nb:
        x = sc_next_cp(a, na, &i)
        y = sc_next_cp(b, nb, &j)
        if x != y:
            return -1 if x < y else 1
    if i < na:
        return 1
    if j < nb:
        return -1
    return 0


cdef int sc_cmp_names(const void* pa, const void* pb) noexcept nogil:
    cdef const ScName* a = <const ScName*>pa
    cdef const ScName* b = <const ScName*>pb
    cdef size_t n
    cdef int r
    if a.high or b.high:
        return sc_cmp_codepoints(<const unsigned char*>a.s, a.len, <const unsigned char*>b.s, b.len)
    n = a.len if a.len < b.len else b.len
    r = memcmp(a.s, b.s, n)
    if r != 0:
        return r
    return (a.len > b.len) - (a.len < b.len)


cdef inline bint sc_ends_with(const char* s, size_t n, const char* suffix, size_t m) noexcept nogil:
    return n >= m and memcmp(s + n - m, suffix, m) == 0


cdef inline bint sc_equals(const char* s, size_t n, const char* t, size_t m) noexcept nogil:
    return n == m and memcmp(s, t, m) == 0


# ---------------------------------------------------------------------------------------------
# System calls.

cdef inline int sc_open_dir(int at_fd, const char* path) noexcept nogil:
    # os.listdir's open: a path relative to at_fd (AT_FDCWD: the twin's own path string)
    cdef int fd
    while True:
        fd = openat(at_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 or errno != EINTR:
            return fd


cdef bint sc_leads_outside(ScCtx* c, const char* path) noexcept nogil:
    # the twin's _leads_outside for a path known to be a link: it resolves outside the hub root
    # (one that does not resolve is not: following it fails like any missing file)
    cdef size_t n, r = c.sh.root_real_len
    if realpath(path, c.real) == NULL:
        return False
    if r == 1 and c.sh.root_real[0] == b'/':
        return False
    n = strlen(c.real)
    return not (n >= r and memcmp(c.real, c.sh.root_real, r) == 0 and (n == r or c.real[r] == b'/'))


cdef int sc_open_inside(ScCtx* c, int at_fd, const char* name, const char* full, bint* linked) noexcept nogil:
    # os.listdir's open of folder `name` (full path `full`), except that a link resolving
    # outside the hub root is not followed: the descriptor, or -errno (-EXDEV for such a link)
    cdef int fd, e
    cdef struct_stat st
    linked[0] = False
    while True:
        fd = openat(at_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        if fd >= 0 or errno != EINTR:
            break
    if fd >= 0:
        return fd
    # O_NOFOLLOW on a link: ELOOP (EMLINK on some BSDs; ENOTDIR on Linux with O_DIRECTORY,
    # which a file gives too: only then is the entry looked at)
    e = errno
    if e == ENOTDIR:
        if fstatat(at_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 or not S_ISLNK(st.st_mode):
            return -ENOTDIR
    elif e != ELOOP and e != EMLINK:
        return -sc_err(e)
    linked[0] = True
    if sc_leads_outside(c, full):
        return -EXDEV
    fd = sc_open_dir(at_fd, name)
    return fd if fd >= 0 else -sc_err(errno)


cdef const char* sc_blob_name(const char* target, size_t n, int depth) noexcept nogil:
    # the twin's _blob_name: the <name> of "../" * (depth + 2) + "blobs/" + <name>, else NULL
    cdef size_t k = 3 * <size_t>(depth + 2), i, m
    cdef const char* name
    if n <= k + 6:
        return NULL
    for i in range(<size_t>(depth + 2)):
        if memcmp(target + 3 * i, "../", 3) != 0:
            return NULL
    if memcmp(target + k, "blobs/", 6) != 0:
        return NULL
    name = target + k + 6
    m = n - k - 6
    if memchr(name, b'/', m) != NULL:
        return NULL
    if name[0] == b'.' and (m == 1 or (m == 2 and name[1] == b'.')):
        return NULL
    return name


cdef inline size_t sc_join(ScCtx* c, size_t dir_len, const char* name, size_t name_len) noexcept nogil:
    # c.path[:dir_len] + os.path.join's separator + name; 0 when the twin's call would fail with
    # ENAMETOOLONG (a path of PATH_MAX bytes or more)
    cdef size_t sep = 0 if dir_len > 0 and c.path[dir_len - 1] == b'/' else (1 if dir_len > 0 else 0)
    cdef size_t total = dir_len + sep + name_len
    if total >= <size_t>PATH_MAX or total + 1 > c.path_cap:
        return 0
    if sep:
        c.path[dir_len] = b'/'
    memcpy(c.path + dir_len + sep, name, name_len)
    c.path[total] = 0
    return total


cdef inline size_t sc_rel_start(ScCtx* c, size_t dir_len) noexcept nogil:
    # where paths relative to the folder c.path[:dir_len] start in its children's full paths
    return dir_len if dir_len == 0 or c.path[dir_len - 1] == b'/' else dir_len + 1


cdef struct ScListing:
    int fd          # open until sc_close: for fstatat/openat/readlinkat on the entries
    ScName* names
    size_t n


cdef enum:
    SC_LIST_ALL = 0
    SC_LIST_INCOMPLETE = 1   # only names ending in ".incomplete"
    SC_LIST_PROBE = 2        # read everything, keep nothing (os.listdir as a test)


cdef inline void sc_close(ScListing* lst) noexcept nogil:
    if lst.fd >= 0:
        close(lst.fd)
        lst.fd = -1


cdef int sc_list_fd(ScCtx* c, int fd, int mode, ScListing* out) noexcept nogil:
    # the rest of os.listdir on an open folder, sorted; 0 or an errno (fd stays open either way)
    cdef mlxk_dir d
    cdef const char* name
    cdef char* copy
    cdef size_t ln, cap = 0, k
    cdef ScName* names = NULL
    cdef ScName* grown
    cdef int e = mlxk_dir_open(&d, fd, c.dirbuf, c.dirbuf_cap)
    out.names = NULL
    out.n = 0
    if e:
        return e
    while True:
        name = mlxk_dir_next(&d, &e)
        if name == NULL:
            break
        if name[0] == b'.' and (name[1] == 0 or (name[1] == b'.' and name[2] == 0)):
            continue
        if mode == SC_LIST_PROBE:
            continue
        ln = strlen(name)
        if mode == SC_LIST_INCOMPLETE and not sc_ends_with(name, ln, ".incomplete", 11):
            continue
        if out.n == cap:
            cap = SC_LIST_INITIAL if cap == 0 else cap * 2
            grown = <ScName*>sc_alloc(&c.scratch, cap * sizeof(ScName), True)
            if grown == NULL:
                e = ENOMEM
                c.oom = 1
                break
            if out.n:
                memcpy(grown, names, out.n * sizeof(ScName))
            names = grown
        copy = <char*>sc_alloc(&c.scratch, ln + 1, True)
        if copy == NULL:
            e = ENOMEM
            c.oom = 1
            break
        memcpy(copy, name, ln + 1)
        names[out.n].s = copy
        names[out.n].len = ln
        names[out.n].item = NULL
        names[out.n].high = 0
        names[out.n].what = SC_SKIP
        for k in range(ln):
            if (<unsigned char>name[k]) >= 0x80:
                names[out.n].high = 1
                break
        out.n += 1
    mlxk_dir_end(&d)
    if e:
        out.n = 0
        return e
    if out.n > 1:
        qsort(names, out.n, sizeof(ScName), sc_cmp_names)
    out.names = names
    return 0


cdef int sc_list(ScCtx* c, int at_fd, const char* path, int mode, ScListing* out) noexcept nogil:
    # os.listdir(path), sorted; on success out.fd is open (sc_close). 0 or an errno.
    cdef int e
    out.fd = sc_open_dir(at_fd, path)
    out.names = NULL
    out.n = 0
    if out.fd < 0:
        return sc_err(errno)
    e = sc_list_fd(c, out.fd, mode, out)
    if e:
        sc_close(out)
    return e


# ---------------------------------------------------------------------------------------------
# The memo: binary search on (dev, ino, kind); a record answers only for the same size and mtime.

cdef inline const unsigned char* sc_memo_at(const ScMemo* m, size_t i) noexcept nogil:
    return m.order[i] if m.order != NULL else m.base + i * SC_MEMO_RECORD


cdef inline int sc_memo_key_cmp(const unsigned char* r, uint64_t dev, uint64_t ino, uint32_t kind) noexcept nogil:
    cdef uint64_t a = mlxk_le64(r)
    cdef uint32_t k
    if a != dev:
        return -1 if a < dev else 1
    a = mlxk_le64(r + 8)
    if a != ino:
        return -1 if a < ino else 1
    k = mlxk_le32(r + 32)
    if k != kind:
        return -1 if k < kind else 1
    return 0


cdef int sc_memo_record_cmp(const void* pa, const void* pb) noexcept nogil:
    # (dev, ino, kind), then position in the body: a stable sort, so "the last record wins" holds
    cdef const unsigned char* a = (<const unsigned char**>pa)[0]
    cdef const unsigned char* b = (<const unsigned char**>pb)[0]
    cdef int r = sc_memo_key_cmp(a, mlxk_le64(b), mlxk_le64(b + 8), mlxk_le32(b + 32))
    if r != 0:
        return r
    return (a > b) - (a < b)


cdef bint sc_memo_find(const ScMemo* m, ScFile* f, uint32_t kind) noexcept nogil:
    # the twin's dict lookup on (dev, ino, size, mtime_ns, kind); a later record wins
    cdef size_t lo = 0, hi = m.n, mid
    cdef const unsigned char* r
    cdef int64_t mtime
    cdef bint found = False
    if m.n == 0 or not mlxk_dev_nonnegative(f.dev) or f.size < 0:
        return False
    if not mlxk_ns_fits(f.mt_sec):
        return False  # not a signed 64-bit nanosecond count: no record can hold it
    mtime = f.mt_sec * 1000000000 + f.mt_nsec
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if sc_memo_key_cmp(sc_memo_at(m, mid), f.dev, f.ino, kind) < 0:
            lo = mid + 1
        else:
            hi = mid
    while lo < m.n:
        r = sc_memo_at(m, lo)
        if sc_memo_key_cmp(r, f.dev, f.ino, kind) != 0:
            break
        if mlxk_le64(r + 16) == <uint64_t>f.size and <int64_t>mlxk_le64(r + 24) == mtime:
            found = True
            f.check = mlxk_le32(r + 36)
            f.detail = mlxk_le64(r + 40)
        lo += 1
    return found


# ---------------------------------------------------------------------------------------------
# Files.

cdef uint32_t sc_weight_kind(const char* name, size_t n) noexcept nogil:
    cdef int k
    for k in range(SC_NSUFFIX):
        if sc_ends_with(name, n, SC_SUFFIX[k], SC_SUFFIX_LEN[k]):
            return SC_KIND_SAFETENSORS if sc_ends_with(name, n, ".safetensors", 12) else SC_KIND_WEIGHT_HEAD
    return 0


cdef void sc_check_weights(ScCtx* c, int dfd, const char* name, const struct_stat* st, ScFile* f) noexcept nogil:
    # dfd/name: where the bytes are (the blob of a snapshot link, or the entry itself)
    cdef int fd, e
    cdef size_t got
    cdef uint64_t detail = 0
    if f.kind == SC_KIND_SAFETENSORS:
        # check_safetensors_file: os.open, then the header check; (IO_ERROR, errno or 0)
        fd = sc_open_at(dfd, name)
        if fd < 0:
            f.check = SC_IO_ERROR
            f.detail = <uint64_t>errno
            return
        f.check = st_check_fd(fd, <uint64_t>f.size, &detail)
        f.detail = detail
        close(fd)
        return
    if f.size == 0:
        f.check = SC_EMPTY
        f.detail = 0
        return
    fd = sc_open_at(dfd, name)
    if fd < 0:
        f.check = SC_IO_ERROR
        f.detail = <uint64_t>sc_err(errno)
        return
    if S_ISDIR(st.st_mode):
        e = EISDIR  # what open() raises after its fstat
    else:
        e = mlxk_read_full(fd, c.head, SC_LFS_LEN, -1, S_ISREG(st.st_mode), &got)
    close(fd)
    if e:
        f.check = SC_IO_ERROR
        f.detail = <uint64_t>e
    elif got == SC_LFS_LEN and memcmp(c.head, SC_LFS_PREFIX, SC_LFS_LEN) == 0:
        f.check = SC_LFS_POINTER
        f.detail = 0
    else:
        f.check = SC_OK
        f.detail = 0


cdef void sc_read_small(ScCtx* c, const char* name, size_t n, int dfd, const char* where,
                        const struct_stat* st, ScFile* f) noexcept nogil:
    # README.md head; config.json, *.index.json whole; tokenizer_config.json: chat template flag.
    # `name` says which file it is; dfd/where is where its bytes are (a blob, or the entry itself)
    cdef size_t limit, got = 0
    cdef bint tokenizer = False, readme = False
    cdef unsigned char* buf
    cdef ScMark m
    cdef int fd, e
    if sc_equals(name, n, "README.md", 9):
        readme = True
        limit = SC_README_HEAD
    elif sc_equals(name, n, "config.json", 11) or sc_ends_with(name, n, ".index.json", 11) \
            or sc_equals(name, n, "tokenizer_config.json", 21):
        if f.size > SC_READ_WHOLE_LIMIT:
            return
        tokenizer = sc_equals(name, n, "tokenizer_config.json", 21)
        limit = <size_t>f.size
    else:
        return
    fd = sc_open_at(dfd, where)
    if fd < 0:
        f.check = SC_IO_ERROR
        f.detail = <uint64_t>sc_err(errno)
        return
    if S_ISDIR(st.st_mode):
        close(fd)
        f.check = SC_IO_ERROR
        f.detail = EISDIR
        return
    if readme:
        buf = c.head
    elif tokenizer:
        m = sc_mark(&c.scratch)
        buf = <unsigned char*>sc_alloc(&c.scratch, limit + 1, True)
    else:
        buf = <unsigned char*>sc_alloc(&c.out, limit + 1, False)
    if buf == NULL:
        close(fd)
        c.oom = 1
        if tokenizer:
            sc_release(&c.scratch, m)
        return
    e = mlxk_read_full(fd, buf, limit, -1, S_ISREG(st.st_mode), &got)
    close(fd)
    if e:
        f.check = SC_IO_ERROR
        f.detail = <uint64_t>e
    else:
        f.check = SC_OK
        f.detail = 0
        if tokenizer:
            if memmem(buf, got, b'"chat_template"', 15) != NULL:
                f.flags = SC_FLAG_CHAT_TEMPLATE
        elif readme:
            f.content = sc_copy(c, <const char*>buf, got)
            if f.content != NULL:
                f.content_len = <int64_t>got
        else:
            f.content = <const char*>buf
            f.content_len = <int64_t>got
    if tokenizer:
        sc_release(&c.scratch, m)


cdef ScFile* sc_file(ScCtx* c, int dfd, const ScName* nm, const char* rel, size_t rel_len, int depth,
                     const struct_stat* lst) noexcept nogil:
    # the twin's _file_entry for one non-directory entry (c.path: its full path)
    cdef ScFile* f = <ScFile*>sc_alloc(&c.out, sizeof(ScFile), False)
    cdef struct_stat st
    cdef const struct_stat* sp = lst
    cdef ssize_t n
    cdef int rfd = dfd          # where the bytes are read: the entry, or the blob it names
    cdef const char* rname = nm.s
    cdef const char* blob
    if f == NULL:
        c.oom = 1
        return NULL
    memset(f, 0, sizeof(ScFile))
    f.path = sc_copy(c, rel, rel_len)
    if f.path == NULL:
        return NULL
    f.path_len = <int64_t>rel_len
    f.target_len = -1
    f.content_len = -1
    f.check = -1
    f.lmt_sec = MLXK_MTIME_SEC(lst)
    f.lmt_nsec = MLXK_MTIME_NSEC(lst)
    if S_ISLNK(lst.st_mode):
        f.is_link = 1
        n = readlinkat(dfd, nm.s, c.link, PATH_MAX)
        if n < 0:
            n = 0  # the twin's target = ""
        f.target = sc_copy(c, c.link, <size_t>n)
        if f.target == NULL:
            return NULL
        f.target_len = n
        f.size = -1  # until followed: exists False, mtime/dev/ino 0, check -1 or why not followed
        blob = sc_blob_name(f.target, <size_t>n, depth) if c.direct_blobs else NULL
        if blob != NULL:
            if c.blobs_fd < 0 or fstatat(c.blobs_fd, blob, &st, AT_SYMLINK_NOFOLLOW) != 0:
                return f
            if S_ISLNK(st.st_mode):
                f.check = SC_BLOB_IS_LINK
                return f
            rfd = c.blobs_fd
            rname = blob
        elif sc_leads_outside(c, c.path):
            f.check = SC_LINK_OUTSIDE
            return f
        elif fstatat(dfd, nm.s, &st, 0) != 0:
            return f
        sp = &st
    f.exists = 1
    f.size = <int64_t>sp.st_size
    f.mt_sec = MLXK_MTIME_SEC(sp)
    f.mt_nsec = MLXK_MTIME_NSEC(sp)
    f.dev = MLXK_DEV_RAW(sp)
    f.ino = <uint64_t>sp.st_ino
    f.kind = sc_weight_kind(nm.s, nm.len)
    if f.kind:
        if not sc_memo_find(&c.sh.memo, f, f.kind):
            sc_check_weights(c, rfd, rname, sp, f)
            f.fresh = 1
    elif depth == 0 or sc_ends_with(nm.s, nm.len, ".index.json", 11):
        # top-level small files, and shard indexes at any depth (diffusers-style subfolders)
        sc_read_small(c, nm.s, nm.len, rfd, rname, sp, f)
    return f


# ---------------------------------------------------------------------------------------------
# Folders. Each is read completely (phase 1) before its subfolders are entered (phase 2), in
# sorted order, so records come out in the twin's order. A thread holds at most four
# descriptors: the repo, snapshots/, the folder being read, and one file.

cdef int sc_scan_dir(ScCtx* c, int at_fd, const char* path, size_t dir_len, size_t rel_start, int depth,
                     ScSnap* snap) noexcept nogil:
    # the twin's _scan_dir: 0, or the errno of a listing that failed (it aborts the snapshot)
    cdef ScMark m = sc_mark(&c.scratch)
    cdef ScListing lst
    cdef ScName* nm
    cdef struct_stat st
    cdef size_t i, full, stop
    cdef int nested
    cdef int e = sc_list(c, at_fd, path, SC_LIST_ALL, &lst)
    if e:
        sc_release(&c.scratch, m)
        return e
    stop = lst.n
    for i in range(lst.n):
        nm = &lst.names[i]
        full = sc_join(c, dir_len, nm.s, nm.len)
        if full == 0:
            continue  # a path too long for the twin to stat
        if fstatat(lst.fd, nm.s, &st, AT_SYMLINK_NOFOLLOW) != 0:
            if errno == ENOENT:
                continue  # vanished while we looked
            # listable but not searchable (EACCES) and the like: the snapshot cannot be read,
            # which is not the same as its files being missing
            e = errno
            stop = i
            break
        if S_ISDIR(st.st_mode):
            if depth < SC_MAX_DEPTH:
                nm.what = SC_DIR
            continue
        nm.item = sc_file(c, lst.fd, nm, c.path + rel_start, full - rel_start, depth, &st)
        if nm.item != NULL:
            nm.what = SC_LEAF
    sc_close(&lst)
    c.path[dir_len] = 0
    for i in range(stop):
        nm = &lst.names[i]
        if nm.what == SC_LEAF:
            sc_append(&snap.files, <ScNode*>nm.item)
        elif nm.what == SC_DIR:
            full = sc_join(c, dir_len, nm.s, nm.len)
            nested = sc_scan_dir(c, AT_FDCWD, c.path, full, rel_start, depth + 1, snap)
            c.path[dir_len] = 0
            if nested:
                e = nested  # the twin stops at the first folder it cannot read, in order
                break
    sc_release(&c.scratch, m)
    return e


cdef void sc_snapshots(ScCtx* c, int fd, size_t dir_len, ScRepo* out) noexcept nogil:
    # snapshots/ (c.path[:dir_len], open as fd, closed here): its folders, each scanned while
    # this one stays open
    cdef ScMark m = sc_mark(&c.scratch)
    cdef ScListing lst
    cdef ScName* nm
    cdef ScSnap* snap
    cdef struct_stat st
    cdef size_t i, full
    if fd < 0:
        return
    lst.fd = fd
    if sc_list_fd(c, fd, SC_LIST_ALL, &lst):
        sc_close(&lst)
        sc_release(&c.scratch, m)
        return
    for i in range(lst.n):
        nm = &lst.names[i]
        full = sc_join(c, dir_len, nm.s, nm.len)
        if full == 0 or fstatat(lst.fd, nm.s, &st, AT_SYMLINK_NOFOLLOW) != 0:
            continue
        if not S_ISDIR(st.st_mode):
            continue
        snap = <ScSnap*>sc_alloc(&c.out, sizeof(ScSnap), False)
        if snap == NULL:
            c.oom = 1
            continue
        memset(snap, 0, sizeof(ScSnap))
        snap.name = sc_copy(c, nm.s, nm.len)
        snap.name_len = <int64_t>nm.len
        snap.mt_sec = MLXK_MTIME_SEC(&st)
        snap.mt_nsec = MLXK_MTIME_NSEC(&st)
        if snap.name != NULL:
            nm.item = snap
            nm.what = SC_DIR
    c.path[dir_len] = 0
    for i in range(lst.n):
        nm = &lst.names[i]
        if nm.what == SC_DIR:
            snap = <ScSnap*>nm.item
            full = sc_join(c, dir_len, nm.s, nm.len)
            snap.err = sc_scan_dir(c, lst.fd, nm.s, full, sc_rel_start(c, full), 0, snap)
            c.path[dir_len] = 0
            sc_append(&out.snaps, <ScNode*>snap)
    sc_close(&lst)
    sc_release(&c.scratch, m)


cdef ScRef* sc_read_ref(ScCtx* c, int dfd, const char* name, const char* rel, size_t rel_len,
                        const struct_stat* lst) noexcept nogil:
    # open(path, "rb").read(256).strip(); None when it cannot be read or is a link
    cdef size_t got = 0, a, b
    cdef int fd = -1 if S_ISLNK(lst.st_mode) else sc_open_at(dfd, name)
    cdef int e
    cdef bint regular = S_ISREG(lst.st_mode)
    cdef ScRef* ref
    cdef unsigned char ch
    if fd < 0:
        return NULL
    e = mlxk_read_full(fd, c.head, SC_REF_HEAD, -1, regular, &got)
    close(fd)
    if e:
        return NULL
    a = 0
    b = got
    while a < b:
        ch = c.head[a]
        if not (ch == 32 or 9 <= ch <= 13):
            break
        a += 1
    while b > a:
        ch = c.head[b - 1]
        if not (ch == 32 or 9 <= ch <= 13):
            break
        b -= 1
    ref = <ScRef*>sc_alloc(&c.out, sizeof(ScRef), False)
    if ref == NULL:
        c.oom = 1
        return NULL
    ref.name = sc_copy(c, rel, rel_len)
    ref.name_len = <int64_t>rel_len
    ref.text = sc_copy(c, <const char*>c.head + a, b - a)
    ref.text_len = <int64_t>(b - a)
    if ref.name == NULL or ref.text == NULL:
        return NULL
    return ref


cdef enum:
    SC_WALK_REFS = 0
    SC_WALK_LOCKS = 1


cdef void sc_walk(ScCtx* c, int fd, size_t dir_len, size_t rel_start, int depth,
                  int what, ScList* out) noexcept nogil:
    # the twin's _walk_files (plus, for refs, _read_refs' reads) of the folder c.path[:dir_len],
    # open as fd (closed here; < 0: not there): nothing when unreadable
    cdef ScMark m = sc_mark(&c.scratch)
    cdef ScListing lst
    cdef ScName* nm
    cdef ScStr* s
    cdef struct_stat st
    cdef size_t i, full
    if fd < 0:
        return
    lst.fd = fd
    if sc_list_fd(c, fd, SC_LIST_ALL, &lst):
        sc_close(&lst)
        sc_release(&c.scratch, m)
        return
    for i in range(lst.n):
        nm = &lst.names[i]
        full = sc_join(c, dir_len, nm.s, nm.len)
        if full == 0 or fstatat(lst.fd, nm.s, &st, AT_SYMLINK_NOFOLLOW) != 0:
            continue
        if S_ISDIR(st.st_mode):
            if depth < SC_MAX_DEPTH:
                nm.what = SC_DIR
            continue
        if what == SC_WALK_REFS:
            nm.item = sc_read_ref(c, lst.fd, nm.s, c.path + rel_start, full - rel_start, &st)
        else:
            s = <ScStr*>sc_alloc(&c.out, sizeof(ScStr), False)
            if s == NULL:
                c.oom = 1
                continue
            s.s = sc_copy(c, c.path + rel_start, full - rel_start)
            s.len = <int64_t>(full - rel_start)
            if s.s != NULL:
                nm.item = s
        if nm.item != NULL:
            nm.what = SC_LEAF
    sc_close(&lst)
    c.path[dir_len] = 0
    for i in range(lst.n):
        nm = &lst.names[i]
        if nm.what == SC_LEAF:
            sc_append(out, <ScNode*>nm.item)
        elif nm.what == SC_DIR:
            full = sc_join(c, dir_len, nm.s, nm.len)
            sc_walk(c, sc_open_dir(AT_FDCWD, c.path), full, rel_start, depth + 1, what, out)
            c.path[dir_len] = 0
    sc_release(&c.scratch, m)


cdef void sc_incomplete(ScCtx* c, int fd, size_t dir_len, ScRepo* out) noexcept nogil:
    # blobs/ (c.path[:dir_len], open as fd, which stays open): *.incomplete with their lstat sizes
    cdef ScMark m = sc_mark(&c.scratch)
    cdef ScListing lst
    cdef ScName* nm
    cdef ScIncomplete* inc
    cdef struct_stat st
    cdef size_t i, full
    if fd < 0:
        return
    lst.fd = fd
    if sc_list_fd(c, fd, SC_LIST_INCOMPLETE, &lst):
        sc_release(&c.scratch, m)
        return
    for i in range(lst.n):
        nm = &lst.names[i]
        full = sc_join(c, dir_len, nm.s, nm.len)
        if full == 0 or fstatat(lst.fd, nm.s, &st, AT_SYMLINK_NOFOLLOW) != 0:
            continue
        inc = <ScIncomplete*>sc_alloc(&c.out, sizeof(ScIncomplete), False)
        if inc == NULL:
            c.oom = 1
            continue
        inc.name = sc_copy(c, nm.s, nm.len)
        inc.name_len = <int64_t>nm.len
        inc.size = <int64_t>st.st_size
        if inc.name != NULL:
            sc_append(&out.incomplete, <ScNode*>inc)
    c.path[dir_len] = 0
    sc_release(&c.scratch, m)


cdef int sc_open_sub(ScCtx* c, int repo_fd, size_t repo_len, const char* name, size_t name_len,
                     bint* linked) noexcept nogil:
    # one of the repo's folders, as sc_open_inside opens it (-ENAMETOOLONG for a path too long)
    cdef size_t n = sc_join(c, repo_len, name, name_len)
    cdef int fd = -ENAMETOOLONG
    linked[0] = False
    if n:
        fd = sc_open_inside(c, repo_fd, name, c.path, linked)
    c.path[repo_len] = 0
    return fd


cdef void sc_scan_repo(ScCtx* c, ScJob* job) noexcept nogil:
    cdef ScRepo* out = &job.out
    cdef struct_stat st
    cdef ScListing lst
    cdef size_t n
    cdef int e, repo_fd, refs_fd, snaps_fd, blobs_fd, locks_fd
    cdef bint linked, snaps_linked
    # os.stat + os.listdir: a folder that opens needs no stat; otherwise stat decides the errno
    repo_fd = sc_open_inside(c, AT_FDCWD, job.path, job.path, &linked)
    if repo_fd == -EXDEV:
        out.err = EXDEV
        return
    if repo_fd < 0:
        e = -repo_fd
        if stat(job.path, &st) != 0:
            out.err = sc_err(errno)
        elif not S_ISDIR(st.st_mode):
            out.err = ENOTDIR
        else:
            out.err = e
        return
    e = sc_list_fd(c, repo_fd, SC_LIST_PROBE, &lst)  # an unreadable repo folder: the repo's error
    if e == 0 and job.path_len + 1 > c.path_cap:
        e = ENAMETOOLONG  # not reached: open() already refused such a path
    if e:
        close(repo_fd)
        out.err = e
        return
    memcpy(c.path, job.path, job.path_len + 1)
    # the repo's folders first: one of them leading outside the hub root makes the repo unreadable
    refs_fd = sc_open_sub(c, repo_fd, job.path_len, "refs", 4, &linked)
    snaps_fd = sc_open_sub(c, repo_fd, job.path_len, "snapshots", 9, &snaps_linked)
    blobs_fd = sc_open_sub(c, repo_fd, job.path_len, "blobs", 5, &linked)
    if refs_fd == -EXDEV or snaps_fd == -EXDEV or blobs_fd == -EXDEV:
        if refs_fd >= 0:
            close(refs_fd)
        if snaps_fd >= 0:
            close(snaps_fd)
        if blobs_fd >= 0:
            close(blobs_fd)
        close(repo_fd)
        out.err = EXDEV
        return
    n = sc_join(c, job.path_len, "refs", 4)
    sc_walk(c, refs_fd, n, sc_rel_start(c, n), 0, SC_WALK_REFS, &out.refs)
    c.path[job.path_len] = 0
    c.blobs_fd = blobs_fd
    c.direct_blobs = not snaps_linked
    n = sc_join(c, job.path_len, "snapshots", 9)
    sc_snapshots(c, snaps_fd, n, out)
    c.path[job.path_len] = 0
    c.blobs_fd = -1
    n = sc_join(c, job.path_len, "blobs", 5)
    sc_incomplete(c, blobs_fd, n, out)
    if blobs_fd >= 0:
        close(blobs_fd)
    close(repo_fd)
    if job.lock_len < <size_t>PATH_MAX and job.lock_len + 1 <= c.path_cap:
        memcpy(c.path, job.lock_path, job.lock_len + 1)
        locks_fd = sc_open_inside(c, AT_FDCWD, c.path, c.path, &linked)
        sc_walk(c, locks_fd, job.lock_len, sc_rel_start(c, job.lock_len), 0, SC_WALK_LOCKS, &out.locks)


cdef void* sc_worker(void* arg) noexcept nogil:
    cdef ScCtx* c = <ScCtx*>arg
    cdef ScShared* sh = c.sh
    cdef size_t i
    while not c.oom:
        i = mlxk_fetch_inc(&sh.next)
        if i >= sh.njobs:
            break
        sc_scan_repo(c, &sh.jobs[i])
    return NULL


cdef void sc_run_threads(ScCtx* ctxs, int nthreads) noexcept nogil:
    # nthreads - 1 pthreads plus the calling thread; fewer if pthread_create fails
    cdef pthread_t* tids
    cdef int* started
    cdef sigset_t all_signals, old
    cdef int k, extra = nthreads - 1
    if extra <= 0:
        sc_worker(&ctxs[0])
        return
    tids = <pthread_t*>malloc(<size_t>extra * sizeof(pthread_t))
    started = <int*>calloc(<size_t>extra, sizeof(int))
    if tids == NULL or started == NULL:
        free(tids)
        free(started)
        sc_worker(&ctxs[0])
        return
    sigfillset(&all_signals)
    pthread_sigmask(SIG_BLOCK, &all_signals, &old)  # workers inherit it: signals go to the caller
    for k in range(extra):
        started[k] = pthread_create(&tids[k], NULL, sc_worker, &ctxs[k + 1]) == 0
    pthread_sigmask(SIG_SETMASK, &old, NULL)
    sc_worker(&ctxs[0])
    for k in range(extra):
        if started[k]:
            pthread_join(tids[k], NULL)
    free(tids)
    free(started)


# ---------------------------------------------------------------------------------------------
# Conversion to Python objects (with the GIL, after the threads are done).

cdef inline void _sc_put(object t, Py_ssize_t i, object v):
    Py_INCREF(v)
    PyTuple_SET_ITEM(t, i, v)


cdef inline object _sc_str(const char* s, int64_t n):
    return PyUnicode_DecodeFSDefaultAndSize(s, <Py_ssize_t>n)


cdef object _sc_files(ScSnap* snap, list fresh):
    cdef list files = PyList_New(<Py_ssize_t>snap.files.n)
    cdef ScFile* f = <ScFile*>snap.files.head
    cdef Py_ssize_t i = 0
    cdef object t, r, size, mtime, dev, ino, check, detail
    while f != NULL:
        t = mlxk_tuple_alloc(_ScFileEntry, 13)
        _sc_put(t, 0, _sc_str(f.path, f.path_len))
        _sc_put(t, 1, True if f.is_link else False)
        _sc_put(t, 2, None if f.target_len < 0 else _sc_str(f.target, f.target_len))
        if f.exists:
            size = PyLong_FromLongLong(f.size)
            mtime = _sc_ns(f.mt_sec, f.mt_nsec)
            dev = mlxk_dev_to_py(f.dev)
            ino = PyLong_FromUnsignedLongLong(f.ino)
            check = PyLong_FromLongLong(f.check)
            detail = PyLong_FromUnsignedLongLong(f.detail)
            _sc_put(t, 3, True)
            _sc_put(t, 4, size)
            _sc_put(t, 5, mtime)
            _sc_put(t, 6, _sc_ns(f.lmt_sec, f.lmt_nsec))
            _sc_put(t, 7, dev)
            _sc_put(t, 8, ino)
            _sc_put(t, 9, check)
            _sc_put(t, 10, detail)
            _sc_put(t, 11, None if f.content_len < 0 else f.content[:f.content_len])
            _sc_put(t, 12, f.flags)
            if f.fresh:
                r = mlxk_tuple_alloc(_ScCheckResult, 7)
                _sc_put(r, 0, dev)
                _sc_put(r, 1, ino)
                _sc_put(r, 2, size)
                _sc_put(r, 3, mtime)
                _sc_put(r, 4, f.kind)
                _sc_put(r, 5, check)
                _sc_put(r, 6, detail)
                fresh.append(r)
        else:
            _sc_put(t, 3, False)
            _sc_put(t, 4, -1)
            _sc_put(t, 5, 0)
            _sc_put(t, 6, _sc_ns(f.lmt_sec, f.lmt_nsec))
            _sc_put(t, 7, 0)
            _sc_put(t, 8, 0)
            _sc_put(t, 9, f.check)
            _sc_put(t, 10, 0)
            _sc_put(t, 11, None)
            _sc_put(t, 12, 0)
        Py_INCREF(t)
        PyList_SET_ITEM(files, i, t)
        i += 1
        f = <ScFile*>f.link.next
    return files


cdef inline void _sc_list_put(list lst, Py_ssize_t i, object v):
    Py_INCREF(v)
    PyList_SET_ITEM(lst, i, v)


cdef object _sc_repo(object name, ScRepo* r, list fresh):
    cdef object t = mlxk_tuple_alloc(_ScRepoRecord, 6)
    cdef list refs, snaps, incomplete, locks
    cdef ScRef* ref
    cdef ScSnap* snap
    cdef ScIncomplete* inc
    cdef ScStr* s
    cdef object st
    cdef Py_ssize_t i
    _sc_put(t, 0, name)
    _sc_put(t, 1, r.err)
    if r.err:
        for i in range(2, 6):
            _sc_put(t, i, [])
        return t
    refs = PyList_New(<Py_ssize_t>r.refs.n)
    ref = <ScRef*>r.refs.head
    i = 0
    while ref != NULL:
        _sc_list_put(refs, i, (_sc_str(ref.name, ref.name_len),
                               PyUnicode_DecodeUTF8(ref.text, <Py_ssize_t>ref.text_len, "replace")))
        i += 1
        ref = <ScRef*>ref.link.next
    snaps = PyList_New(<Py_ssize_t>r.snaps.n)
    snap = <ScSnap*>r.snaps.head
    i = 0
    while snap != NULL:
        st = mlxk_tuple_alloc(_ScSnapshotRecord, 4)
        _sc_put(st, 0, _sc_str(snap.name, snap.name_len))
        _sc_put(st, 1, _sc_ns(snap.mt_sec, snap.mt_nsec))
        _sc_put(st, 2, snap.err)
        _sc_put(st, 3, _sc_files(snap, fresh))
        _sc_list_put(snaps, i, st)
        i += 1
        snap = <ScSnap*>snap.link.next
    incomplete = PyList_New(<Py_ssize_t>r.incomplete.n)
    inc = <ScIncomplete*>r.incomplete.head
    i = 0
    while inc != NULL:
        _sc_list_put(incomplete, i, (_sc_str(inc.name, inc.name_len), inc.size))
        i += 1
        inc = <ScIncomplete*>inc.link.next
    locks = PyList_New(<Py_ssize_t>r.locks.n)
    s = <ScStr*>r.locks.head
    i = 0
    while s != NULL:
        _sc_list_put(locks, i, _sc_str(s.s, s.len))
        i += 1
        s = <ScStr*>s.link.next
    _sc_put(t, 2, refs)
    _sc_put(t, 3, snaps)
    _sc_put(t, 4, incomplete)
    _sc_put(t, 5, locks)
    return t


# ---------------------------------------------------------------------------------------------
# Entry point.

def _sc_model_dirs(root):
    return sorted(name for name in _sc_os.listdir(root) if name.startswith("models--"))


cdef bytes _sc_encode(str path):
    cdef bytes b = PyUnicode_EncodeFSDefault(path)
    if b"\0" in b:
        raise ValueError("embedded null byte")
    return b


cdef int _sc_thread_count(object threads, Py_ssize_t njobs) except -1:
    cdef long n = 0
    try:
        n = threads if threads else 0
    except (TypeError, OverflowError):
        n = 0  # the twin ignores `threads`; so does this, beyond a usable count
    if n <= 0:
        n = sysconf(_SC_NPROCESSORS_ONLN)
    if n < 1:
        n = 1
    if n > SC_MAX_THREADS:
        n = SC_MAX_THREADS
    if n > njobs:
        n = njobs
    return <int>(n if n > 0 else 1)


cdef object _sc_scan(str root, list names, const unsigned char* memo, size_t memo_len, object threads):
    cdef bytes root_real = _sc_encode(_sc_os.path.realpath(root))
    cdef Py_ssize_t njobs = len(names), i
    cdef int nthreads = _sc_thread_count(threads, njobs), k
    cdef ScShared sh
    cdef ScCtx* ctxs = NULL
    cdef ScJob* jobs = NULL
    cdef size_t j
    cdef const unsigned char** order = NULL
    cdef list keep = []
    cdef list records, fresh
    cdef bytes bp, bl
    cdef str prefix, lock_prefix
    cdef bint oom = False
    cdef int gc_was_on
    memset(&sh, 0, sizeof(ScShared))
    try:
        jobs = <ScJob*>calloc(<size_t>njobs if njobs else 1, sizeof(ScJob))
        ctxs = <ScCtx*>calloc(<size_t>nthreads, sizeof(ScCtx))
        if jobs == NULL or ctxs == NULL:
            raise MemoryError()
        # the twin's os.path.join(root, name) and os.path.join(root, ".locks", name)
        prefix = _sc_os.path.join(root, "")
        lock_prefix = _sc_os.path.join(root, ".locks", "")
        for i in range(njobs):
            name = _sc_os.fspath(names[i])  # a str or os.PathLike name works in os.path.join
            if not isinstance(name, str):
                raise TypeError(f"repo names must be str, not {type(names[i]).__name__}")
            if (<str>name).startswith("/"):
                bp = _sc_encode(_sc_os.path.join(root, name))
                bl = _sc_encode(_sc_os.path.join(root, ".locks", name))
            else:
                bp = _sc_encode(prefix + <str>name)
                bl = _sc_encode(lock_prefix + <str>name)
            keep.append(bp)
            keep.append(bl)
            jobs[i].path = PyBytes_AS_STRING(bp)
            jobs[i].path_len = <size_t>PyBytes_GET_SIZE(bp)
            jobs[i].lock_path = PyBytes_AS_STRING(bl)
            jobs[i].lock_len = <size_t>PyBytes_GET_SIZE(bl)
        # the memo: sorted by (dev, ino, kind) as pack_records writes it; sort a copy otherwise
        sh.memo.base = memo
        sh.memo.n = memo_len // SC_MEMO_RECORD
        for j in range(1, sh.memo.n):
            if sc_memo_key_cmp(memo + j * SC_MEMO_RECORD, mlxk_le64(memo + (j - 1) * SC_MEMO_RECORD),
                               mlxk_le64(memo + (j - 1) * SC_MEMO_RECORD + 8),
                               mlxk_le32(memo + (j - 1) * SC_MEMO_RECORD + 32)) < 0:
                order = <const unsigned char**>malloc(sh.memo.n * sizeof(const unsigned char*))
                if order == NULL:
                    raise MemoryError()
                for j in range(sh.memo.n):
                    order[j] = memo + j * SC_MEMO_RECORD
                qsort(order, sh.memo.n, sizeof(const unsigned char*), sc_memo_record_cmp)
                sh.memo.order = order
                break
        sh.jobs = jobs
        sh.njobs = <size_t>njobs
        sh.root_real = PyBytes_AS_STRING(root_real)
        sh.root_real_len = <size_t>PyBytes_GET_SIZE(root_real)
        for k in range(nthreads):
            ctxs[k].sh = &sh
            ctxs[k].path_cap = <size_t>PATH_MAX + 8192
            ctxs[k].path = <char*>malloc(ctxs[k].path_cap)
            ctxs[k].link = <char*>malloc(<size_t>PATH_MAX + 1)
            ctxs[k].head_cap = max(SC_README_HEAD, max(<size_t>SC_REF_HEAD, SC_LFS_LEN))
            ctxs[k].head = <unsigned char*>malloc(ctxs[k].head_cap)
            ctxs[k].dirbuf_cap = SC_DIRBUF
            ctxs[k].dirbuf = <char*>malloc(ctxs[k].dirbuf_cap)
            ctxs[k].real = <char*>malloc(<size_t>PATH_MAX + 1)
            ctxs[k].blobs_fd = -1
            if ctxs[k].path == NULL or ctxs[k].link == NULL or ctxs[k].head == NULL or ctxs[k].dirbuf == NULL \
                    or ctxs[k].real == NULL:
                raise MemoryError()
        if njobs:
            with nogil:
                sc_run_threads(ctxs, nthreads)
        for k in range(nthreads):
            if ctxs[k].oom:
                oom = True
        if oom:
            raise MemoryError()
        records = PyList_New(njobs)
        fresh = []
        gc_was_on = PyGC_Disable()  # tens of thousands of tuples, no cycles: no collections meanwhile
        try:
            for i in range(njobs):
                _sc_list_put(records, i, _sc_repo(names[i], &jobs[i].out, fresh))
        finally:
            if gc_was_on:
                PyGC_Enable()
        return records, fresh
    finally:
        if ctxs != NULL:
            for k in range(nthreads):
                sc_arena_free(&ctxs[k].out)
                sc_arena_free(&ctxs[k].scratch)
                free(ctxs[k].path)
                free(ctxs[k].link)
                free(ctxs[k].head)
                free(ctxs[k].dirbuf)
                free(ctxs[k].real)
            free(ctxs)
        free(jobs)
        free(order)


def scan_cache(root, repos=None, memo=b"", threads=0):
    """Scan ``repos`` (folder names) under ``root``, or every ``models--*`` folder there.

    Returns ``(records, fresh)`` exactly like ``mlxk.core.twin.scan.scan_cache``: a ``RepoRecord`` per
    repo, sorted by folder name, and the ``CheckResult`` of every weight file the ``memo`` (see
    ``mlxk.core.memo_format``) could not answer. ``threads``: scan threads, 0 for one per CPU.
    """
    cdef Py_buffer view
    root = _sc_os.fspath(root)
    if not isinstance(root, str):
        raise TypeError("the native scan takes a str root")
    names = sorted(repos) if repos is not None else _sc_model_dirs(root)
    if _sc_sys.getfilesystemencoding() != "utf-8" or _sc_sys.getfilesystemencodeerrors() != "surrogateescape":
        # names sort as the twin's str only under utf-8 + surrogateescape: let the twin do it
        from mlxk.core.twin import scan as _scan_py
        return _scan_py.scan_cache(root, names, memo, threads)
    PyObject_GetBuffer(memo, &view, PyBUF_SIMPLE)
    try:
        return _sc_scan(root, names, <const unsigned char*>view.buf, <size_t>view.len, threads)
    finally:
        PyBuffer_Release(&view)
