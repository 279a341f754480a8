/* test_zero_elim.c - the backward's activation-gradient buffers are not
 * zeroed: each buffer's first writer overwrites it (ops.h FH_OVERWRITE).
 * This must change no result, so the CPU backend is held to bit identity:
 *
 *  - ops: every backward op with FH_OVERWRITE into outputs full of NaN gives
 *    the values of FH_ACC into zeros (the old scheme), element for element;
 *  - steps: for every architecture, a training step (fused classifier, and
 *    the unfused forward + backward) gives the loss and every gradient of the
 *    reference mode (Model.zero_first: every buffer zeroed, every writer
 *    accumulating, the backward as it was), while the model under test
 *    starts its activation buffers as NaN (Model.poison_acts), so a buffer
 *    element that no op writes before it is read shows as a NaN. Two steps
 *    each, so the second runs on the first's stale buffers. The reference
 *    also runs Mamba's conv and SiLU as two ops (Model.unfused_conv_silu),
 *    the model under test as the fused conv1d_silu op: the same bits too;
 *    likewise rope + attention (Model.unfused_attn_rope) against the
 *    attention_rope ops, and FlowHN's gathers (Model.unfused_split) against
 *    the rmsnorm_gather ops.
 *
 * "Identical" is ==, so +0 and -0 are the same (x overwritten is -0 where
 * 0 + -0 was +0; no later value can tell them apart but a sign bit). With
 * more than two threads the CPU Mamba-1 scan sums its per-thread dB/dC copies
 * in a nondeterministic order, so the steps run on at most two (a two-term
 * sum does not depend on the order). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/tiny.h"
#include "test.h"

/* ---- helpers ---- */

static unsigned rng_state = 12345;
static real urand(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return (real)((rng_state >> 8) & 0xffffff) / (real)0x1000000;
}
static real *rnd(size_t n, double lo, double hi) {
    real *p = malloc(sizeof(real) * n);
    for (size_t i = 0; i < n; i++) p[i] = (real)(lo + (hi - lo) * urand());
    return p;
}
static real *filled(size_t n, real v) {
    real *p = malloc(sizeof(real) * n);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}
/* number of elements where a and b differ (== false, except NaN with NaN) */
static size_t n_differ(const real *a, const real *b, size_t n, size_t *first) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i]) && !(isnan(a[i]) && isnan(b[i]))) {
            if (!d && first) *first = i;
            d++;
        }
    return d;
}
#define SAME(name, a, b, n)                                                                                  \
    do {                                                                                                     \
        size_t f_ = 0, d_ = n_differ((a), (b), (n), &f_);                                                    \
        CHECK(d_ == 0, "%s: %zu of %zu differ, first [%zu] %.9g vs %.9g", name, d_, (size_t)(n), f_,       \
              (double)(a)[f_], (double)(b)[f_]);                                                             \
    } while (0)

/* ---- ops: FH_OVERWRITE over NaN == FH_ACC over zeros ---- */

