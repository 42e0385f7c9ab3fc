# Content hashing of many files on all cores, C level (included by _native.pyx). The pure-Python
# twin is mlxk/core/twin/hashing.py; both return exactly the same results, in input order.
#
# Design: the paths are encoded (and checked) in Python, then, without the GIL, stat'ed for their
# sizes and ordered biggest first; worker pthreads take the next file from a shared atomic counter
# and hash it in 1 MiB reads (one buffer and one digest context per worker) with OpenSSL's EVP
# digests, which libcrypto picks for the CPU (SHA-NI, ARMv8 crypto extensions). libcrypto is the one
# Python's _hashlib already loaded (mlxk/core/libcrypto.py finds it), dlopen'ed and dlsym'ed on first
# use: no OpenSSL headers or -lcrypto at build time. Where none loads, HashJob runs the twin.
#
# Workers block all signals; the calling thread only waits (with a timeout, checking for signals
# in between), so Ctrl-C raises KeyboardInterrupt promptly: the workers stop at their next chunk
# and are joined before run() raises. Fidelity with the twin:
# - open(O_RDONLY | O_CLOEXEC | O_NONBLOCK), EINTR retried; errno 0 becomes EIO (`exc.errno or EIO`);
# - cancellation is checked before each file and after each read, before the bytes count;
# - a file is read to end of file; a total other than the fstat size at open is EAGAIN.

from libc.stdint cimport int64_t as hs_int64_t, uint64_t as hs_uint64_t
from libc.stdlib cimport calloc as hs_calloc, free as hs_free, malloc as hs_malloc, qsort as hs_qsort
from libc.stdio cimport snprintf as hs_snprintf
from libc.string cimport memset as hs_memset
from libc.errno cimport (
    EAGAIN as HS_EAGAIN, EINTR as HS_EINTR, EINVAL as HS_EINVAL, EIO as HS_EIO,
    EISDIR as HS_EISDIR, errno as hs_errno,
)
from posix.dlfcn cimport RTLD_LOCAL as HS_RTLD_LOCAL, RTLD_NOW as HS_RTLD_NOW, dlclose as hs_dlclose, dlopen as hs_dlopen
from posix.fcntl cimport AT_FDCWD as HS_AT_FDCWD
from posix.stat cimport S_ISDIR as HS_S_ISDIR, S_ISREG as HS_S_ISREG, fstat as hs_fstat
from posix.stat cimport stat as hs_stat, struct_stat as hs_struct_stat
from posix.unistd cimport close as hs_close, read as hs_read
from posix.signal cimport sigfillset as hs_sigfillset
from posix.types cimport sigset_t as hs_sigset_t
from cpython.bytes cimport PyBytes_AS_STRING as hs_bytes_as_string
from cpython.exc cimport PyErr_CheckSignals as hs_check_signals

from common cimport (
    MLXK_DEV_RAW as HS_DEV_RAW, MLXK_MTIME_NSEC as HS_MTIME_NSEC, MLXK_MTIME_SEC as HS_MTIME_SEC,
    SIG_BLOCK as HS_SIG_BLOCK, SIG_SETMASK as HS_SIG_SETMASK, mlxk_dev_to_py as hs_dev_to_py,
    mlxk_err as hs_err, mlxk_fetch_inc as hs_fetch_inc, mlxk_ns_to_py as _hs_ns,
    mlxk_open_file as hs_open_file, pthread_create as hs_pthread_create, pthread_join as hs_pthread_join,
    pthread_sigmask as hs_pthread_sigmask, pthread_t as hs_pthread_t,
)
from hash_posix cimport ECANCELED as HS_ECANCELED
from hash_posix cimport (
    mlxk_evp, mlxk_evp_bind, mlxk_hash_add, mlxk_hash_flag, mlxk_hash_gate,
    mlxk_hash_gate_destroy, mlxk_hash_gate_init, mlxk_hash_gate_leave, mlxk_hash_gate_wait, mlxk_hash_load,
    mlxk_hash_raise, mlxk_hash_sequential,
)

import os as _hs_os

