/* attention.c - causal grouped-query attention over token subsets.
 *
 * Key j is visible to query i when kpos[j] <= qpos[i]; since positions are
 * ascending, query i sees the key prefix [0, m_i). The forward keeps only the
 * log-sum-exp per (batch, head, query); the backward recomputes the
 * probabilities p_ij = exp(s_ij - lse_i) from q, k and lse (flash-attention
 * style), so no nq x nk matrix outlives a call.
 *
 * Backward, with s_ij = scale q_i.k_j, dp_ij = dout_i.v_j and
 * D_i = sum_j p_ij dp_ij = dout_i.out_i:
 *   dv_j += p_ij dout_i;  ds_ij = p_ij (dp_ij - D_i);
 *   dq_i += scale ds_ij k_j;  dk_j += scale ds_ij q_i. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

/* m[i] = number of keys visible to query i (a moving pointer: both ascending) */
static int *visible_counts(const int *qpos, int nq, const int *kpos, int nk) {
    int *m = malloc(sizeof(int) * (nq > 0 ? nq : 1));
    int j = 0;
    for (int i = 0; i < nq; i++) {
        while (j < nk && kpos[j] <= qpos[i]) j++;
        m[i] = j;
    }
    return m;
}

/* One query against the keys [0, n) (rows kstride apart, starting at k0 / v0):
 * scores, max, exp, sum, weighted values, in that order. oi must be zeroed;
 * s holds n scores. Returns the log-sum-exp. The generator's decode step uses
 * the same function, so its logits match the full forward's bit for bit. */
real cpu_attend_query(real *oi, const real *qi, const real *k0, const real *v0, size_t kstride, int n, int hd,
                      real scale, real *s) {
    real mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const real *kj = k0 + (size_t)j * kstride;
        real d = 0;
        for (int x = 0; x < hd; x++) d += qi[x] * kj[x];
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    /* subtract the max so the largest weight is exp(0) = 1: no overflow */
    real z = 0;
    for (int j = 0; j < n; j++) { s[j] = R_EXP(s[j] - mx); z += s[j]; }
    real inv_z = 1 / z;
    for (int j = 0; j < n; j++) {
        const real *vj = v0 + (size_t)j * kstride;
        real p = s[j] * inv_z;
        for (int x = 0; x < hd; x++) oi[x] += p * vj[x];
    }
    return mx + R_LOG(z);
}

/* ldq: q's rows (tokens) are ldq values apart; ldkv: k's and v's (ops.h: q, k, v may be column windows of
 * one packed [rows, qd + 2 kvd] buffer, the q/k/v product's output) */
void cpu_attention_fwd_ld(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                          const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv) {
    int group = nh / nkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    int *m = visible_counts(qpos, nq, kpos, nk);
    /* threads only where the work pays for waking them (short prompts' prefill: see decode_ops.c) */
#pragma omp parallel if ((double)B * nh * nq * nk * hd > 262144)
    {
        real *s = malloc(sizeof(real) * (nk > 0 ? nk : 1));   /* one query's scores, then weights */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < nh; h++) {
                int kh = h / group;
                uint64_t seen = 0;
                for (int i = 0; i < nq; i++) {
                    size_t qo = (((size_t)b * nq + i) * nh + h) * hd;
                    const real *qi = q + ((size_t)b * nq + i) * ldq + (size_t)h * hd;
                    real *oi = out + qo;
                    real *lse_i = lse + ((size_t)b * nh + h) * nq + i;
                    for (int x = 0; x < hd; x++) oi[x] = 0;
                    if (m[i] == 0) { *lse_i = -INFINITY; continue; }   /* backward skips it */
                    seen += (uint64_t)m[i];
                    *lse_i = cpu_attend_query(oi, qi, k + (size_t)b * nk * ldkv + (size_t)kh * hd,
                                              v + (size_t)b * nk * ldkv + (size_t)kh * hd, (size_t)ldkv, m[i], hd,
                                              scale, s);
                }
                fh_count_macs(2ull * hd * seen);   /* q.k and p*v per visible key */
            }
        free(s);
    }
    free(m);
}

void cpu_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                       const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    cpu_attention_fwd_ld(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, nh * hd, nkv * hd);
}

/* the rows [0, rows) of x, cols wide, ld apart, zeroed */
static void zero_rows(real *x, size_t rows, int cols, int ld) {
    if (!x) return;
    if (cols == ld) { memset(x, 0, sizeof(real) * rows * cols); return; }
    for (size_t r = 0; r < rows; r++) memset(x + r * ld, 0, sizeof(real) * cols);
}

/* dq rows ldq apart (as q's), dk and dv ldkv apart (as k's and v's) */
void cpu_attention_bwd_ld(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                          const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq,
                          int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv) {
    int group = nh / nkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    /* every gradient is a sum over many (query, key) pairs: overwriting is accumulating into zeros */
    if (!acc) {
        zero_rows(dq, (size_t)B * nq, nh * hd, ldq);
        zero_rows(dk, (size_t)B * nk, nkv * hd, ldkv);
        zero_rows(dv, (size_t)B * nk, nkv * hd, ldkv);
    }
    int *m = visible_counts(qpos, nq, kpos, nk);
    /* dk/dv of a kv head sum over the query heads of its group: one task per
     * (batch, kv head) owns those rows, and the dq rows of its query heads. */
#pragma omp parallel for collapse(2) schedule(static) if ((double)B * nh * nq * nk * hd > 262144)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < nkv; kh++)
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int i = 0; i < nq; i++) {
                    if (m[i] == 0) continue;   /* output was a constant 0 */
                    size_t qo = (((size_t)b * nq + i) * nh + h) * hd;
                    size_t qs = ((size_t)b * nq + i) * ldq + (size_t)h * hd;   /* q's and dq's */
                    const real *qi = q + qs, *doi = dout + qo, *oi = out + qo;
                    real D = 0;
                    for (int x = 0; x < hd; x++) D += doi[x] * oi[x];
                    real L = lse[((size_t)b * nh + h) * nq + i];
                    for (int j = 0; j < m[i]; j++) {
                        size_t ko = ((size_t)b * nk + j) * ldkv + (size_t)kh * hd;
                        const real *kj = k + ko, *vj = v + ko;
                        real d = 0, dp = 0;
                        for (int x = 0; x < hd; x++) { d += qi[x] * kj[x]; dp += doi[x] * vj[x]; }
                        real p = R_EXP(d * scale - L);
                        real ds = p * (dp - D) * scale;
                        if (dv) for (int x = 0; x < hd; x++) dv[ko + x] += p * doi[x];
                        if (dq) for (int x = 0; x < hd; x++) dq[qs + x] += ds * kj[x];
                        if (dk) for (int x = 0; x < hd; x++) dk[ko + x] += ds * qi[x];
                    }
                }
    free(m);
}

void cpu_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                       const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq,
                       int nk, int nh, int nkv, int hd, int acc) {
    cpu_attention_bwd_ld(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, nh * hd,
                         nkv * hd);
}