static void ops_overwrite(void) {
    const real NaN = (real)NAN;
    {   /* linear: din [N, IC] from dout [N, OC] */
        int N = 37, IC = 29, OC = 23;
        real *dout = rnd((size_t)N * OC, -1, 1), *in = rnd((size_t)N * IC, -1, 1), *w = rnd((size_t)OC * IC, -1, 1);
        real *a = filled((size_t)N * IC, 0), *b = filled((size_t)N * IC, NaN);
        real *dwa = filled((size_t)OC * IC, 0), *dwb = filled((size_t)OC * IC, 0);
        cpu_linear_bwd(a, dwa, NULL, dout, in, w, N, IC, OC, FH_ACC);
        cpu_linear_bwd(b, dwb, NULL, dout, in, w, N, IC, OC, FH_OVERWRITE);
        SAME("linear din", a, b, (size_t)N * IC);
        SAME("linear dw (accumulates either way)", dwa, dwb, (size_t)OC * IC);
        free(dout); free(in); free(w); free(a); free(b); free(dwa); free(dwb);
    }
    {   /* the classifier's dw under FH_DW_OVERWRITE (the lazy head): its first row chunk overwrites NaN, the rest
         * add; dx under FH_OVERWRITE: each chunk its rows; the same bits as adding into zeros. N 600: three chunks
         * of CLASSIFIER_ROWS (256) */
        int N = 600, H = 11, V = 17;
        real *x = rnd((size_t)N * H, -1, 1), *w = rnd((size_t)V * H, -1, 1), *la = filled(N, 0), *lb = filled(N, 0);
        real *dxa = filled((size_t)N * H, 0), *dxb = filled((size_t)N * H, NaN);
        real *dwa = filled((size_t)V * H, 0), *dwb = filled((size_t)V * H, NaN);
        int *tg = malloc(sizeof(int) * N);
        for (int i = 0; i < N; i++) tg[i] = i % 5 == 2 ? -1 : (i * 7) % V;
        cpu_classifier(la, dxa, dwa, x, w, tg, (real)1 / N, N, H, V, FH_ACC);
        cpu_classifier(lb, dxb, dwb, x, w, tg, (real)1 / N, N, H, V, FH_OVERWRITE | FH_DW_OVERWRITE);
        SAME("classifier dw", dwa, dwb, (size_t)V * H);
        SAME("classifier dx", dxa, dxb, (size_t)N * H);
        SAME("classifier loss", la, lb, (size_t)N);
        free(x); free(w); free(la); free(lb); free(dxa); free(dxb); free(dwa); free(dwb); free(tg);
    }
    {   /* rmsnorm, gated rmsnorm */
        int N = 13, C = 19;
        size_t n = (size_t)N * C;
        real *x = rnd(n, -2, 2), *z = rnd(n, -2, 2), *w = rnd(C, 0.5, 1.5), *dout = rnd(n, -1, 1), *out = rnd(n, 0, 1);
        real *rstd = rnd(N, 0, 1), *dw = filled(C, 0);
        cpu_rmsnorm_fwd(out, rstd, x, w, N, C, (real)1e-5);
        real *a = filled(n, 0), *b = filled(n, NaN);
        cpu_rmsnorm_bwd(a, dw, dout, x, w, rstd, N, C, FH_ACC);
        cpu_rmsnorm_bwd(b, dw, dout, x, w, rstd, N, C, FH_OVERWRITE);
        SAME("rmsnorm dx", a, b, n);
        cpu_gated_rmsnorm_fwd(out, rstd, x, z, w, N, C, (real)1e-5, C);
        real *a2 = filled(n, 0), *b2 = filled(n, NaN);
        memset(a, 0, sizeof(real) * n);
        for (size_t i = 0; i < n; i++) b[i] = NaN;
        cpu_gated_rmsnorm_bwd(a, a2, dw, dout, x, z, w, rstd, N, C, FH_ACC, C);
        cpu_gated_rmsnorm_bwd(b, b2, dw, dout, x, z, w, rstd, N, C, FH_OVERWRITE, C);
        SAME("gated rmsnorm dy", a, b, n);
        SAME("gated rmsnorm dz", a2, b2, n);
        free(x); free(z); free(w); free(dout); free(out); free(rstd); free(dw); free(a); free(b); free(a2); free(b2);
    }
    {   /* silu, swiglu */
        size_t n = 1001;
        real *g = rnd(n, -4, 4), *u = rnd(n, -2, 2), *dout = rnd(n, -1, 1);
        real *a = filled(n, 0), *b = filled(n, NaN), *a2 = filled(n, 0), *b2 = filled(n, NaN);
        cpu_silu_bwd(a, dout, g, n, FH_ACC);
        cpu_silu_bwd(b, dout, g, n, FH_OVERWRITE);
        SAME("silu dx", a, b, n);
        memset(a, 0, sizeof(real) * n);
        for (size_t i = 0; i < n; i++) b[i] = NaN;
        cpu_swiglu_bwd(a, a2, dout, g, u, n, FH_ACC);
        cpu_swiglu_bwd(b, b2, dout, g, u, n, FH_OVERWRITE);
        SAME("swiglu dgate", a, b, n);
        SAME("swiglu dup", a2, b2, n);
        free(g); free(u); free(dout); free(a); free(b); free(a2); free(b2);
    }
    {   /* rope, odd positions */
        int B = 2, n = 7, nh = 3, hd = 8, pos[7] = {0, 2, 3, 5, 8, 9, 13};
        size_t k = (size_t)B * n * nh * hd;
        real *dout = rnd(k, -1, 1), *a = filled(k, 0), *b = filled(k, NaN);
        cpu_rope_bwd(a, dout, pos, B, n, nh, hd, 10000, FH_ACC);
        cpu_rope_bwd(b, dout, pos, B, n, nh, hd, 10000, FH_OVERWRITE);
        SAME("rope dx", a, b, k);
        free(dout); free(a); free(b);
    }
    {   /* attention over a subset, with a query that sees no key (its dq is 0) */
        int B = 2, nq = 5, nk = 6, nh = 4, nkv = 2, hd = 8;
        int qpos[5] = {0, 2, 4, 7, 9}, kpos[6] = {1, 2, 3, 5, 7, 8};
        size_t nqe = (size_t)B * nq * nh * hd, nke = (size_t)B * nk * nkv * hd;
        real *q = rnd(nqe, -1, 1), *kk = rnd(nke, -1, 1), *v = rnd(nke, -1, 1), *dout = rnd(nqe, -1, 1);
        real *out = filled(nqe, 0), *lse = filled((size_t)B * nh * nq, 0);
        cpu_attention_fwd(out, lse, q, kk, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
        real *dqa = filled(nqe, 0), *dka = filled(nke, 0), *dva = filled(nke, 0);
        real *dqb = filled(nqe, NaN), *dkb = filled(nke, NaN), *dvb = filled(nke, NaN);
        cpu_attention_bwd(dqa, dka, dva, dout, out, lse, q, kk, v, qpos, kpos, B, nq, nk, nh, nkv, hd, FH_ACC);
        cpu_attention_bwd(dqb, dkb, dvb, dout, out, lse, q, kk, v, qpos, kpos, B, nq, nk, nh, nkv, hd, FH_OVERWRITE);
        SAME("attention dq", dqa, dqb, nqe);
        SAME("attention dk", dka, dkb, nke);
        SAME("attention dv", dva, dvb, nke);
        free(q); free(kk); free(v); free(dout); free(out); free(lse);
        free(dqa); free(dka); free(dva); free(dqb); free(dkb); free(dvb);
    }
    {   /* conv1d */
        int B = 2, n = 11, C = 5, K = 4;
        size_t k = (size_t)B * n * C;
        real *x = rnd(k, -1, 1), *w = rnd((size_t)C * K, -1, 1), *dout = rnd(k, -1, 1);
        real *a = filled(k, 0), *b = filled(k, NaN), *dw = filled((size_t)C * K, 0), *db = filled(C, 0);
        cpu_conv1d_bwd(a, dw, db, dout, x, w, B, n, C, K, FH_ACC);
        cpu_conv1d_bwd(b, dw, db, dout, x, w, B, n, C, K, FH_OVERWRITE);
        SAME("conv1d dx", a, b, k);
        free(x); free(w); free(dout); free(a); free(b); free(dw); free(db);
    }
    {   /* conv1d + SiLU fused: overwrite as accumulate, and the composition's bits
         * (forward out; backward dx, dw, db) at n < K, n = K + 7, with and without bias */
        int B = 2, C = 5, K = 4, ns[2] = {3, 11};
        for (int i = 0; i < 4; i++) {
            int n = ns[i & 1], bias = i >> 1;
            size_t k = (size_t)B * n * C, kw = (size_t)C * K;
            real *x = rnd(k, -2, 2), *w = rnd(kw, -1, 1), *bv = bias ? rnd(C, -1, 1) : NULL, *dout = rnd(k, -1, 1);
            real *pre = filled(k, 0), *act = filled(k, 0), *fo = filled(k, NaN), *dpre = filled(k, NaN);
            real *a = filled(k, 0), *b = filled(k, NaN), *c = filled(k, NaN);
            real *dwa = filled(kw, 0), *dba = filled(C, 0), *dwb = filled(kw, 0), *dbb = filled(C, 0);
            cpu_conv1d_fwd(pre, x, w, bv, B, n, C, K);
            cpu_silu_fwd(act, pre, k);
            cpu_conv1d_silu_fwd(fo, x, w, bv, B, n, C, K, C);
            SAME("conv1d_silu out vs conv1d + silu", act, fo, k);
            cpu_silu_bwd(dpre, dout, pre, k, FH_OVERWRITE);
            cpu_conv1d_bwd(a, dwa, dba, dpre, x, w, B, n, C, K, FH_OVERWRITE);
            cpu_conv1d_silu_bwd(b, dwb, dbb, dout, x, w, bv, B, n, C, K, FH_OVERWRITE, C);
            SAME("conv1d_silu dx vs composition", a, b, k);
            SAME("conv1d_silu dw vs composition", dwa, dwb, kw);
            SAME("conv1d_silu db vs composition", dba, dbb, (size_t)C);
            for (size_t j = 0; j < k; j++) c[j] = 0;
            cpu_conv1d_silu_bwd(c, NULL, NULL, dout, x, w, bv, B, n, C, K, FH_ACC, C);
            SAME("conv1d_silu dx acc into 0 vs overwrite", c, b, k);
            free(x); free(w); free(bv); free(dout); free(pre); free(act); free(fo); free(dpre);
            free(a); free(b); free(c); free(dwa); free(dba); free(dwb); free(dbb);
        }
    }
    {   /* scatter_bwd: every row of din [B, n_sel, C] */
        int B = 2, T = 9, ns = 4, C = 3, ld = 8, idx[4] = {1, 2, 6, 8};
        real *dout = rnd((size_t)B * T * ld, -1, 1), *a = filled((size_t)B * ns * C, 0);
        real *b = filled((size_t)B * ns * C, NaN);
        cpu_scatter_bwd(a, dout, idx, B, T, ns, C, ld, 5, FH_ACC);
        cpu_scatter_bwd(b, dout, idx, B, T, ns, C, ld, 5, FH_OVERWRITE);
        SAME("scatter din", a, b, (size_t)B * ns * C);
        free(dout); free(a); free(b);
    }
    {   /* Mamba-1 scan: dx, ddt, dz [B, n, E]; dB, dC [B, n, S] (chunk 4 of n 10) */
        int B = 2, n = 10, E = 6, S = 4, L = 4, nc = (n + L - 1) / L;
        size_t ne = (size_t)B * n * E, ns = (size_t)B * n * S;
        real *x = rnd(ne, -1, 1), *dt = rnd(ne, -2, 1), *z = rnd(ne, -2, 2), *Bm = rnd(ns, -1, 1), *Cm = rnd(ns, -1, 1);
        real *Al = rnd((size_t)E * S, -1, 1), *D = rnd(E, -1, 1), *dy = rnd(ne, -1, 1), *y = filled(ne, 0);
        real *hs = filled((size_t)B * (nc + 1) * E * S, 0), *dA = filled((size_t)E * S, 0), *dD = filled(E, 0);
        cpu_selective_scan_fwd(y, hs, x, dt, Al, Bm, Cm, D, z, B, n, E, S, L);
        real *o[2][5];
        for (int r = 0; r < 2; r++) {
            real v = r ? NaN : 0;
            o[r][0] = filled(ne, v); o[r][1] = filled(ne, v); o[r][2] = filled(ns, v); o[r][3] = filled(ns, v);
            o[r][4] = filled(ne, v);
            cpu_selective_scan_bwd(o[r][0], o[r][1], dA, o[r][2], o[r][3], dD, o[r][4], dy, hs, x, dt, Al, Bm, Cm, D, z,
                                   B, n, E, S, L, r ? FH_OVERWRITE : FH_ACC);
        }
        const char *nm[5] = {"scan dx", "scan ddt", "scan dB", "scan dC", "scan dz"};
        for (int i = 0; i < 5; i++) SAME(nm[i], o[0][i], o[1][i], i == 2 || i == 3 ? ns : ne);
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < 5; i++) free(o[r][i]);
        free(x); free(dt); free(z); free(Bm); free(Cm); free(Al); free(D); free(dy); free(y); free(hs); free(dA);
        free(dD);
    }
    {   /* Mamba-2 SSD: dxbc [B, n, E + 2GN], ddt [B, n, nh] (chunk 4 of n 10) */
        int B = 2, n = 10, nh = 4, P = 3, G = 2, N = 5, L = 4, nc = (n + L - 1) / L, CX = nh * P + 2 * G * N;
        real *xbc = rnd((size_t)B * n * CX, -1, 1), *dt = rnd((size_t)B * n * nh, -2, 1), *dtb = rnd(nh, -1, 1);
        real *Al = rnd(nh, -1, 1), *D = rnd(nh, -1, 1), *dy = rnd((size_t)B * n * nh * P, -1, 1);
        real *y = filled((size_t)B * n * nh * P, 0), *st = filled((size_t)B * (nc + 1) * nh * P * N, 0);
        real *pg = filled(3 * nh, 0);
        cpu_ssd_fwd(y, st, xbc, dt, dtb, Al, D, B, n, nh, P, G, N, L);
        real *a = filled((size_t)B * n * CX, 0), *b = filled((size_t)B * n * CX, NaN);
        real *a2 = filled((size_t)B * n * nh, 0), *b2 = filled((size_t)B * n * nh, NaN);
        cpu_ssd_bwd(a, a2, pg, pg + nh, pg + 2 * nh, dy, st, xbc, dt, dtb, Al, D, B, n, nh, P, G, N, L, FH_ACC);
        cpu_ssd_bwd(b, b2, pg, pg + nh, pg + 2 * nh, dy, st, xbc, dt, dtb, Al, D, B, n, nh, P, G, N, L, FH_OVERWRITE);
        SAME("ssd dxbc", a, b, (size_t)B * n * CX);
        SAME("ssd ddt", a2, b2, (size_t)B * n * nh);
        free(xbc); free(dt); free(dtb); free(Al); free(D); free(dy); free(y); free(st); free(pg);
        free(a); free(b); free(a2); free(b2);
    }
}