# The algorithm ids and the bytes per read (MLXK_ALGO_*, MLXK_HASH_CHUNK) come from codes.pxi,
# generated from mlxk/core/codes.py as the twin's are imported from it.
cdef enum:
    HS_MAX_DIGEST = 32
    HS_MAX_THREADS = 256
    HS_WAIT_MS = 50            # the calling thread checks for signals this often

cdef object _hs_twin_module = None


cdef object _hs_twin():
    # mlxk.core.twin.hashing, imported on first use (it pulls in concurrent.futures: not for every CLI start)
    global _hs_twin_module
    if _hs_twin_module is None:
        from mlxk.core.twin import hashing as _hash_py
        _hs_twin_module = _hash_py
    return _hs_twin_module


# ---------------------------------------------------------------------------------------------
# libcrypto, loaded once (state 0: not tried yet, 1: loaded, -1: none works).

cdef int _hs_state = 0
cdef mlxk_evp _hs_evp
cdef object _hs_library = None


cdef bint _hs_selftest(mlxk_evp* e) noexcept nogil:
    # "abc" through both digests, against FIPS 180 test vectors: a lib that answers wrongly is not used
    cdef unsigned char out[HS_MAX_DIGEST]
    cdef unsigned int n = 0
    cdef void* ctx = e.ctx_new()
    cdef bint ok = False
    cdef const unsigned char* want256 = <const unsigned char*>b"\xba\x78\x16\xbf\x8f\x01\xcf\xea\x41\x41\x40\xde\x5d\xae\x22\x23\xb0\x03\x61\xa3\x96\x17\x7a\x9c\xb4\x10\xff\x61\xf2\x00\x15\xad"
    cdef const unsigned char* want1 = <const unsigned char*>b"\xa9\x99\x3e\x36\x47\x06\x81\x6a\xba\x3e\x25\x71\x78\x50\xc2\x6c\x9c\xd0\xd8\x9d"
    cdef int k
    if ctx == NULL:
        return False
    if (e.init_ex(ctx, e.sha256, NULL) == 1 and e.update(ctx, <const char*>b"abc", 3) == 1
            and e.final_ex(ctx, out, &n) == 1 and n == 32):
        ok = True
        for k in range(32):
            if out[k] != want256[k]:
                ok = False
    if ok and not (e.init_ex(ctx, e.sha1, NULL) == 1 and e.update(ctx, <const char*>b"abc", 3) == 1
                   and e.final_ex(ctx, out, &n) == 1 and n == 20):
        ok = False
    if ok:
        for k in range(20):
            if out[k] != want1[k]:
                ok = False
    e.ctx_free(ctx)
    return ok


cdef bint _hs_load() except -1:
    global _hs_state, _hs_evp, _hs_library
    cdef mlxk_evp e
    cdef void* handle
    cdef bytes name
    if _hs_state != 0:
        return _hs_state == 1
    from mlxk.core import libcrypto
    for candidate in libcrypto.libcrypto_candidates():
        name = _hs_os.fsencode(candidate)
        if b"\0" in name:
            continue
        handle = hs_dlopen(name, HS_RTLD_NOW | HS_RTLD_LOCAL)
        if handle == NULL:
            continue
        if mlxk_evp_bind(handle, &e) and _hs_selftest(&e):
            if _hs_state == 0:  # no Python call between this check and the stores: no other loader
                _hs_evp = e
                _hs_library = candidate
                _hs_state = 1
                return True  # the handle stays open for the life of the process
            hs_dlclose(handle)
            return _hs_state == 1
        hs_dlclose(handle)
    if _hs_state == 0:
        _hs_state = -1
    return _hs_state == 1


def native_hashing_available():
    """True when ``HashJob`` hashes in C with libcrypto; False when it runs the pure-Python twin."""
    return _hs_load()


def native_hashing_library():
    """The libcrypto ``HashJob`` loaded (path or soname), or None when it runs the twin."""
    _hs_load()
    return _hs_library


# ---------------------------------------------------------------------------------------------
# The work: one item per path, one context per worker thread.

