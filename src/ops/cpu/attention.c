/* attention.c - causal grouped-query attention over token subsets.
 *
 * Keys are visible to a query when their position is not later than the
 * query's; since positions are ascending, query i sees the key prefix
 * [0, m_i). The forward keeps only the log-sum-exp per (query, head); the
 * backward recomputes the probabilities from q, k and lse (flash-attention
 * style), so no T x T matrix is ever stored. */
#include <math.h>
#include <stdlib.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

/* number of keys visible to each query: kpos[0..m) <= qpos[i] */
static void visible_counts(int *m, const int *qpos, int nq, const int *kpos, int nk) {
    int j = 0;
    for (int i = 0; i < nq; i++) {
        while (j < nk && kpos[j] <= qpos[i]) j++;
        m[i] = j;
    }
}

void cpu_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                       const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    int group = nh / nkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    int *m = malloc(sizeof(int) * (nq ? nq : 1));
    visible_counts(m, qpos, nq, kpos, nk);
    uint64_t seen = 0;
    for (int i = 0; i < nq; i++) seen += (uint64_t)m[i];
    fh_count_macs(2ull * hd * seen * B * nh);
#pragma omp parallel
    {
        real *s = malloc(sizeof(real) * (nk ? nk : 1));
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < nh; h++) {
                int kh = h / group;
                for (int i = 0; i < nq; i++) {
                    const real *qi = q + (((size_t)b * nq + i) * nh + h) * hd;
                    real *oi = out + (((size_t)b * nq + i) * nh + h) * hd;
                    real mx = -INFINITY;
                    for (int j = 0; j < m[i]; j++) {
                        const real *kj = k + (((size_t)b * nk + j) * nkv + kh) * hd;
                        real d = 0;
                        for (int x = 0; x < hd; x++) d += qi[x] * kj[x];
                        s[j] = d * scale;
                        if (s[j] > mx) mx = s[j];
                    }
                    real z = 0;
                    for (int j = 0; j < m[i]; j++) { s[j] = R_EXP(s[j] - mx); z += s[j]; }
                    for (int x = 0; x < hd; x++) oi[x] = 0;
                    for (int j = 0; j < m[i]; j++) {
                        const real *vj = v + (((size_t)b * nk + j) * nkv + kh) * hd;
                        real p = s[j] / z;
                        for (int x = 0; x < hd; x++) oi[x] += p * vj[x];
                    }
                    /* no visible key: output 0, and lse 0 is never used by the backward */
                    lse[((size_t)b * nh + h) * nq + i] = m[i] ? mx + R_LOG(z) : 0;
                }
            }
        free(s);
    }
    free(m);
}

void cpu_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                       const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq,
                       int nk, int nh, int nkv, int hd) {
    int group = nh / nkv;
    real scale = (real)(1.0 / sqrt((double)hd));
    int *m = malloc(sizeof(int) * (nq ? nq : 1));
    visible_counts(m, qpos, nq, kpos, nk);
    /* one task per (batch, kv head) owns dk/dv of that head: no races */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < nkv; kh++)
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int i = 0; i < nq; i++) {
                    size_t qo = (((size_t)b * nq + i) * nh + h) * hd;
                    const real *qi = q + qo, *doi = dout + qo, *oi = out + qo;
                    real D = 0;   /* sum_x dout * out = sum_j p_j dp_j */
                    for (int x = 0; x < hd; x++) D += doi[x] * oi[x];
                    real L = lse[((size_t)b * nh + h) * nq + i];
                    for (int j = 0; j < m[i]; j++) {
                        size_t ko = (((size_t)b * nk + j) * nkv + kh) * hd;
                        const real *kj = k + ko, *vj = v + ko;
                        real d = 0, dp = 0;
                        for (int x = 0; x < hd; x++) { d += qi[x] * kj[x]; dp += doi[x] * vj[x]; }
                        real p = R_EXP(d * scale - L);
                        real ds = p * (dp - D) * scale;
                        for (int x = 0; x < hd; x++) {
                            if (dv) dv[ko + x] += p * doi[x];
                            if (dq) dq[qo + x] += ds * kj[x];
                            if (dk) dk[ko + x] += ds * qi[x];
                        }
                    }
                }
    free(m);
}
