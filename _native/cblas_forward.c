/* The three CBLAS products MLX's Linux CPU build calls (cblas_sgemm, cblas_dgemm, cblas_cgemm: the
 * undefined cblas_* symbols of mlx-cpu's libmlx.so), under their standard names, each calling the
 * same function of scipy-openblas32's OpenBLAS, which exports its symbols with a "scipy_" prefix.
 *
 * This is a plain shared library, not a Python module: mlxk.core.blas loads libscipy_openblas.so
 * and then this file with RTLD_GLOBAL before mlx.core is imported, so the scipy_* references below
 * resolve against OpenBLAS, and libmlx's cblas_* references resolve here instead of in the
 * reference BLAS the wheel bundles. Nothing else in mlxk links against it: without OpenBLAS it is
 * simply never loaded.
 *
 * The "32" in scipy-openblas32 is the integer width: blasint is a 32-bit int, as in the reference
 * CBLAS that libmlx was built against. MLX's LAPACK calls are not forwarded (they keep the
 * reference LAPACK); only the matrix products decide the speed of a forward pass.
 */

typedef int blasint;

extern void scipy_cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                              float alpha, const float *a, blasint lda, const float *b, blasint ldb,
                              float beta, float *c, blasint ldc);
extern void scipy_cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                              double alpha, const double *a, blasint lda, const double *b, blasint ldb,
                              double beta, double *c, blasint ldc);
extern void scipy_cblas_cgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                              const void *alpha, const void *a, blasint lda, const void *b, blasint ldb,
                              const void *beta, void *c, blasint ldc);

#define EXPORT __attribute__((visibility("default")))

EXPORT void cblas_sgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, float alpha,
                        const float *a, blasint lda, const float *b, blasint ldb, float beta, float *c,
                        blasint ldc) {
    scipy_cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

EXPORT void cblas_dgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k, double alpha,
                        const double *a, blasint lda, const double *b, blasint ldb, double beta, double *c,
                        blasint ldc) {
    scipy_cblas_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

EXPORT void cblas_cgemm(int order, int trans_a, int trans_b, blasint m, blasint n, blasint k,
                        const void *alpha, const void *a, blasint lda, const void *b, blasint ldb,
                        const void *beta, void *c, blasint ldc) {
    scipy_cblas_cgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