/* ---- whole steps against the reference mode ---- */

/* 1: the reference runs the fused conv1d_silu op too, so that both models run Mamba-2's in_proj as one
 * packed product (model.c m2_packed needs the fused conv: the only conv op with a row stride); 0: the
 * reference composes conv1d + silu, and both models run the three separate in_proj products */
static int ref_conv_fused;

static int new_model(Model *m, const Config *c, int zero_first, int poison) {
    if (model_create(m, c, &cpu_ops) || model_init_params(m, 7)) return -1;
    m->zero_first = zero_first;
    m->poison_acts = poison;
    /* the reference also composes conv1d + silu where the model under test
     * runs the fused conv1d_silu ops (ops.h): they must give the same bits */
    m->unfused_conv_silu = zero_first && !ref_conv_fused;
    m->unfused_inproj = !ref_conv_fused;
    /* and rope + attention as separate ops where the model under test runs the
     * attention_rope ops (the CPU's composition: the same bits) */
    m->unfused_attn_rope = zero_first;
    /* and FlowHN's split as gather ops where the model under test runs them in
     * the branches' norms (ops.h rmsnorm_gather_*: the same bits) */
    m->unfused_split = zero_first;
    return 0;
}

static int one_step(Model *m, const int *tok, const int *tgt, int B, int T, int fused) {
    model_zero_grad(m);
    if (fused) return model_forward_backward(m, tok, tgt, B, T);
    return model_forward(m, tok, tgt, B, T) || model_backward(m) ? -1 : 0;
}

