/* rope.c - rotary position embedding, rotate-half convention (HF LLaMA):
 * for pair (i, i + hd/2) with frequency theta^(-2i/hd) at position p:
 *   out_i = x_i cos - x_{i+h} sin,  out_{i+h} = x_{i+h} cos + x_i sin.
 * The backward is the rotation by -angle. */
#include <math.h>
#include <stdlib.h>

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

/* attention_rope_fwd / _bwd (ops.h): the composition itself, on scratch
 * copies of the rotated q and k (and their gradients), so the CPU gives the
 * model's separate-pass results bit for bit. 1 (nothing done) if the scratch
 * cannot be had: the model then composes on its own buffers. */
int cpu_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                           const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta) {
    size_t nqd = (size_t)B * nq * nh * hd, nkd = (size_t)B * nk * nkv * hd;
    real *qr = malloc(sizeof(real) * (nqd + nkd + 1));
    if (!qr) return 1;
    real *kr = qr + nqd;
    cpu_rope_fwd(qr, q, qpos, B, nq, nh, hd, theta);
    cpu_rope_fwd(kr, k, kpos, B, nk, nkv, hd, theta);
    cpu_attention_fwd(out, lse, qr, kr, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    free(qr);
    return 0;
}

int cpu_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                           const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                           int nq, int nk, int nh, int nkv, int hd, real theta, int acc) {
    size_t nqd = (size_t)B * nq * nh * hd, nkd = (size_t)B * nk * nkv * hd;
    /* qr, kr, then the gradients of the rotated q, k: zeroed, so attention_bwd's
     * acc (which also governs dv) adds into zeros, the same bits as an overwrite */
    real *qr = calloc(2 * (nqd + nkd) + 1, sizeof(real));
    if (!qr) return 1;
    real *kr = qr + nqd, *dqr = kr + nkd, *dkr = dqr + nqd;
    cpu_rope_fwd(qr, q, qpos, B, nq, nh, hd, theta);
    cpu_rope_fwd(kr, k, kpos, B, nk, nkv, hd, theta);
    cpu_attention_bwd(dq ? dqr : NULL, dk ? dkr : NULL, dv, dout, out, lse, qr, kr, v, qpos, kpos, B, nq, nk, nh,
                      nkv, hd, acc);
    if (dq) cpu_rope_bwd(dq, dqr, qpos, B, nq, nh, hd, theta, acc);
    if (dk) cpu_rope_bwd(dk, dkr, kpos, B, nk, nkv, hd, theta, acc);
    free(qr);
    return 0;
}
