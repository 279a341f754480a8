/* rmsnorm.c - RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). */
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

/* one row: out = x * rstd * w; returns rstd */
static real rmsnorm_row(real *out, const real *x, const real *w, int C, real eps) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    real r = (real)(1.0 / sqrt(ss / C + eps));
    for (int c = 0; c < C; c++) out[c] = x[c] * r * w[c];
    return r;
}

void cpu_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps) {
#pragma omp parallel for if (N > 64)
    for (int i = 0; i < N; i++) rstd[i] = rmsnorm_row(out + (size_t)i * C, x + (size_t)i * C, w, C, eps);
}

/* r = a + b, then rmsnorm_fwd on r: the same arithmetic as cpu_add followed by
 * cpu_rmsnorm_fwd (the model's results are bit-identical with the fused op),
 * row by row. r may be a or b: element c is read before it is written. */
void cpu_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N, int C,
                         real eps) {
#pragma omp parallel for if (N > 64)
    for (int i = 0; i < N; i++) {
        const real *ai = a + (size_t)i * C, *bi = b + (size_t)i * C;
        real *ri = r + (size_t)i * C;
        for (int c = 0; c < C; c++) ri[c] = ai[c] + bi[c];
        rstd[i] = rmsnorm_row(out + (size_t)i * C, ri, w, C, eps);
    }
}

void cpu_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w,
                     const real *rstd, int N, int C, int acc) {
    /* With xhat = x r: dxhat = dout w; dx = r (dxhat - xhat mean(dxhat xhat)). */
    if (dx) {
#pragma omp parallel for if (N > 64)
        for (int i = 0; i < N; i++) {
            const real *xi = x + (size_t)i * C, *di = dout + (size_t)i * C;
            real r = rstd[i];
            double dot = 0;
            for (int c = 0; c < C; c++) dot += (double)di[c] * w[c] * xi[c] * r;
            real m = (real)(dot / C);
            real *dxi = dx + (size_t)i * C;
            for (int c = 0; c < C; c++) {
                real d = r * (di[c] * w[c] - xi[c] * r * m);
                dxi[c] = acc ? dxi[c] + d : d;
            }
        }
    }
    if (dw) {
        /* Reduce over rows per channel; channels are independent. */
#pragma omp parallel for if ((long)N * C > 65536)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int i = 0; i < N; i++) s += (double)dout[(size_t)i * C + c] * x[(size_t)i * C + c] * rstd[i];
            dw[c] += (real)s;
        }
    }
}

/* The split's gather and the branch's first norm (ops.h rmsnorm_gather_fwd):
 * each selected row copied, then normed from the copy as cpu_rmsnorm_fwd does. */
void cpu_rmsnorm_gather_fwd(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w, int B,
                            int T, int n_sel, int C, real eps) {
#pragma omp parallel for collapse(2) if ((long)B * n_sel > 64)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n_sel; j++) {
            size_t i = (size_t)b * n_sel + j;
            real *xi = xsel + i * C;
            memcpy(xi, x + ((size_t)b * T + idx[j]) * C, sizeof(real) * C);
            rstd[i] = rmsnorm_row(out + i * C, xi, w, C, eps);
        }
}

/* Its backward (ops.h rmsnorm_gather_bwd): dx as cpu_rmsnorm_bwd's, t = dres + dx
 * (what rmsnorm_bwd with FH_ACC left in dres), then dfull's row += t (what
 * gather_bwd added): the same operations in the same order. */
void cpu_rmsnorm_gather_bwd(real *dfull, real *dw, const real *dres, const real *dout, const real *x, const real *w,
                            const real *rstd, const int *idx, int B, int T, int n_sel, int C) {
    if (dfull) {
#pragma omp parallel for collapse(2) if ((long)B * n_sel > 64)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n_sel; j++) {
                size_t i = (size_t)b * n_sel + j;
                const real *xi = x + i * C, *di = dout + i * C, *ri = dres ? dres + i * C : NULL;
                real r = rstd[i];
                double dot = 0;
                for (int c = 0; c < C; c++) dot += (double)di[c] * w[c] * xi[c] * r;
                real m = (real)(dot / C);
                real *dfi = dfull + ((size_t)b * T + idx[j]) * C;
                for (int c = 0; c < C; c++) {
                    real d = r * (di[c] * w[c] - xi[c] * r * m);
                    real t = ri ? ri[c] + d : d;
                    dfi[c] += t;
                }
            }
    }
    if (dw) cpu_rmsnorm_bwd(NULL, dw, dout, x, w, rstd, B * n_sel, C, 0);   /* the rows' dw, as rmsnorm_bwd's */
}