cdef struct HsItem:
    const char* path
    int algo
    int err
    bint opened         # dev/ino/size/mtime are those of the opened file
    hs_uint64_t dev
    hs_uint64_t ino
    hs_int64_t size
    hs_int64_t mt_sec
    hs_int64_t mt_nsec
    unsigned int digest_len
    unsigned char digest[HS_MAX_DIGEST]


cdef struct HsOrder:
    hs_int64_t size     # the size hint: stat(), 0 where it fails
    size_t index


cdef struct HsShared:
    HsItem* items
    HsOrder* order
    size_t n
    size_t next         # the next position in `order`, taken atomically
    hs_uint64_t* done   # the job's bytes_done
    const int* cancelled  # the job's cancel() flag
    int stop            # this run is abandoned (an exception in the calling thread)
    mlxk_hash_gate gate


cdef struct HsCtx:
    HsShared* sh
    unsigned char* buf
    void* md_ctx


cdef int hs_order_cmp(const void* pa, const void* pb) noexcept nogil:
    # biggest first, then input order (sorted() on -size is stable)
    cdef const HsOrder* a = <const HsOrder*>pa
    cdef const HsOrder* b = <const HsOrder*>pb
    if a.size != b.size:
        return -1 if a.size > b.size else 1
    return (a.index > b.index) - (a.index < b.index)


cdef void hs_plan(HsShared* sh) noexcept nogil:
    cdef hs_struct_stat st
    cdef size_t i
    for i in range(sh.n):
        sh.order[i].index = i
        sh.order[i].size = <hs_int64_t>st.st_size if hs_stat(sh.items[i].path, &st) == 0 else 0
    hs_qsort(sh.order, sh.n, sizeof(HsOrder), hs_order_cmp)


cdef inline bint hs_stopped(HsShared* sh) noexcept nogil:
    return mlxk_hash_flag(sh.cancelled) or mlxk_hash_flag(&sh.stop)


cdef void hs_hash_one(HsCtx* c, HsItem* it) noexcept nogil:
    cdef HsShared* sh = c.sh
    cdef hs_struct_stat st
    cdef const void* md
    cdef char header[40]
    cdef int fd, hn
    cdef Py_ssize_t got
    cdef hs_int64_t total = 0
    if hs_stopped(sh):
        it.err = HS_ECANCELED
        return
    fd = hs_open_file(HS_AT_FDCWD, it.path)
    if fd < 0:
        it.err = hs_err(hs_errno)
        return
    if hs_fstat(fd, &st) != 0:
        it.err = hs_err(hs_errno)
        hs_close(fd)
        return
    it.opened = True
    it.dev = HS_DEV_RAW(&st)
    it.ino = <hs_uint64_t>st.st_ino
    it.size = <hs_int64_t>st.st_size
    it.mt_sec = HS_MTIME_SEC(&st)
    it.mt_nsec = HS_MTIME_NSEC(&st)
    if not HS_S_ISREG(st.st_mode):
        it.err = HS_EISDIR if HS_S_ISDIR(st.st_mode) else HS_EINVAL
        hs_close(fd)
        return
    mlxk_hash_sequential(fd)
    md = _hs_evp.sha256 if it.algo == MLXK_ALGO_SHA256 else _hs_evp.sha1
    if _hs_evp.init_ex(c.md_ctx, md, NULL) != 1:
        it.err = HS_EIO
        hs_close(fd)
        return
    if it.algo == MLXK_ALGO_GIT_SHA1:
        hn = hs_snprintf(header, sizeof(header), "blob %lld", <long long>it.size)
        if _hs_evp.update(c.md_ctx, header, <size_t>hn + 1) != 1:  # with the "\0"
            it.err = HS_EIO
            hs_close(fd)
            return
    while True:
        got = hs_read(fd, c.buf, MLXK_HASH_CHUNK)
        if got < 0:
            if hs_errno == HS_EINTR:
                continue
            it.err = hs_err(hs_errno)
            break
        if got == 0:
            break
        if hs_stopped(sh):
            it.err = HS_ECANCELED
            break
        if _hs_evp.update(c.md_ctx, c.buf, <size_t>got) != 1:
            it.err = HS_EIO
            break
        total += got
        mlxk_hash_add(sh.done, <hs_uint64_t>got)
    hs_close(fd)
    if it.err:
        return
    if total != it.size:  # changed while we read: the digest would describe neither version
        it.err = HS_EAGAIN
        return
    if _hs_evp.final_ex(c.md_ctx, it.digest, &it.digest_len) != 1 or it.digest_len > HS_MAX_DIGEST:
        it.err = HS_EIO


