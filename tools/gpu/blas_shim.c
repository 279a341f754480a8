/* Minimal cblas_sgemm/dgemm for the GPU machine (no OpenBLAS there), used only by the CPU oracle
   inside the GPU tests. Accumulates in double so that the oracle's own rounding stays far below the
   fp32 test bound even for long sums (V = 50304 in the classifier test). */
#include <stddef.h>
#include <stdlib.h>
enum { RowMajor = 101, ColMajor = 102 }; enum { NoTrans = 111, Trans = 112 };
#define GEMM(name, T) \
void name(int order, int ta, int tb, int M, int N, int K, T alpha, const T *A, int lda, \
          const T *B, int ldb, T beta, T *C, int ldc) { \
    if (order == ColMajor) { name(RowMajor, tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc); return; } \
    _Pragma("omp parallel") { \
    double *acc = malloc(sizeof(double) * (N > 0 ? N : 1)); \
    _Pragma("omp for schedule(static)") \
    for (int i = 0; i < M; i++) { \
        T *c = C + (size_t)i * ldc; \
        for (int j = 0; j < N; j++) acc[j] = 0; \
        for (int k = 0; k < K; k++) { \
            double a = ta == NoTrans ? A[(size_t)i * lda + k] : A[(size_t)k * lda + i]; \
            if (a == 0) continue; \
            if (tb == NoTrans) { const T *b = B + (size_t)k * ldb; for (int j = 0; j < N; j++) acc[j] += a * b[j]; } \
            else { for (int j = 0; j < N; j++) acc[j] += a * B[(size_t)j * ldb + k]; } \
        } \
        for (int j = 0; j < N; j++) c[j] = (T)(alpha * acc[j] + (beta == 0 ? 0 : beta * (double)c[j])); \
    } \
    free(acc); } \
}
GEMM(cblas_sgemm, float)
GEMM(cblas_dgemm, double)