static void step_matches(const TinySpec *s, int B, int T, int fused) {
    Config c = tiny_config(s);
    if (T > c.max_seq_len) c.max_seq_len = T;
    int V = c.vocab_size;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    tiny_batch(tok, tgt, B, T, V, 3);
    Model ref, m;
    int ok = !new_model(&ref, &c, 1, 0) && !new_model(&m, &c, 0, 1);
    CHECK(ok, "%s: %s", s->name, fh_last_error());
    for (int step = 0; ok && step < 2; step++) {
        ok = !one_step(&ref, tok, tgt, B, T, fused) && !one_step(&m, tok, tgt, B, T, fused);
        CHECK(ok, "%s: %s", s->name, fh_last_error());
        if (!ok) break;
        CHECK(ref.loss == m.loss, "%s step %d: loss %.17g (reference) vs %.17g", s->name, step, ref.loss, m.loss);
        size_t first = 0, d = n_differ(ref.grads, m.grads, ref.layout.total, &first);
        const char *where = "";
        for (int t = 0; d && t < ref.layout.n; t++)
            if (first >= ref.layout.entries[t].offset) where = ref.layout.entries[t].name;
        CHECK(d == 0, "%s step %d (%s): %zu of %zu gradients differ, the first in %s: %.9g vs %.9g", s->name, step,
              fused ? "fused" : "unfused", d, ref.layout.total, where, (double)ref.grads[first],
              (double)m.grads[first]);
        /* the next step's batch: other tokens, same shape (the buffers are kept) */
        tiny_batch(tok, tgt, B, T, V, 4 + step);
    }
    if (ok) printf("  %-22s B=%d T=%d %s: loss %.6f, %zu gradients identical\n", s->name, B, T,
                   fused ? "fused  " : "unfused", m.loss, m.layout.total);
    model_free(&ref);
    model_free(&m);
    free(tok);
    free(tgt);
}