cdef void* hs_worker(void* arg) noexcept nogil:
    cdef HsCtx* c = <HsCtx*>arg
    cdef HsShared* sh = c.sh
    cdef size_t i
    while True:
        i = hs_fetch_inc(&sh.next)
        if i >= sh.n:
            break
        hs_hash_one(c, &sh.items[sh.order[i].index])
    mlxk_hash_gate_leave(&sh.gate)
    return NULL


cdef int hs_start(HsCtx* ctxs, int nthreads, hs_pthread_t* tids, int* started) noexcept nogil:
    # nthreads pthreads with every signal blocked (they inherit the mask): signals go to the caller
    cdef hs_sigset_t all_signals, old
    cdef int k, count = 0
    hs_sigfillset(&all_signals)
    hs_pthread_sigmask(HS_SIG_BLOCK, &all_signals, &old)
    for k in range(nthreads):
        started[k] = hs_pthread_create(&tids[k], NULL, hs_worker, &ctxs[k]) == 0
        if started[k]:
            count += 1
        else:
            mlxk_hash_gate_leave(&ctxs[0].sh.gate)  # never arrives
    hs_pthread_sigmask(HS_SIG_SETMASK, &old, NULL)
    return count


# ---------------------------------------------------------------------------------------------
# Python objects.

cdef object _hs_result(HsItem* it):
    cdef char hexbuf[2 * HS_MAX_DIGEST]
    cdef const char* digits = b"0123456789abcdef"
    cdef unsigned int k
    cdef object hexdigest = None
    if it.err == 0:
        for k in range(it.digest_len):
            hexbuf[2 * k] = digits[it.digest[k] >> 4]
            hexbuf[2 * k + 1] = digits[it.digest[k] & 15]
        hexdigest = hexbuf[:2 * it.digest_len].decode("ascii")
    if not it.opened:
        return (it.err, hexdigest, 0, 0, 0, 0)
    return (it.err, hexdigest, hs_dev_to_py(it.dev), it.ino, it.size, _hs_ns(it.mt_sec, it.mt_nsec))


