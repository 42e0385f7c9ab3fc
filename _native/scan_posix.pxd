# C declarations for the cache scan (_native/scan.pxi) that Cython does not ship: *at() calls and
# small portable helpers written in C (directory streams, little-endian loads). What it shares with
# the safetensors check and the hashing (reads, mtimes, st_dev, pthreads) is in common.pxd.

from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<unistd.h>" nogil:
    ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t bufsize)
    enum: _SC_NPROCESSORS_ONLN


cdef extern from "<limits.h>" nogil:
    enum: PATH_MAX


cdef extern from "<string.h>" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)


cdef extern from *:
    """
    #include <errno.h>
    #include <stdint.h>

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

    /* Little-endian loads (memo records), whatever the host order. */
    static inline uint64_t mlxk_le64(const unsigned char *p) {
        return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24)
             | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
    }
    static inline uint32_t mlxk_le32(const unsigned char *p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    }
    """
    ctypedef struct mlxk_dir:
        int fd
    int mlxk_dir_open(mlxk_dir* d, int fd, char* buf, size_t cap) nogil
    const char* mlxk_dir_next(mlxk_dir* d, int* err) nogil
    void mlxk_dir_end(mlxk_dir* d) nogil
    uint64_t mlxk_le64(const unsigned char* p) nogil
    uint32_t mlxk_le32(const unsigned char* p) nogil