static void steps_every_architecture(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    for (int i = 0; i < n_tiny_specs; i++) {
        step_matches(&tiny_specs[i], 2, 24, 1);
        step_matches(&tiny_specs[i], 2, 24, 0);
    }
}

/* Mamba-2's packed in_proj (the default) in the reference mode: its gradient buffer's three writers
 * (gated norm, conv, the dt copy) cover every column (poisoned activations) and overwrite as the
 * reference accumulates; every architecture (those without Mamba-2 as before) */
static void steps_packed_inproj(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    ref_conv_fused = 1;
    for (int i = 0; i < n_tiny_specs; i++) {
        step_matches(&tiny_specs[i], 2, 24, 1);
        step_matches(&tiny_specs[i], 2, 24, 0);
        step_matches(&tiny_specs[i], 3, 77, 1);
    }
    ref_conv_fused = 0;
}

/* longer sequences: several Mamba chunks, FlowHN splits with many tokens, T not a multiple of anything */
static void steps_longer(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    for (int i = 0; i < n_tiny_specs; i++) step_matches(&tiny_specs[i], 3, 77, 1);
}

/* q/k/v and gate/up as one product each (Model.unfused_proj 0, the default) against three and two
 * (FLOWHN_FUSE_PROJ=0's path): the forward products give the same values element by element, the
 * backward's input gradients sum over K in one product instead of accumulating two or three, so the
 * loss may differ by rounding and the gradients by fp32 rounding: relative L2 of the whole gradient
 * < 1e-5, and each tensor's worst element < 1e-4 of that tensor's largest */
static void fused_close(int inproj) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    for (int i = 0; i < n_tiny_specs; i++) {
        const TinySpec *sp = &tiny_specs[i];
        Config c = tiny_config(sp);
        int B = 2, T = 24, V = c.vocab_size;
        int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
        tiny_batch(tok, tgt, B, T, V, 5);
        Model old, m;
        int ok = !new_model(&old, &c, 0, 0) && !new_model(&m, &c, 0, 1);
        if (inproj) {
            old.unfused_inproj = 1;
            m.unfused_inproj = 0;
        } else {
            old.unfused_proj = 1;
            m.unfused_proj = 0;
        }
        ok = ok && !one_step(&old, tok, tgt, B, T, 1) && !one_step(&m, tok, tgt, B, T, 1);
        CHECK(ok, "%s: %s", sp->name, fh_last_error());
        if (ok) {
            double num = 0, den = 0, worst = 0;
            const char *wname = "";
            for (int t = 0; t < m.layout.n; t++) {
                const ParamEntry *e = &m.layout.entries[t];
                double big = 0, d = 0;
                for (size_t j = e->offset; j < e->offset + e->numel; j++) {
                    double a = old.grads[j], b = m.grads[j];
                    big = fmax(big, fabs(a));
                    d = fmax(d, fabs(a - b));
                    num += (a - b) * (a - b);
                    den += a * a;
                }
                if (big > 0 && d / big > worst) { worst = d / big; wname = e->name; }
            }
            double rel = den > 0 ? sqrt(num / den) : sqrt(num);
            double dl = fabs(old.loss - m.loss) / fmax(1e-30, fabs(old.loss));
            printf("  %-22s loss %.9g vs %.9g (rel %.1e), gradients rel L2 %.1e, worst tensor %.1e (%s)\n", sp->name,
                   old.loss, m.loss, dl, rel, worst, wname);
            CHECK(dl < 1e-6, "%s: loss %.9g (three products) vs %.9g (one)", sp->name, old.loss, m.loss);
            CHECK(rel < 1e-5 && worst < 1e-4, "%s: gradients rel L2 %.3e, worst %.3e in %s", sp->name, rel, worst,
                  wname);
        }
        model_free(&old);
        model_free(&m);
        free(tok);
        free(tgt);
    }
}

static void fuse_proj_close(void) { fused_close(0); }
/* Mamba-2's in_proj as one product (Model.unfused_inproj 0, the default) against three (FLOWHN_FUSE_INPROJ=0):
 * the same bounds and reasons as fuse_proj_close (one dgrad over K = E + CX + nh instead of three accumulated);
 * every tiny architecture, those without a Mamba-2 mixer as a control (identical) */
static void fuse_inproj_close(void) { fused_close(1); }

/* copies the window [col0, col0 + C) of each of `rows` rows of a strided buffer (row stride ld) into a dense
 * [rows, C] one; returns whether every value outside the window still holds `fill` (NaN: still NaN), i.e. the
 * strided op wrote only its window */
static int unpack_window(real *dense, const real *strided, int rows, int C, int ld, int col0, real fill) {
    int untouched = 1;
    for (int i = 0; i < rows; i++) {
        memcpy(dense + (size_t)i * C, strided + (size_t)i * ld + col0, sizeof(real) * C);
        for (int c = 0; c < ld; c++)
            if (c < col0 || c >= col0 + C) {
                real v = strided[(size_t)i * ld + c];
                untouched &= fill != fill ? v != v : v == fill;
            }
    }
    return untouched;
}

/* the ops with a row stride (ldz, ldx: a column window of a packed buffer) give the dense op's bits, and
 * leave the window's other columns alone */
