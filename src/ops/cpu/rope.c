/* rope.c - rotary position embedding, rotate-half convention (HF LLaMA):
 * for pair (i, i + hd/2) with frequency theta^(-2i/hd) at position p:
 *   out_i = x_i cos - x_{i+h} sin,  out_{i+h} = x_{i+h} cos + x_i sin.
 * The backward is the rotation by -angle. */
#include <math.h>

#include "cpu_ops.h"

static void rotate(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta,
                   double sign, int accumulate) {
    int half = hd / 2;
#pragma omp parallel for collapse(2) if ((long)B * n * nh * hd > 65536)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < n; t++) {
            for (int i = 0; i < half; i++) {
                double ang = pos[t] * pow((double)theta, -2.0 * i / hd);
                real c = (real)cos(ang), s = (real)(sign * sin(ang));
                for (int h = 0; h < nh; h++) {
                    size_t base = (((size_t)b * n + t) * nh + h) * hd;
                    real x0 = x[base + i], x1 = x[base + i + half];
                    real o0 = x0 * c - x1 * s, o1 = x1 * c + x0 * s;
                    if (accumulate) { out[base + i] += o0; out[base + i + half] += o1; }
                    else { out[base + i] = o0; out[base + i + half] = o1; }
                }
            }
            /* an odd head_dim leaves its last channel unrotated (config validation forbids it with RoPE) */
            if (hd % 2)
                for (int h = 0; h < nh; h++) {
                    size_t k = (((size_t)b * n + t) * nh + h) * hd + hd - 1;
                    out[k] = accumulate ? out[k] + x[k] : x[k];
                }
        }
}

void cpu_rope_fwd(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta) {
    rotate(out, x, pos, B, n, nh, hd, theta, 1.0, 0);
}

void cpu_rope_bwd(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta, int acc) {
    rotate(dx, dout, pos, B, n, nh, hd, theta, -1.0, acc);
}
