# C declarations for the cache scan (_native/scan.pxi) that Cython does not ship:
# *at() calls, pthreads, and small portable helpers written in C (directory streams, mtimes).

from libc.stdint cimport int64_t, uint32_t, uint64_t
from posix.stat cimport struct_stat
from posix.types cimport sigset_t


cdef extern from "<unistd.h>" nogil:
    ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t bufsize)
    enum: _SC_NPROCESSORS_ONLN


cdef extern from "<limits.h>" nogil:
    enum: PATH_MAX


cdef extern from "<string.h>" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)


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
    #include <errno.h>
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

    /* Directory streams without the fstat/fcntl calls of fdopendir(): getdents64 on Linux
       (skipping d_ino == 0 and taking ENOENT as the end, as glibc's readdir does), readdir on a
       duplicate elsewhere. The caller keeps (and closes) its descriptor, usable for *at() calls. */
    #if defined(__linux__)
    #include <sys/syscall.h>
    #include <unistd.h>
    struct mlxk_dirent64 {
        uint64_t d_ino;
        int64_t d_off;
        unsigned short d_reclen;
        unsigned char d_type;
        char d_name[];
    };
    typedef struct { int fd; long len; long pos; char *buf; size_t cap; } mlxk_dir;
    static inline int mlxk_dir_open(mlxk_dir *d, int fd, char *buf, size_t cap) {
        d->fd = fd; d->len = 0; d->pos = 0; d->buf = buf; d->cap = cap;
        return 0;
    }
    static inline const char *mlxk_dir_next(mlxk_dir *d, int *err) {
        for (;;) {
            while (d->pos < d->len) {
                struct mlxk_dirent64 *e = (struct mlxk_dirent64 *)(d->buf + d->pos);
                d->pos += e->d_reclen;
                if (e->d_ino != 0) return e->d_name;
            }
            long r = syscall(SYS_getdents64, d->fd, d->buf, d->cap);
            if (r < 0) {
                if (errno == EINTR) continue;
                *err = errno == ENOENT ? 0 : errno;
                return NULL;
            }
            if (r == 0) { *err = 0; return NULL; }
            d->len = r; d->pos = 0;
        }
    }
    static inline void mlxk_dir_end(mlxk_dir *d) { (void)d; }
    #else
    #include <dirent.h>
    #include <fcntl.h>
    #include <unistd.h>
    typedef struct { int fd; DIR *dir; } mlxk_dir;
    static inline int mlxk_dir_open(mlxk_dir *d, int fd, char *buf, size_t cap) {
        int copy;
        (void)buf; (void)cap;
        d->fd = fd;
        copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (copy < 0) return errno ? errno : EIO;
        d->dir = fdopendir(copy);
        if (d->dir == NULL) { int e = errno; close(copy); return e ? e : EIO; }
        return 0;
    }
    static inline const char *mlxk_dir_next(mlxk_dir *d, int *err) {
        struct dirent *e;
        errno = 0;
        e = readdir(d->dir);
        if (e == NULL) { *err = errno; return NULL; }
        return e->d_name;
    }
    static inline void mlxk_dir_end(mlxk_dir *d) { closedir(d->dir); }
    #endif

    /* The next repo index for a scan thread. */
    static inline size_t mlxk_fetch_inc(size_t *counter) {
        return __atomic_fetch_add(counter, (size_t)1, __ATOMIC_RELAXED);
    }

    /* Little-endian loads (memo records), whatever the host order. */
    static inline uint64_t mlxk_le64(const unsigned char *p) {
        return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24)
             | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
    }
    static inline uint32_t mlxk_le32(const unsigned char *p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    }
    """
    int64_t MLXK_MTIME_SEC(const struct_stat* st) nogil
    int64_t MLXK_MTIME_NSEC(const struct_stat* st) nogil
    uint64_t MLXK_DEV_RAW(const struct_stat* st) nogil
    ctypedef struct mlxk_dir:
        int fd
    int mlxk_dir_open(mlxk_dir* d, int fd, char* buf, size_t cap) nogil
    const char* mlxk_dir_next(mlxk_dir* d, int* err) nogil
    void mlxk_dir_end(mlxk_dir* d) nogil
    size_t mlxk_fetch_inc(size_t* counter) nogil
    uint64_t mlxk_le64(const unsigned char* p) nogil
    uint32_t mlxk_le32(const unsigned char* p) nogil