static void strided_ops_same(void) {
    int N = 13, C = 12, pad = 7, ld = C + pad, B = 2, n = 9, K = 4, R = B * n;
    real *y = rnd((size_t)(N * C), -1, 1), *w = rnd((size_t)(C), -1, 1), *dout = rnd((size_t)(N * C), -1, 1), *z = rnd((size_t)(N * C), -1, 1), *zs = filled((size_t)N * ld, NAN);
    for (int i = 0; i < N; i++) memcpy(zs + (size_t)i * ld + 3, z + (size_t)i * C, sizeof(real) * C);
    real *o1 = filled(N * C, 0), *o2 = filled(N * C, 0), *r1 = filled(N, 0), *r2 = filled(N, 0);
    cpu_gated_rmsnorm_fwd(o1, r1, y, z, w, N, C, (real)1e-5, C);
    cpu_gated_rmsnorm_fwd(o2, r2, y, zs + 3, w, N, C, (real)1e-5, ld);
    SAME("gated rmsnorm out, strided z", o1, o2, (size_t)N * C);
    SAME("gated rmsnorm rstd, strided z", r1, r2, (size_t)N);
    for (int acc = 0; acc < 2; acc++) {
        real *dy1 = filled(N * C, acc ? 0.5f : NAN), *dy2 = filled(N * C, acc ? 0.5f : NAN);
        real *dz1 = filled(N * C, acc ? 0.25f : NAN), *dzs = filled((size_t)N * ld, acc ? 0.25f : NAN);
        real *dw1 = filled(C, 0), *dw2 = filled(C, 0), *dz2 = filled(N * C, 0);
        cpu_gated_rmsnorm_bwd(dy1, dz1, dw1, dout, y, z, w, r1, N, C, acc ? FH_ACC : FH_OVERWRITE, C);
        cpu_gated_rmsnorm_bwd(dy2, dzs + 3, dw2, dout, y, zs + 3, w, r1, N, C, acc ? FH_ACC : FH_OVERWRITE, ld);
        int untouched = unpack_window(dz2, dzs, N, C, ld, 3, acc ? 0.25f : NAN);
        SAME("gated rmsnorm dy, strided z", dy1, dy2, (size_t)N * C);
        SAME("gated rmsnorm dz, strided", dz1, dz2, (size_t)N * C);
        SAME("gated rmsnorm dw, strided z", dw1, dw2, (size_t)C);
        CHECK(untouched, "gated rmsnorm bwd wrote outside dz's window (acc %d)", acc);
        free(dy1); free(dy2); free(dz1); free(dzs); free(dw1); free(dw2); free(dz2);
    }
    real *x = rnd((size_t)(R * C), -1, 1), *xs = filled((size_t)R * ld, NAN), *cw = rnd((size_t)(C * K), -1, 1), *cb = rnd((size_t)(C), -1, 1);
    real *dc = rnd((size_t)(R * C), -1, 1);
    for (int i = 0; i < R; i++) memcpy(xs + (size_t)i * ld + 5, x + (size_t)i * C, sizeof(real) * C);
    real *f1 = filled(R * C, 0), *f2 = filled(R * C, 0);
    cpu_conv1d_silu_fwd(f1, x, cw, cb, B, n, C, K, C);
    cpu_conv1d_silu_fwd(f2, xs + 5, cw, cb, B, n, C, K, ld);
    SAME("conv1d_silu out, strided x", f1, f2, (size_t)R * C);
    for (int acc = 0; acc < 2; acc++) {
        real *dx1 = filled(R * C, acc ? 0.5f : NAN), *dxs = filled((size_t)R * ld, acc ? 0.5f : NAN);
        real *dx2 = filled(R * C, 0), *dw1 = filled(C * K, 0), *dw2 = filled(C * K, 0);
        real *db1 = filled(C, 0), *db2 = filled(C, 0);
        cpu_conv1d_silu_bwd(dx1, dw1, db1, dc, x, cw, cb, B, n, C, K, acc ? FH_ACC : FH_OVERWRITE, C);
        cpu_conv1d_silu_bwd(dxs + 5, dw2, db2, dc, xs + 5, cw, cb, B, n, C, K, acc ? FH_ACC : FH_OVERWRITE, ld);
        int untouched = unpack_window(dx2, dxs, R, C, ld, 5, acc ? 0.5f : NAN);
        SAME("conv1d_silu dx, strided", dx1, dx2, (size_t)R * C);
        SAME("conv1d_silu dw, strided x", dw1, dw2, (size_t)C * K);
        SAME("conv1d_silu db, strided x", db1, db2, (size_t)C);
        CHECK(untouched, "conv1d_silu bwd wrote outside dx's window (acc %d)", acc);
        free(dx1); free(dxs); free(dx2); free(dw1); free(dw2); free(db1); free(db2);
    }
    free(y); free(w); free(dout); free(z); free(zs); free(o1); free(o2); free(r1); free(r2);
    free(x); free(xs); free(cw); free(cb); free(dc); free(f1); free(f2);
}

/* ---- the parameter gradients without the whole-buffer memset (model.h zero_grad_full) ----
 * The model under test zeroes only the non-product tensors and overwrites each product weight's gradient
 * with its first linear_bwd (ops.h FH_DW_OVERWRITE); the reference memsets everything and accumulates.
 * Before each accumulation the model under test's gradient buffer is filled with NaN, so an element of
 * a weight that nothing overwrote or zeroed shows. Accumulations of 1, 2 and 3 micro-batches (only the
 * first may overwrite), fused and unfused heads; the batches use 5 of the vocabulary's tokens (the
 * embedding's scatter leaves the other rows alone: they must be zeros, not NaN); T = 1 and 2 give FlowHN
 * splits where a branch gets one or no token (its weights then get no product: zeroed at the layer's end). */
