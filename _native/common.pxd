# What the cache scan (scan.pxi), the safetensors check (safetensors.pxi) and the content hashing
# (hashing.pxi) share, written once: opening and reading files as the twins' os.open / read do
# (EINTR retried, a missing errno taken as EIO), st_dev and st_mtime_ns as os.stat() reports them,
# and what their worker threads need (pthreads, the signal mask, an atomic work counter).

from libc.errno cimport EINTR, EIO, errno
from libc.stdint cimport int64_t, uint64_t
from posix.fcntl cimport O_CLOEXEC, O_NONBLOCK, O_RDONLY, openat
from posix.stat cimport struct_stat
from posix.types cimport off_t, sigset_t
from posix.unistd cimport pread, read
from cpython.long cimport PyLong_FromLongLong


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:
        pass

    ctypedef struct pthread_attr_t:
        pass

    int pthread_create(pthread_t* thread, const pthread_attr_t* attr,
                       void* (*start)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t thread, void** retval)


cdef extern from "<signal.h>" nogil:
    int pthread_sigmask(int how, const sigset_t* newmask, sigset_t* oldmask)
    enum: SIG_BLOCK
    enum: SIG_SETMASK


cdef extern from *:
    """
    #include <stdint.h>
    #include <sys/stat.h>

    /* Nanosecond mtimes: st_mtim (POSIX.1-2008, Linux) or st_mtimespec (macOS). */
    #if defined(__APPLE__)
    #  define MLXK_MTIME_SEC(p)  ((int64_t)(p)->st_mtimespec.tv_sec)
    #  define MLXK_MTIME_NSEC(p) ((int64_t)(p)->st_mtimespec.tv_nsec)
    #else
    #  define MLXK_MTIME_SEC(p)  ((int64_t)(p)->st_mtim.tv_sec)
    #  define MLXK_MTIME_NSEC(p) ((int64_t)(p)->st_mtim.tv_nsec)
    #endif

    /* st_dev as the 64 bits Python sees (a signed 32-bit dev_t on macOS sign-extends). */
    #define MLXK_DEV_RAW(p) ((uint64_t)(int64_t)(p)->st_dev)

    /* st_dev as os.stat() reports it: signed before CPython gh-89928 (3.12.5 / 3.13), then
       unsigned with NODEV as -1. `raw` is MLXK_DEV_RAW's value. */
    #if PY_VERSION_HEX >= 0x030C0500
    static PyObject *mlxk_dev_to_py(uint64_t raw) {
        if (raw == UINT64_MAX) return PyLong_FromLongLong(-1);
        return PyLong_FromUnsignedLongLong(raw);
    }
    static int mlxk_dev_nonnegative(uint64_t raw) { return raw != UINT64_MAX; }
    #else
    static PyObject *mlxk_dev_to_py(uint64_t raw) { return PyLong_FromLongLong((long long)raw); }
    static int mlxk_dev_nonnegative(uint64_t raw) { return (int64_t)raw >= 0; }
    #endif

    /* The next work item for a worker thread. */
    static inline size_t mlxk_fetch_inc(size_t *counter) {
        return __atomic_fetch_add(counter, (size_t)1, __ATOMIC_RELAXED);
    }
    """
    int64_t MLXK_MTIME_SEC(const struct_stat* st) nogil
    int64_t MLXK_MTIME_NSEC(const struct_stat* st) nogil
    uint64_t MLXK_DEV_RAW(const struct_stat* st) nogil
    object mlxk_dev_to_py(uint64_t raw)
    int mlxk_dev_nonnegative(uint64_t raw) nogil
    size_t mlxk_fetch_inc(size_t* counter) nogil


cdef inline bint mlxk_ns_fits(int64_t sec) noexcept nogil:
    # seconds whose nanosecond count surely fits in a signed 64-bit integer
    cdef int64_t limit = 9000000000
    return -limit < sec < limit


cdef inline object mlxk_ns_to_py(int64_t sec, int64_t nsec):
    # st_mtime_ns as Python computes it: exact beyond 64 bits too
    if mlxk_ns_fits(sec):
        return PyLong_FromLongLong(sec * 1000000000 + nsec)
    return PyLong_FromLongLong(sec) * 1000000000 + nsec


cdef inline int mlxk_err(int e) noexcept nogil:
    # `exc.errno or errno.EIO`: a call that failed without setting errno still failed
    return e if e != 0 else EIO


cdef inline int mlxk_open_file(int dfd, const char* path) noexcept nogil:
    # os.open(path, O_RDONLY) relative to dfd (AT_FDCWD: a plain path), EINTR retried. O_NONBLOCK:
    # a FIFO planted where a file belongs must not hang us (no effect on regular files).
    cdef int fd
    while True:
        fd = openat(dfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd >= 0 or errno != EINTR:
            return fd


cdef inline int mlxk_read_full(int fd, unsigned char* buf, size_t want, int64_t pos, bint short_is_end,
                               size_t* got) noexcept nogil:
    # Up to `want` bytes, fewer only at end of file: pread() from `pos`, or read() from the file
    # offset where pos < 0. 0 or an errno (EINTR retried); `got` says how many arrived either way.
    # short_is_end: a short read ends it (BufferedReader.read on a regular file, which Python
    # would confirm with one more read returning 0).
    cdef size_t total = 0
    cdef ssize_t r
    while total < want:
        if pos < 0:
            r = read(fd, buf + total, want - total)
        else:
            r = pread(fd, buf + total, want - total, <off_t>(pos + <int64_t>total))
        if r < 0:
            if errno == EINTR:
                continue
            got[0] = total
            return mlxk_err(errno)
        if r == 0:
            break
        total += <size_t>r
        if short_is_end and total < want:
            break
    got[0] = total
    return 0