cdef class HashJob:
    """Hashes ``paths`` (``algos[i]`` for ``paths[i]``) with ``jobs`` threads (0: one per core).

    The native twin of ``mlxk.core.twin.hashing.HashJob``: same constructor, ``run()``, ``bytes_done`` and
    ``cancel()``, same results. ``run()`` releases the GIL while C threads hash; ``bytes_done`` may
    be read and ``cancel()`` called from other Python threads meanwhile.
    """

    cdef list _paths
    cdef list _algos
    cdef object _jobs
    cdef hs_uint64_t _done
    cdef int _cancelled
    cdef object _fallback  # the twin's HashJob, where libcrypto could not be loaded
    cdef object __weakref__

    def __init__(self, paths, algos, jobs=0):
        twin = _hs_twin()
        if len(paths) != len(algos):
            raise ValueError("paths and algos differ in length")
        if any(a not in (MLXK_ALGO_SHA256, MLXK_ALGO_GIT_SHA1) for a in algos):
            raise ValueError("unknown hash algorithm")
        self._paths = list(paths)
        self._algos = [MLXK_ALGO_SHA256 if a == MLXK_ALGO_SHA256 else MLXK_ALGO_GIT_SHA1 for a in algos]
        self._jobs = jobs if jobs > 0 else twin.default_jobs()
        self._done = 0
        self._cancelled = 0
        self._fallback = None

    @property
    def bytes_done(self):
        cdef hs_uint64_t done = mlxk_hash_load(&self._done)
        if self._fallback is not None:
            return done + self._fallback.bytes_done
        return done

    def cancel(self):
        mlxk_hash_raise(&self._cancelled)
        if self._fallback is not None:
            self._fallback.cancel()

    def __reduce__(self):
        raise TypeError("cannot pickle a HashJob")

    def run(self):
        """``(errno, hexdigest or None, dev, ino, size, mtime_ns)`` per path, in input order."""
        if not self._paths:
            return []
        if not _hs_load():
            return self._run_twin()
        return self._run_native()

    def _run_twin(self):
        if self._fallback is None:
            self._fallback = _hs_twin().HashJob(self._paths, self._algos, self._jobs)
        if mlxk_hash_flag(&self._cancelled):
            self._fallback.cancel()
        return self._fallback.run()

    cdef list _run_native(self):
        cdef Py_ssize_t n = len(self._paths), i
        cdef list keep = [], results
        cdef bytes encoded
        cdef HsShared sh
        cdef HsItem* items = NULL
        cdef HsCtx* ctxs = NULL
        cdef hs_pthread_t* tids = NULL
        cdef int* started = NULL
        cdef int nthreads, k, running = 0
        cdef bint gate = False, finished
        hs_memset(&sh, 0, sizeof(HsShared))
        nthreads = <int>min(self._jobs, n, HS_MAX_THREADS)
        if nthreads < 1:
            nthreads = 1
        try:
            items = <HsItem*>hs_calloc(<size_t>n, sizeof(HsItem))
            sh.order = <HsOrder*>hs_malloc(<size_t>n * sizeof(HsOrder))
            ctxs = <HsCtx*>hs_calloc(<size_t>nthreads, sizeof(HsCtx))
            tids = <hs_pthread_t*>hs_calloc(<size_t>nthreads, sizeof(hs_pthread_t))
            started = <int*>hs_calloc(<size_t>nthreads, sizeof(int))
            if items == NULL or sh.order == NULL or ctxs == NULL or tids == NULL or started == NULL:
                raise MemoryError()
            for i in range(n):
                encoded = _hs_os.fsencode(self._paths[i])  # what os.open() would pass
                if b"\0" in encoded:
                    raise ValueError("embedded null byte")
                keep.append(encoded)
                items[i].path = hs_bytes_as_string(encoded)
                items[i].algo = self._algos[i]
            for k in range(nthreads):
                ctxs[k].sh = &sh
                ctxs[k].buf = <unsigned char*>hs_malloc(MLXK_HASH_CHUNK)
                ctxs[k].md_ctx = _hs_evp.ctx_new()
                if ctxs[k].buf == NULL or ctxs[k].md_ctx == NULL:
                    raise MemoryError()
            sh.items = items
            sh.n = <size_t>n
            sh.done = &self._done
            sh.cancelled = &self._cancelled
            if mlxk_hash_gate_init(&sh.gate, nthreads) != 0:
                raise MemoryError()
            gate = True
            with nogil:
                hs_plan(&sh)
                running = hs_start(ctxs, nthreads, tids, started)
                if running == 0:  # no thread could start: the calling thread does the work
                    sh.gate.live = 1
                    hs_worker(&ctxs[0])
            while True:
                with nogil:
                    finished = mlxk_hash_gate_wait(&sh.gate, HS_WAIT_MS)
                if finished:
                    break
                hs_check_signals()  # a KeyboardInterrupt (or a handler's exception) stops the run
            results = [None] * n
            for i in range(n):
                results[i] = _hs_result(&items[i])
            return results
        finally:
            mlxk_hash_raise(&sh.stop)  # after an exception, the workers stop at their next chunk
            if running:
                with nogil:
                    for k in range(nthreads):
                        if started[k]:
                            hs_pthread_join(tids[k], NULL)
            if gate:
                mlxk_hash_gate_destroy(&sh.gate)
            if ctxs != NULL:
                for k in range(nthreads):
                    hs_free(ctxs[k].buf)
                    if ctxs[k].md_ctx != NULL:
                        _hs_evp.ctx_free(ctxs[k].md_ctx)
            hs_free(ctxs)
            hs_free(tids)
            hs_free(started)
            hs_free(items)
            hs_free(sh.order)
