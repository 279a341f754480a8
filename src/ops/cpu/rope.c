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
static int rope_fwd_dense(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
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

static int rope_bwd_dense(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
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

/* dst rows (ldd apart) = src rows (lds apart), cols wide; acc: += */
static void rows_copy(real *dst, int ldd, const real *src, int lds, size_t rows, int cols, int acc) {
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            real x = src[r * lds + c];
            dst[r * ldd + c] = acc ? dst[r * ldd + c] + x : x;
        }
}

/* q, k, v (and dq, dk, dv) with row strides ldq / ldkv other than their widths
 * (ops.h: column windows of the packed q/k/v product's output): gathered into
 * dense scratch, the dense composition, the gradients added back (an
 * overwrite of the dense ones then dst = s, or dst + s: the same bits as the
 * separate passes on separate buffers, whose first writer overwrites) */
int cpu_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                           const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                           int ldkv) {
    int qd = nh * hd, kvd = nkv * hd;
    if (ldq == qd && ldkv == kvd) return rope_fwd_dense(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    size_t nqd = (size_t)B * nq * qd, nkd = (size_t)B * nk * kvd;
    real *qs = malloc(sizeof(real) * (nqd + 2 * nkd + 1));
    if (!qs) return 1;
    real *ks = qs + nqd, *vs = ks + nkd;
    rows_copy(qs, qd, q, ldq, (size_t)B * nq, qd, 0);
    rows_copy(ks, kvd, k, ldkv, (size_t)B * nk, kvd, 0);
    rows_copy(vs, kvd, v, ldkv, (size_t)B * nk, kvd, 0);
    int rc = rope_fwd_dense(out, lse, qs, ks, vs, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    free(qs);
    return rc;
}

int cpu_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                           const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                           int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv) {
    int qd = nh * hd, kvd = nkv * hd;
    if (ldq == qd && ldkv == kvd)
        return rope_bwd_dense(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta, acc);
    size_t nqd = (size_t)B * nq * qd, nkd = (size_t)B * nk * kvd;
    real *qs = malloc(sizeof(real) * 2 * (nqd + 2 * nkd) + 1);
    if (!qs) return 1;
    real *ks = qs + nqd, *vs = ks + nkd, *dqs = vs + nkd, *dks = dqs + nqd, *dvs = dks + nkd;
    rows_copy(qs, qd, q, ldq, (size_t)B * nq, qd, 0);
    rows_copy(ks, kvd, k, ldkv, (size_t)B * nk, kvd, 0);
    rows_copy(vs, kvd, v, ldkv, (size_t)B * nk, kvd, 0);
    int rc = rope_bwd_dense(dq ? dqs : NULL, dk ? dks : NULL, dv ? dvs : NULL, dout, out, lse, qs, ks, vs, qpos, kpos,
                            B, nq, nk, nh, nkv, hd, theta, FH_OVERWRITE);
    if (!rc) {
        if (dq) rows_copy(dq, ldq, dqs, qd, (size_t)B * nq, qd, acc);
        if (dk) rows_copy(dk, ldkv, dks, kvd, (size_t)B * nk, kvd, acc);
        if (dv) rows_copy(dv, ldkv, dvs, kvd, (size_t)B * nk, kvd, acc);
    }
    free(qs);
    return rc;
}
