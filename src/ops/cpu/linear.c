/* linear.c - out = in @ w^T + b through OpenBLAS (w is [OC, IC], PyTorch layout). */
#include "../../core/flopcount.h"
#include "blas.h"
#include "cpu_ops.h"

void cpu_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC) {
    if (N == 0) return;
    cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1, in, IC, w, IC, 0, out, OC);
    if (b) {
#pragma omp parallel for if ((long)N * OC > 65536)
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) out[(size_t)i * OC + o] += b[o];
    }
    fh_count_macs((uint64_t)N * IC * OC);
}

void cpu_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in,
                    const real *w, int N, int IC, int OC, int acc) {
    if (N == 0) return;
    /* din[N,IC] (+)= dout[N,OC] @ w[OC,IC];  dw[OC,IC] += dout^T @ in.
     * beta = 0 does not read din (BLAS: C need not be set when beta is 0) */
    if (din)
        cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1, dout, OC, w, IC, (acc & FH_ACC) ? 1 : 0,
                   din, IC);
    /* FH_DW_OVERWRITE (ops.h): dw = dout^T @ in, beta 0 */
    if (dw)
        cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1, dout, OC, in, IC,
                   (acc & FH_DW_OVERWRITE) ? 0 : 1, dw, IC);
    if (db) {
#pragma omp parallel for if ((long)N * OC > 65536)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int i = 0; i < N; i++) s += dout[(size_t)i * OC + o];
            db[o] += (real)s;
        }
    }
}
