/* decode_ops.c - the generator's per-token helpers (ops.h, "decoding
 * helpers"): the strided row copy of the KV-cache append, the rolling conv
 * window, and one query per sequence over a KV cache. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

void cpu_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols) {
    for (int r = 0; r < rows; r++) memcpy(dst + (size_t)r * ldd, src + (size_t)r * lds, sizeof(real) * cols);
}

void cpu_conv1d_step(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K) {
#pragma omp parallel for if ((long)B * C * K > 65536)
    for (int bi = 0; bi < B; bi++) {
        real *wb = win + (size_t)bi * K * C;
        memmove(wb, wb + C, sizeof(real) * (size_t)(K - 1) * C);
        memcpy(wb + (size_t)(K - 1) * C, x + (size_t)bi * C, sizeof(real) * C);
        for (int c = 0; c < C; c++) {
            real acc = b ? b[c] : 0;
            for (int k = 0; k < K; k++) acc += w[(size_t)c * K + k] * wb[(size_t)k * C + c];
            out[(size_t)bi * C + c] = acc;
        }
    }
    fh_count_macs((uint64_t)B * C * K);
}

/* cpu_attention_fwd's per-query arithmetic (cpu_attend_query), so the
 * generator's logits match the full forward's. */
void cpu_attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh,
                          int nkv, int hd) {
    int group = nh / nkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    /* one query per (sequence, head): threads only where the work pays for waking them (bench --profile on
     * a busy 2-core host: 35 ms per call for a 16-key cache with an unconditional parallel region) */
#pragma omp parallel if ((long)B * nh * nk * hd > 65536)
    {
        real *s = malloc(sizeof(real) * (nk > 0 ? nk : 1));
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < nh; h++) {
                int kh = h / group;
                const real *qi = q + ((size_t)b * nh + h) * hd;
                real *oi = out + ((size_t)b * nh + h) * hd;
                for (int x = 0; x < hd; x++) oi[x] = 0;
                if (nk == 0) continue;
                cpu_attend_query(oi, qi, k + ((size_t)b * ld * nkv + kh) * hd, v + ((size_t)b * ld * nkv + kh) * hd,
                                 (size_t)nkv * hd, nk, hd, scale, s);
            }
        free(s);
    }
    fh_count_macs(2ull * hd * nk * B * nh);
}

/* the position from "backend memory", which is host memory here */
void cpu_copy_rows_at(real *dst, int ldd, const real *src, int rows, int cols, const int *pos) {
    cpu_copy_rows(dst + (size_t)pos[0] * cols, ldd, src, cols, rows, cols);
}

void cpu_attention_decode_at(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                             int nh, int nkv, int hd) {
    cpu_attention_decode(out, q, k, v, B, pos[0] + 1, ld, nh, nkv, hd);
}

/* ---- fused decode ops (ops.h): on the CPU a call costs no launch, so each is
 * its composition, run in the same order with the same ops: the same bits as
 * the unfused step (tests/test_generate.c checks the decode both ways). ---- */
void cpu_linear3_fwd(real *out0, real *out1, real *out2, const real *in, const real *w0, const real *w1,
                     const real *w2, int N, int IC, int OC0, int OC1, int OC2, const real *norm_w, real eps,
                     real *normed, real *rstd) {
    if (norm_w) {
        cpu_rmsnorm_fwd(normed, rstd, in, norm_w, N, IC, eps);
        in = normed;
    }
    if (OC0 > 0) cpu_linear_fwd(out0, in, w0, NULL, N, IC, OC0);
    if (OC1 > 0) cpu_linear_fwd(out1, in, w1, NULL, N, IC, OC1);
    if (OC2 > 0) cpu_linear_fwd(out2, in, w2, NULL, N, IC, OC2);
}

void cpu_linear_res_fwd(real *out, const real *in, const real *w, const real *res, int N, int IC, int OC) {
    cpu_linear_fwd(out, in, w, NULL, N, IC, OC);
    cpu_add(out, out, res, (size_t)N * OC);
}

void cpu_swiglu_linear_fwd(real *out, real *gs, real *us, const real *in, const real *wg, const real *wu, int N, int IC,
                           int OC, const real *norm_w, real eps, real *normed, real *rstd) {
    if (norm_w) {
        cpu_rmsnorm_fwd(normed, rstd, in, norm_w, N, IC, eps);
        in = normed;
    }
    cpu_linear_fwd(gs, in, wg, NULL, N, IC, OC);
    cpu_linear_fwd(us, in, wu, NULL, N, IC, OC);
    cpu_swiglu_fwd(out, gs, us, (size_t)N * OC);
}

void cpu_rope_append_at(real *qr, real *K, real *V, real *kr, const real *q, const real *k, const real *v,
                        const int *pos, const int *row, int B, int ld, int nh, int nkv, int hd, real theta) {
    int kvd = nkv * hd;
    cpu_rope_fwd(kr, k, pos, B, 1, nkv, hd, theta);
    cpu_copy_rows_at(K, ld, kr, B, kvd, row);
    cpu_copy_rows_at(V, ld, v, B, kvd, row);
    cpu_rope_fwd(qr, q, pos, B, 1, nh, hd, theta);
}