static int grad_accum(Model *m, int n_micro, int B, int T, int V, int fused, int poison) {
    if (poison) {
        real *nan = filled(m->layout.total, (real)NAN);
        m->ops->from_host(m->grads, nan, sizeof(real) * m->layout.total);
        free(nan);
    }
    model_zero_grad(m);
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    int rc = 0;
    for (int a = 0; !rc && a < n_micro; a++) {
        tiny_batch(tok, tgt, B, T, V, 11 + a);
        for (int i = 0; i < B * T; i++) tok[i] %= 5;   /* most embedding rows untouched */
        rc = fused ? model_forward_backward(m, tok, tgt, B, T)
                   : (model_forward(m, tok, tgt, B, T) || model_backward(m) ? -1 : 0);
    }
    free(tok);
    free(tgt);
    return rc;
}
static void grads_no_memset(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    static const int shapes[][2] = {{2, 24}, {3, 17}, {2, 2}, {3, 1}};
    int n_lazy_seen = 0;
    for (int i = 0; i < n_tiny_specs; i++)
        for (int sh = 0; sh < 4; sh++)
            for (int n_micro = 1; n_micro <= 3; n_micro++) {
                const TinySpec *sp = &tiny_specs[i];
                int B = shapes[sh][0], T = shapes[sh][1], fused = (n_micro + sh) % 2;
                Config c = tiny_config(sp);
                Model ref, m;
                int ok = !model_create(&ref, &c, &cpu_ops) && !model_init_params(&ref, 7) &&
                         !model_create(&m, &c, &cpu_ops) && !model_init_params(&m, 7);
                CHECK(ok, "%s: %s", sp->name, fh_last_error());
                if (!ok) continue;
                ref.zero_grad_full = 1;
                CHECK(m.zero_grad_full == 0 && m.n_lazy > 0, "%s: %d product weights without the memset", sp->name,
                      m.n_lazy);
                n_lazy_seen += m.n_lazy;
                /* with 2 micro-batches twice: the second accumulation's model_zero_grad follows a finished one */
                for (int rep = 0; ok && rep < (n_micro == 2 ? 2 : 1); rep++) {
                    ok = !grad_accum(&ref, n_micro, B, T, c.vocab_size, fused, 0) &&
                         !grad_accum(&m, n_micro, B, T, c.vocab_size, fused, 1);
                    CHECK(ok, "%s B=%d T=%d: %s", sp->name, B, T, fh_last_error());
                    if (!ok) break;
                    size_t first = 0, d = n_differ(ref.grads, m.grads, ref.layout.total, &first);
                    const char *where = "";
                    for (int t = 0; d && t < ref.layout.n; t++)
                        if (first >= ref.layout.entries[t].offset) where = ref.layout.entries[t].name;
                    CHECK(d == 0, "%s B=%d T=%d micro-batches %d (%s): %zu of %zu gradients differ, the first in %s: "
                          "%.9g vs %.9g", sp->name, B, T, n_micro, fused ? "fused" : "unfused", d, ref.layout.total,
                          where, (double)ref.grads[first], (double)m.grads[first]);
                }
                model_free(&ref);
                model_free(&m);
            }
    printf("  %d architectures x 4 shapes x 1-3 micro-batches: gradients identical (%d product weights)\n",
           n_tiny_specs, n_lazy_seen);
    /* the switch: FLOWHN_ZERO_GRAD=1 keeps the whole memset */
    setenv("FLOWHN_ZERO_GRAD", "1", 1);
    Config c = tiny_config(&tiny_specs[0]);
    Model m;
    CHECK(!model_create(&m, &c, &cpu_ops), "%s", fh_last_error());
    CHECK(m.zero_grad_full == 1, "FLOWHN_ZERO_GRAD=1 sets zero_grad_full");
    model_free(&m);
    unsetenv("FLOWHN_ZERO_GRAD");
}

/* the head's gradient is lazy by default (written first by the classifier / head product; tied, the embedding's
 * scatter adds after it), not under FLOWHN_LAZY_HEAD=0; either way the same gradients as the whole memset
 * (grads_no_memset runs the default over every architecture, tied and untied) */
