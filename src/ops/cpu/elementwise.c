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
