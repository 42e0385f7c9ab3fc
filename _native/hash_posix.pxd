# C declarations for the content hashing (_native/hashing.pxi) that Cython does not ship:
# OpenSSL's EVP digest calls, bound at run time with dlsym (no OpenSSL headers or -lcrypto at build
# time), a completion gate the calling thread can wait on with a timeout, and relaxed atomics.

from libc.stdint cimport uint64_t


cdef extern from "<errno.h>" nogil:
    enum: ECANCELED  # POSIX.1-2008; not in Cython's libc.errno


cdef extern from *:
    """
    #include <dlfcn.h>
    #include <errno.h>
    #include <fcntl.h>
    #include <pthread.h>
    #include <stdint.h>
    #include <string.h>
    #include <time.h>

    /* The few libcrypto entry points we call, as opaque pointers: an EVP_MD_CTX and an EVP_MD
       are both `void *` here, so no OpenSSL header is needed. OpenSSL >= 1.1 and LibreSSL >= 2.7
       export all of them under these names (1.0 has no EVP_MD_CTX_new: the twin takes over). */
    typedef struct {
        void *(*ctx_new)(void);
        void (*ctx_free)(void *ctx);
        int (*init_ex)(void *ctx, const void *md, void *engine);
        int (*update)(void *ctx, const void *data, size_t n);
        int (*final_ex)(void *ctx, unsigned char *out, unsigned int *n);
        const void *sha256;  /* EVP_sha256() */
        const void *sha1;    /* EVP_sha1() */
    } mlxk_evp;

    #define MLXK_EVP_SYM(h, field, name) (*(void **)(&(field)) = dlsym((h), (name)))

    /* 1 when every symbol resolved (and the two EVP_MD getters returned something). */
    static int mlxk_evp_bind(void *h, mlxk_evp *e) {
        const void *(*md_sha256)(void) = NULL;
        const void *(*md_sha1)(void) = NULL;
        memset(e, 0, sizeof(*e));
        if (!MLXK_EVP_SYM(h, e->ctx_new, "EVP_MD_CTX_new")) return 0;
        if (!MLXK_EVP_SYM(h, e->ctx_free, "EVP_MD_CTX_free")) return 0;
        if (!MLXK_EVP_SYM(h, e->init_ex, "EVP_DigestInit_ex")) return 0;
        if (!MLXK_EVP_SYM(h, e->update, "EVP_DigestUpdate")) return 0;
        if (!MLXK_EVP_SYM(h, e->final_ex, "EVP_DigestFinal_ex")) return 0;
        if (!MLXK_EVP_SYM(h, md_sha256, "EVP_sha256")) return 0;
        if (!MLXK_EVP_SYM(h, md_sha1, "EVP_sha1")) return 0;
        e->sha256 = md_sha256();
        e->sha1 = md_sha1();
        return e->sha256 != NULL && e->sha1 != NULL;
    }

    /* Relaxed atomics: the progress counter (read by other Python threads) and the stop flags. */
    static inline void mlxk_hash_add(uint64_t *counter, uint64_t n) {
        __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
    }
    static inline uint64_t mlxk_hash_load(const uint64_t *counter) {
        return __atomic_load_n(counter, __ATOMIC_RELAXED);
    }
    static inline int mlxk_hash_flag(const int *flag) {
        return __atomic_load_n(flag, __ATOMIC_RELAXED);
    }
    static inline void mlxk_hash_raise(int *flag) {
        __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
    }

    /* Read-ahead hint for a file read once from start to end (no-op where there is no fadvise). */
    static inline void mlxk_hash_sequential(int fd) {
    #if defined(__linux__) && defined(POSIX_FADV_SEQUENTIAL)
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    #else
        (void)fd;
    #endif
    }

    /* The calling thread waits for the workers with a timeout, to check for signals meanwhile. */
    typedef struct {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        int live;  /* workers that have not finished */
    } mlxk_hash_gate;

    static int mlxk_hash_gate_init(mlxk_hash_gate *g, int live) {
        g->live = live;
        if (pthread_mutex_init(&g->mu, NULL) != 0) return -1;
        if (pthread_cond_init(&g->cv, NULL) != 0) { pthread_mutex_destroy(&g->mu); return -1; }
        return 0;
    }
    static void mlxk_hash_gate_destroy(mlxk_hash_gate *g) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
    }
    static void mlxk_hash_gate_leave(mlxk_hash_gate *g) {
        pthread_mutex_lock(&g->mu);
        if (--g->live == 0) pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
    /* 1 when every worker has left, 0 when `ms` milliseconds passed first. */
    static int mlxk_hash_gate_wait(mlxk_hash_gate *g, long ms) {
        struct timespec until;
        int done;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec += 1; until.tv_nsec -= 1000000000L; }
        pthread_mutex_lock(&g->mu);
        while (g->live > 0) {
            if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT) break;
        }
        done = g->live == 0;
        pthread_mutex_unlock(&g->mu);
        return done;
    }
    """
    ctypedef struct mlxk_evp:
        void* (*ctx_new)() nogil
        void (*ctx_free)(void* ctx) nogil
        int (*init_ex)(void* ctx, const void* md, void* engine) nogil
        int (*update)(void* ctx, const void* data, size_t n) nogil
        int (*final_ex)(void* ctx, unsigned char* out, unsigned int* n) nogil
        const void* sha256
        const void* sha1
    int mlxk_evp_bind(void* handle, mlxk_evp* e) nogil
    void mlxk_hash_add(uint64_t* counter, uint64_t n) nogil
    uint64_t mlxk_hash_load(const uint64_t* counter) nogil
    int mlxk_hash_flag(const int* flag) nogil
    void mlxk_hash_raise(int* flag) nogil
    void mlxk_hash_sequential(int fd) nogil
    ctypedef struct mlxk_hash_gate:
        int live
    int mlxk_hash_gate_init(mlxk_hash_gate* g, int live) nogil
    void mlxk_hash_gate_destroy(mlxk_hash_gate* g) nogil
    void mlxk_hash_gate_leave(mlxk_hash_gate* g) nogil
    int mlxk_hash_gate_wait(mlxk_hash_gate* g, long ms) nogil

