/* elementwise.c - residual adds, gradient accumulation, SiLU and SwiGLU. */
#include "cpu_ops.h"

#include <math.h>

void cpu_add(real *out, const real *a, const real *b, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_accumulate(real *dst, const real *src, real alpha, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] += alpha * src[i];
}

static inline real sigmoid(real x) { return (real)1 / ((real)1 + R_EXP(-x)); }

void cpu_silu_fwd(real *out, const real *x, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = x[i] * sigmoid(x[i]);
}

void cpu_silu_bwd(real *dx, const real *dout, const real *x, size_t n, int acc) {
    /* d/dx [x s(x)] = s(x) (1 + x (1 - s(x))) */
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        real s = sigmoid(x[i]);
        real d = dout[i] * s * ((real)1 + x[i] * ((real)1 - s));
        dx[i] = acc ? dx[i] + d : d;
    }
}

void cpu_swiglu_fwd(real *out, const real *gate, const real *up, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void cpu_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n, int acc) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        real s = sigmoid(gate[i]);
        real silu = gate[i] * s;
        if (dup) {
            real d = dout[i] * silu;
            dup[i] = acc ? dup[i] + d : d;
        }
        if (dgate) {
            real d = dout[i] * up[i] * s * ((real)1 + gate[i] * ((real)1 - s));
            dgate[i] = acc ? dgate[i] + d : d;
        }
    }
}

/* swiglu_packed_fwd / _bwd (ops.h): gate and up side by side in one row
 * (gu [N, 2C], one product's output); the per-element expressions above, so
 * the same values bit for bit as swiglu_fwd / _bwd on separate buffers. */
void cpu_swiglu_packed_fwd(real *out, const real *gu, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int r = 0; r < N; r++) {
        const real *g = gu + (size_t)r * 2 * C, *u = g + C;
        real *o = out + (size_t)r * C;
        for (int c = 0; c < C; c++) o[c] = g[c] * sigmoid(g[c]) * u[c];
    }
}

void cpu_swiglu_packed_bwd(real *dgu, const real *dout, const real *gu, int N, int C, int acc) {
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int r = 0; r < N; r++) {
        const real *g = gu + (size_t)r * 2 * C, *u = g + C, *d = dout + (size_t)r * C;
        real *dg = dgu + (size_t)r * 2 * C, *du = dg + C;
        for (int c = 0; c < C; c++) {
            real s = sigmoid(g[c]);
            real silu = g[c] * s;
            real a = d[c] * silu;
            du[c] = acc ? du[c] + a : a;
            real b = d[c] * u[c] * s * ((real)1 + g[c] * ((real)1 - s));
            dg[c] = acc ? dg[c] + b : b;
        }
    }
}
