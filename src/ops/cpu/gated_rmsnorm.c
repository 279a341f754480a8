/* gated_rmsnorm.c - Mamba-2's output norm: out = rmsnorm(y * silu(z)) * w. */
#include <math.h>

#include "cpu_ops.h"

static inline real sigmoid(real x) { return 1 / (1 + R_EXP(-x)); }

void cpu_gated_rmsnorm_fwd(real *out, real *rstd, const real *y, const real *z, const real *w, int N, int C,
                           real eps, int ldz) {
#pragma omp parallel for if (N > 64)
    for (int i = 0; i < N; i++) {
        const real *yi = y + (size_t)i * C, *zi = z + (size_t)i * ldz;
        double ss = 0;
        for (int c = 0; c < C; c++) {
            real g = yi[c] * zi[c] * sigmoid(zi[c]);
            ss += (double)g * g;
        }
        real r = (real)(1.0 / sqrt(ss / C + eps));
        rstd[i] = r;
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = yi[c] * zi[c] * sigmoid(zi[c]) * r * w[c];
    }
}

void cpu_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z,
                           const real *w, const real *rstd, int N, int C, int acc, int ldz) {
    /* g = y silu(z); out = g r w. dg = r (dout w - g r mean(dout w g r)) */
    for (int i = 0; i < N; i++) {
        const real *yi = y + (size_t)i * C, *zi = z + (size_t)i * ldz, *di = dout + (size_t)i * C;
        real r = rstd[i];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)di[c] * w[c] * yi[c] * zi[c] * sigmoid(zi[c]) * r;
        real mean = (real)(dot / C);
        for (int c = 0; c < C; c++) {
            real s = sigmoid(zi[c]), silu = zi[c] * s, g = yi[c] * silu;
            if (dw) dw[c] += di[c] * g * r;
            real dg = r * (di[c] * w[c] - g * r * mean);
            size_t k = (size_t)i * C + c;
            real gy = dg * silu, gz = dg * yi[c] * s * (1 + zi[c] * (1 - s));
            if (dy) dy[k] = acc ? dy[k] + gy : gy;
            size_t kz = (size_t)i * ldz + c;
            if (dz) dz[kz] = acc ? dz[kz] + gz : gz;
        }
    }
}