static void lazy_head_switch(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    int tied_seen = 0, untied_seen = 0;
    for (int i = 0; i < n_tiny_specs; i++) {
        const TinySpec *sp = &tiny_specs[i];
        Config c = tiny_config(sp);
        Model on, off, ref;
        setenv("FLOWHN_LAZY_HEAD", "0", 1);
        int ok = !model_create(&off, &c, &cpu_ops) && !model_init_params(&off, 7);
        unsetenv("FLOWHN_LAZY_HEAD");
        ok = ok && !model_create(&on, &c, &cpu_ops) && !model_init_params(&on, 7) && !model_create(&ref, &c, &cpu_ops) &&
             !model_init_params(&ref, 7);
        CHECK(ok, "%s: %s", sp->name, fh_last_error());
        if (!ok) continue;
        ref.zero_grad_full = 1;
        size_t head = on.layout.lm_head;
        int lazy_on = 0, lazy_off = 0;
        for (int j = 0; j < on.n_lazy; j++) lazy_on += on.lazy_off[j] == head;
        for (int j = 0; j < off.n_lazy; j++) lazy_off += off.lazy_off[j] == head;
        CHECK(on.lazy_head && lazy_on == 1 && !off.lazy_head && lazy_off == 0, "%s: head lazy %d by default, %d with "
              "FLOWHN_LAZY_HEAD=0", sp->name, lazy_on, lazy_off);
        if (head == on.layout.embed) tied_seen++;
        else untied_seen++;
        for (int fused = 0; ok && fused < 2; fused++) {
            ok = !grad_accum(&ref, 2, 2, 17, c.vocab_size, fused, 0) && !grad_accum(&on, 2, 2, 17, c.vocab_size, fused, 1) &&
                 !grad_accum(&off, 2, 2, 17, c.vocab_size, fused, 1);
            CHECK(ok, "%s: %s", sp->name, fh_last_error());
            size_t first = 0, d1 = ok ? n_differ(ref.grads, on.grads, ref.layout.total, &first) : 0;
            size_t d2 = ok ? n_differ(ref.grads, off.grads, ref.layout.total, &first) : 0;
            CHECK(d1 == 0 && d2 == 0, "%s (%s): %zu (lazy head) / %zu (switch off) gradients differ from the memset's",
                  sp->name, fused ? "fused" : "unfused", d1, d2);
        }
        model_free(&on);
        model_free(&off);
        model_free(&ref);
    }
    printf("  %d architectures (%d tied, %d untied heads): lazy head == switch off == whole memset, bitwise\n",
           n_tiny_specs, tied_seen, untied_seen);
}

/* model_zero_grad's runs in one ops->zero_runs call (the default where the backend has the op) against one
 * ops->zero a run (FLOWHN_ZERO_RUNS=0): over a poisoned buffer the same gradients bit for bit, every
 * architecture, 1-2 micro-batches; and the zeroing alone leaves exactly the runs zero */
static void zero_runs_switch(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    int n_runs_seen = 0;
    for (int i = 0; i < n_tiny_specs; i++)
        for (int n_micro = 1; n_micro <= 2; n_micro++) {
            const TinySpec *sp = &tiny_specs[i];
            Config c = tiny_config(sp);
            Model one, loop;
            setenv("FLOWHN_ZERO_RUNS", "0", 1);
            int ok = !model_create(&loop, &c, &cpu_ops) && !model_init_params(&loop, 7);
            unsetenv("FLOWHN_ZERO_RUNS");
            ok = ok && !model_create(&one, &c, &cpu_ops) && !model_init_params(&one, 7);
            CHECK(ok, "%s: %s", sp->name, fh_last_error());
            if (!ok) continue;
            CHECK(one.zrun_dev && one.n_zruns > 0 && !loop.zrun_dev, "%s: the table uploaded by default (%d runs), "
                  "not under FLOWHN_ZERO_RUNS=0", sp->name, one.n_zruns);
            n_runs_seen += one.n_zruns;
            /* the zeroing alone: the runs zero, the product weights still the poison */
            real *nan = filled(one.layout.total, (real)NAN);
            one.ops->from_host(one.grads, nan, sizeof(real) * one.layout.total);
            model_zero_grad(&one);
            size_t z = 0, r = 0, touched = 0;
            for (size_t k = 0; k < one.layout.total; k++) {
                int in_run = 0;
                for (int j = 0; j < one.n_zruns; j++)
                    if (k >= one.zrun[2 * j] && k < one.zrun[2 * j] + one.zrun[2 * j + 1]) in_run = 1;
                if (in_run) r++, z += one.grads[k] == 0 && !signbit(one.grads[k]);
                else touched += !isnan(one.grads[k]);
            }
            CHECK(z == r && r > 0 && !touched, "%s: %zu of %zu run values zeroed, %zu values outside touched",
                  sp->name, z, r, touched);
            free(nan);
            ok = !grad_accum(&loop, n_micro, 2, 17, c.vocab_size, n_micro % 2, 1) &&
                 !grad_accum(&one, n_micro, 2, 17, c.vocab_size, n_micro % 2, 1);
            CHECK(ok, "%s: %s", sp->name, fh_last_error());
            size_t first = 0, d = ok ? n_differ(loop.grads, one.grads, one.layout.total, &first) : 0;
            CHECK(d == 0, "%s micro-batches %d: %zu gradients differ (the first at %zu)", sp->name, n_micro, d, first);
            model_free(&one);
            model_free(&loop);
        }
    printf("  %d architectures x 1-2 micro-batches: one zero_runs == a zero a run, bitwise (%d runs)\n",
           n_tiny_specs, n_runs_seen);
}

/* the comparison can fail: one ulp in one gradient is found */
static void comparison_detects(void) {
    real a[3] = {1, -0.0f, 2}, b[3] = {1, 0, 2};
    CHECK(n_differ(a, b, 3, NULL) == 0, "-0 and +0 are the same value");
    b[2] = nextafterf(2, 3);
    CHECK(n_differ(a, b, 3, NULL) == 1, "one ulp is a difference");
}

int main(void) {
    RUN(ops_overwrite);
    RUN(comparison_detects);
    RUN(steps_every_architecture);
    RUN(steps_longer);
    RUN(steps_packed_inproj);
    RUN(fuse_proj_close);
    RUN(strided_ops_same);
    RUN(fuse_inproj_close);
    RUN(grads_no_memset);
    RUN(zero_runs_switch);
    RUN(lazy_head_switch);
    TEST_SUMMARY();
}
