/* grad_basic_ops.c - finite-difference checks (double precision) of the
 * simple CPU ops: embedding, RMSNorm, the fused residual add + RMSNorm, linear, SiLU, SwiGLU, RoPE,
 * gather/scatter, the gather fused with RMSNorm and the fused softmax + cross-entropy.
 * Each op's scalar test loss is L = sum(out * R) for a fixed random R, so
 * dout = R. Bound: max relative error < 1e-6. */
#include <string.h>

#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-6
static Rng rng;

/* test buffers live until the end of main (freed there, for LeakSanitizer) */
static void *bufs[256];
static int n_bufs;
static real *keep(real *p) { bufs[n_bufs++] = p; return p; }
static real *rnd(size_t n, double lo, double hi) { return keep(uniform_buffer(&rng, n, lo, hi)); }
static real *zeros(size_t n) { return keep(calloc(n, sizeof(real))); }

/* ---- RMSNorm ---- */
enum { RN = 5, RC = 7 };
static real *rn_x, *rn_w, *rn_R;
static double rn_loss(void *u) {
    (void)u;
    real out[RN * RC], rstd[RN];
    cpu_rmsnorm_fwd(out, rstd, rn_x, rn_w, RN, RC, (real)1e-5);
    return dot(out, rn_R, RN * RC);
}
static void test_rmsnorm(void) {
    rn_x = rnd(RN * RC, -2, 2); rn_w = rnd(RC, 0.5, 1.5); rn_R = rnd(RN * RC, -1, 1);
    real out[RN * RC], rstd[RN], *dx = zeros(RN * RC), *dw = zeros(RC);
    cpu_rmsnorm_fwd(out, rstd, rn_x, rn_w, RN, RC, (real)1e-5);
    cpu_rmsnorm_bwd(dx, dw, rn_R, rn_x, rn_w, rstd, RN, RC, FH_ACC);
    CHECK(gradcheck("rmsnorm dx", rn_loss, NULL, rn_x, dx, RN * RC, 100, 1e-6) < BOUND, "dx");
    CHECK(gradcheck("rmsnorm dw", rn_loss, NULL, rn_w, dw, RC, 100, 1e-6) < BOUND, "dw");
    /* forward against the definition */
    double ss = 0;
    for (int c = 0; c < RC; c++) ss += rn_x[c] * rn_x[c];
    CHECK(fabs(out[2] - rn_x[2] / sqrt(ss / RC + 1e-5) * rn_w[2]) < 1e-12, "forward value");
}

/* ---- residual add + RMSNorm: r = a + b, out = rmsnorm(r) w ----
 * The loss reads both outputs, L = sum(out R) + sum(r S), so the gradient at
 * a (and at b) is S + rmsnorm_bwd(R): the model's backward, which starts from
 * the residual's share S and adds the norm's with FH_ACC (model.c mlp_bwd). */
static real *an_a, *an_b, *an_w, *an_R, *an_S;
static double an_loss(void *u) {
    (void)u;
    real r[RN * RC], out[RN * RC], rstd[RN];
    cpu_add_rmsnorm_fwd(r, out, rstd, an_a, an_b, an_w, RN, RC, (real)1e-5);
    return dot(out, an_R, RN * RC) + dot(r, an_S, RN * RC);
}
static void test_add_rmsnorm(void) {
    an_a = rnd(RN * RC, -2, 2); an_b = rnd(RN * RC, -1, 1); an_w = rnd(RC, 0.5, 1.5);
    an_R = rnd(RN * RC, -1, 1); an_S = rnd(RN * RC, -1, 1);
    real r[RN * RC], out[RN * RC], rstd[RN], *d = zeros(RN * RC), *dw = zeros(RC);
    cpu_add_rmsnorm_fwd(r, out, rstd, an_a, an_b, an_w, RN, RC, (real)1e-5);
    memcpy(d, an_S, sizeof(real) * RN * RC);
    cpu_rmsnorm_bwd(d, dw, an_R, r, an_w, rstd, RN, RC, FH_ACC);
    CHECK(gradcheck("add_rmsnorm da", an_loss, NULL, an_a, d, RN * RC, 100, 1e-6) < BOUND, "da");
    CHECK(gradcheck("add_rmsnorm db", an_loss, NULL, an_b, d, RN * RC, 100, 1e-6) < BOUND, "db");
    CHECK(gradcheck("add_rmsnorm dw", an_loss, NULL, an_w, dw, RC, 100, 1e-6) < BOUND, "dw");
    /* the same bits as add then rmsnorm_fwd, also in place (r = a, r = b) */
    real r2[RN * RC], out2[RN * RC], rstd2[RN], ip[RN * RC], out3[RN * RC], rstd3[RN];
    cpu_add(r2, an_a, an_b, RN * RC);
    cpu_rmsnorm_fwd(out2, rstd2, r2, an_w, RN, RC, (real)1e-5);
    CHECK(!memcmp(r, r2, sizeof r) && !memcmp(out, out2, sizeof out) && !memcmp(rstd, rstd2, sizeof rstd),
          "fused == add + rmsnorm_fwd, bit for bit");
    memcpy(ip, an_a, sizeof ip);
    cpu_add_rmsnorm_fwd(ip, out3, rstd3, ip, an_b, an_w, RN, RC, (real)1e-5);
    CHECK(!memcmp(ip, r, sizeof ip) && !memcmp(out3, out, sizeof out), "in place, r = a");
    memcpy(ip, an_b, sizeof ip);
    cpu_add_rmsnorm_fwd(ip, out3, rstd3, an_a, ip, an_w, RN, RC, (real)1e-5);
    CHECK(!memcmp(ip, r, sizeof ip) && !memcmp(out3, out, sizeof out), "in place, r = b");
}

/* ---- linear ---- */
enum { LN = 4, LI = 6, LO = 5 };
static real *l_in, *l_w, *l_b, *l_R;
static double lin_loss(void *u) {
    (void)u;
    real out[LN * LO];
    cpu_linear_fwd(out, l_in, l_w, l_b, LN, LI, LO);
    return dot(out, l_R, LN * LO);
}
static void test_linear(void) {
    l_in = rnd(LN * LI, -1, 1); l_w = rnd(LO * LI, -1, 1); l_b = rnd(LO, -1, 1); l_R = rnd(LN * LO, -1, 1);
    real out[LN * LO], *din = zeros(LN * LI), *dw = zeros(LO * LI), *db = zeros(LO);
    cpu_linear_fwd(out, l_in, l_w, l_b, LN, LI, LO);
    double ref = l_b[3];
    for (int i = 0; i < LI; i++) ref += l_in[2 * LI + i] * l_w[3 * LI + i];
    CHECK(fabs(out[2 * LO + 3] - ref) < 1e-12, "forward %g vs %g", out[2 * LO + 3], ref);
    cpu_linear_bwd(din, dw, db, l_R, l_in, l_w, LN, LI, LO, FH_ACC);
    CHECK(gradcheck("linear din", lin_loss, NULL, l_in, din, LN * LI, 100, 1e-6) < BOUND, "din");
    CHECK(gradcheck("linear dw", lin_loss, NULL, l_w, dw, LO * LI, 100, 1e-6) < BOUND, "dw");
    CHECK(gradcheck("linear db", lin_loss, NULL, l_b, db, LO, 100, 1e-6) < BOUND, "db");
    /* accumulation: a second backward doubles the gradient */
    real dw0 = dw[7];
    cpu_linear_bwd(NULL, dw, NULL, l_R, l_in, l_w, LN, LI, LO, FH_ACC);
    CHECK(fabs(dw[7] - 2 * dw0) < 1e-12, "backward accumulates");
}

/* ---- SiLU and SwiGLU ---- */
enum { SN = 9 };
static real *s_g, *s_u, *s_R;
static double silu_loss(void *u) { (void)u; real o[SN]; cpu_silu_fwd(o, s_g, SN); return dot(o, s_R, SN); }
static double swiglu_loss(void *u) { (void)u; real o[SN]; cpu_swiglu_fwd(o, s_g, s_u, SN); return dot(o, s_R, SN); }
static void test_activations(void) {
    s_g = rnd(SN, -4, 4); s_u = rnd(SN, -2, 2); s_R = rnd(SN, -1, 1);
    real *dx = zeros(SN), *dg = zeros(SN), *du = zeros(SN);
    cpu_silu_bwd(dx, s_R, s_g, SN, FH_ACC);
    CHECK(gradcheck("silu dx", silu_loss, NULL, s_g, dx, SN, 100, 1e-6) < BOUND, "silu");
    cpu_swiglu_bwd(dg, du, s_R, s_g, s_u, SN, FH_ACC);
    CHECK(gradcheck("swiglu dgate", swiglu_loss, NULL, s_g, dg, SN, 100, 1e-6) < BOUND, "swiglu gate");
    CHECK(gradcheck("swiglu dup", swiglu_loss, NULL, s_u, du, SN, 100, 1e-6) < BOUND, "swiglu up");
}

/* SwiGLU on a packed gate | up ([N, 2C] rows): gradient check, and the same
 * bits as swiglu_fwd / _bwd on the two halves copied apart */
enum { PKN = 3, PKC = 5 };
static real *pk_gu, *pk_R;
static double swiglu_packed_loss(void *u) {
    (void)u;
    real o[PKN * PKC];
    cpu_swiglu_packed_fwd(o, pk_gu, PKN, PKC);
    return dot(o, pk_R, PKN * PKC);
}
static void test_swiglu_packed(void) {
    size_t n = PKN * PKC;
    pk_gu = rnd(2 * n, -3, 3); pk_R = rnd(n, -1, 1);
    real *dgu = rnd(2 * n, -1, 1), *dgu0 = zeros(2 * n);   /* acc: added to what is there */
    memcpy(dgu0, dgu, sizeof(real) * 2 * n);
    cpu_swiglu_packed_bwd(dgu, pk_R, pk_gu, PKN, PKC, FH_ACC);
    for (size_t i = 0; i < 2 * n; i++) dgu[i] -= dgu0[i];
    CHECK(gradcheck("swiglu packed dgu", swiglu_packed_loss, NULL, pk_gu, dgu, 2 * n, 200, 1e-6) < BOUND,
          "swiglu packed");
    real *g = zeros(n), *u = zeros(n), *o1 = zeros(n), *o2 = zeros(n), *dg = zeros(n), *du = zeros(n);
    for (int r = 0; r < PKN; r++)
        for (int c = 0; c < PKC; c++) {
            g[r * PKC + c] = pk_gu[r * 2 * PKC + c];
            u[r * PKC + c] = pk_gu[r * 2 * PKC + PKC + c];
        }
    cpu_swiglu_fwd(o1, g, u, n);
    cpu_swiglu_packed_fwd(o2, pk_gu, PKN, PKC);
    CHECK(!memcmp(o1, o2, sizeof(real) * n), "packed forward: the same bits");
    cpu_swiglu_bwd(dg, du, pk_R, g, u, n, FH_OVERWRITE);
    for (size_t i = 0; i < 2 * n; i++) dgu[i] = (real)NAN;   /* overwrite: not read */
    cpu_swiglu_packed_bwd(dgu, pk_R, pk_gu, PKN, PKC, FH_OVERWRITE);
    int same = 1;
    for (int r = 0; r < PKN; r++)
        for (int c = 0; c < PKC; c++)
            same &= dgu[r * 2 * PKC + c] == dg[r * PKC + c] && dgu[r * 2 * PKC + PKC + c] == du[r * PKC + c];
    CHECK(same, "packed backward: the same bits");
}

/* ---- RoPE ---- */
enum { PB = 2, PN = 3, PH = 2, PD = 6 };
static const int p_pos[PN] = {1, 4, 9};
static real *p_x, *p_R;
static double rope_loss(void *u) {
    (void)u;
    real o[PB * PN * PH * PD];
    cpu_rope_fwd(o, p_x, p_pos, PB, PN, PH, PD, 10000);
    return dot(o, p_R, PB * PN * PH * PD);
}
static void test_rope(void) {
    size_t n = PB * PN * PH * PD;
    p_x = rnd(n, -1, 1); p_R = rnd(n, -1, 1);
    real *dx = zeros(n), o[PB * PN * PH * PD];
    cpu_rope_bwd(dx, p_R, p_pos, PB, PN, PH, PD, 10000, FH_ACC);
    CHECK(gradcheck("rope dx", rope_loss, NULL, p_x, dx, n, 200, 1e-6) < BOUND, "rope");
    /* position 0 is the identity; rotation preserves each pair's norm */
    int zero = 0;
    cpu_rope_fwd(o, p_x, &zero, 1, 1, 1, PD, 10000);
    for (int i = 0; i < PD; i++) CHECK(fabs(o[i] - p_x[i]) < 1e-15, "identity at position 0");
    cpu_rope_fwd(o, p_x, p_pos, PB, PN, PH, PD, 10000);
    double a = p_x[1] * p_x[1] + p_x[4] * p_x[4], b = o[1] * o[1] + o[4] * o[4];
    CHECK(fabs(a - b) < 1e-12, "pair norm kept");
}

/* ---- gather / scatter with a column window ---- */
enum { GB = 2, GT = 6, GS = 3, GC = 4, GL = 10 };
static const int g_idx[GS] = {0, 3, 5};
static real *g_in, *g_R, *g_src, *g_Rs;
static double gather_loss(void *u) {
    (void)u;
    real o[GB * GS * GC];
    cpu_gather_fwd(o, g_in, g_idx, GB, GT, GS, GC, GL, 3);
    return dot(o, g_R, GB * GS * GC);
}
static double scatter_loss(void *u) {
    (void)u;
    real o[GB * GT * GL];
    memset(o, 0, sizeof o);
    cpu_scatter_fwd(o, g_src, g_idx, GB, GT, GS, GC, GL, 5);
    return dot(o, g_Rs, GB * GT * GL);
}
static void test_gather_scatter(void) {
    g_in = rnd(GB * GT * GL, -1, 1); g_R = rnd(GB * GS * GC, -1, 1);
    g_src = rnd(GB * GS * GC, -1, 1); g_Rs = rnd(GB * GT * GL, -1, 1);
    real o[GB * GS * GC];
    cpu_gather_fwd(o, g_in, g_idx, GB, GT, GS, GC, GL, 3);
    CHECK(o[(1 * GS + 2) * GC + 1] == g_in[(1 * GT + 5) * GL + 3 + 1], "gather picks the right element");
    real *din = zeros(GB * GT * GL), *dsrc = zeros(GB * GS * GC);
    cpu_gather_bwd(din, g_R, g_idx, GB, GT, GS, GC, GL, 3);
    cpu_scatter_bwd(dsrc, g_Rs, g_idx, GB, GT, GS, GC, GL, 5, FH_ACC);
    CHECK(gradcheck("gather din", gather_loss, NULL, g_in, din, GB * GT * GL, 200, 1e-6) < BOUND, "gather");
    CHECK(gradcheck("scatter dsrc", scatter_loss, NULL, g_src, dsrc, GB * GS * GC, 200, 1e-6) < BOUND, "scatter");
}

/* ---- the split's gather fused into the branch's first norm (ops.h rmsnorm_gather_*) ----
 * xsel = rows idx of x, out = rmsnorm(xsel) w. L = sum(out R) + sum(xsel S): the
 * branch's norm output and its residual, as in the model; the gradient at x is
 * (S + rmsnorm_bwd(R)) on rows idx, 0 elsewhere. */
enum { QB = 2, QT = 7, QS = 4, QC = 5 };
static const int q_idx[QS] = {0, 2, 3, 6};
static real *q_x, *q_w, *q_R, *q_S;
static double rg_loss(void *u) {
    (void)u;
    real xs[QB * QS * QC], out[QB * QS * QC], rstd[QB * QS];
    cpu_rmsnorm_gather_fwd(xs, out, rstd, q_x, q_idx, q_w, QB, QT, QS, QC, (real)1e-5);
    return dot(out, q_R, QB * QS * QC) + (q_S ? dot(xs, q_S, QB * QS * QC) : 0);
}
static void test_rmsnorm_gather(void) {
    enum { NS = QB * QS * QC, NF = QB * QT * QC };
    q_x = rnd(NF, -2, 2); q_w = rnd(QC, 0.5, 1.5); q_R = rnd(NS, -1, 1);
    real *S = rnd(NS, -1, 1);
    real xs[NS], out[NS], rstd[QB * QS];
    cpu_rmsnorm_gather_fwd(xs, out, rstd, q_x, q_idx, q_w, QB, QT, QS, QC, (real)1e-5);
    for (int pass = 0; pass < 2; pass++) {   /* with the residual's share, and without (dres NULL) */
        q_S = pass ? NULL : S;
        real *dfull = zeros(NF), *dw = zeros(QC);
        cpu_rmsnorm_gather_bwd(dfull, dw, q_S, q_R, xs, q_w, rstd, q_idx, QB, QT, QS, QC);
        CHECK(gradcheck(pass ? "rmsnorm_gather dx (no dres)" : "rmsnorm_gather dx", rg_loss, NULL, q_x, dfull, NF, 200,
                        1e-6) < BOUND, "dx");
        CHECK(gradcheck("rmsnorm_gather dw", rg_loss, NULL, q_w, dw, QC, 100, 1e-6) < BOUND, "dw");
    }
    q_S = S;
    /* the same bits as the composition the model ran before: gather_fwd + rmsnorm_fwd;
     * rmsnorm_bwd (FH_ACC into the residual's share) + gather_bwd into a d that holds values */
    real xs2[NS], out2[NS], rstd2[QB * QS];
    cpu_gather_fwd(xs2, q_x, q_idx, QB, QT, QS, QC, QC, 0);
    cpu_rmsnorm_fwd(out2, rstd2, xs2, q_w, QB * QS, QC, (real)1e-5);
    CHECK(!memcmp(xs, xs2, sizeof xs) && !memcmp(out, out2, sizeof out) && !memcmp(rstd, rstd2, sizeof rstd),
          "fused forward == gather + rmsnorm_fwd, bit for bit");
    real *d0 = rnd(NF, -1, 1), *d1 = zeros(NF), *d2 = zeros(NF), *res = zeros(NS), *dw1 = zeros(QC),
         *dw2 = zeros(QC);
    memcpy(d1, d0, sizeof(real) * NF); memcpy(d2, d0, sizeof(real) * NF); memcpy(res, S, sizeof(real) * NS);
    cpu_rmsnorm_gather_bwd(d1, dw1, S, q_R, xs, q_w, rstd, q_idx, QB, QT, QS, QC);
    cpu_rmsnorm_bwd(res, dw2, q_R, xs2, q_w, rstd2, QB * QS, QC, FH_ACC);
    cpu_gather_bwd(d2, res, q_idx, QB, QT, QS, QC, QC, 0);
    CHECK(!memcmp(d1, d2, sizeof(real) * NF) && !memcmp(dw1, dw2, sizeof(real) * QC),
          "fused backward == rmsnorm_bwd + gather_bwd, bit for bit");
    int untouched = 1;   /* rows not selected keep their values */
    for (int b = 0; b < QB; b++)
        for (int t = 0; t < QT; t++) {
            int sel = 0;
            for (int j = 0; j < QS; j++) sel |= q_idx[j] == t;
            for (int c = 0; !sel && c < QC; c++) untouched &= d1[((size_t)b * QT + t) * QC + c] == d0[((size_t)b * QT + t) * QC + c];
        }
    CHECK(untouched, "rows not selected untouched");
    /* an empty selection writes nothing */
    memcpy(d1, d0, sizeof(real) * NF);
    cpu_rmsnorm_gather_fwd(xs, out, rstd, q_x, q_idx, q_w, QB, QT, 0, QC, (real)1e-5);
    cpu_rmsnorm_gather_bwd(d1, dw1, S, q_R, xs, q_w, rstd, q_idx, QB, QT, 0, QC);
    CHECK(!memcmp(d1, d0, sizeof(real) * NF), "empty selection: nothing written");
}

/* ---- embedding ---- */
enum { EN = 5, EV = 4, EC = 3 };
static const int e_tok[EN] = {1, 3, 1, 0, 3};
static real *e_w, *e_R;
static double emb_loss(void *u) {
    (void)u;
    real o[EN * EC];
    cpu_embedding_fwd(o, e_tok, e_w, EN, EC);
    return dot(o, e_R, EN * EC);
}
static void test_embedding(void) {
    e_w = rnd(EV * EC, -1, 1); e_R = rnd(EN * EC, -1, 1);
    real *dw = zeros(EV * EC);
    cpu_embedding_bwd(dw, e_R, e_tok, EN, EC);
    CHECK(gradcheck("embedding dw", emb_loss, NULL, e_w, dw, EV * EC, 100, 1e-6) < BOUND, "embedding");
}

/* ---- softmax + cross-entropy ---- */
enum { XN = 4, XV = 7 };
static const int x_t[XN] = {2, -1, 6, 0};
static real *x_l, *x_w;
static double xent_loss(void *u) {
    (void)u;
    real loss[XN], lse[XN];
    cpu_xent_fwd(loss, lse, x_l, x_t, XN, XV);
    return dot(loss, x_w, XN);
}
static void test_xent(void) {
    x_l = rnd(XN * XV, -3, 3); x_w = rnd(XN, 0.5, 1.5);
    real loss[XN], lse[XN], *dl = zeros(XN * XV);
    cpu_xent_fwd(loss, lse, x_l, x_t, XN, XV);
    double s = 0;
    for (int v = 0; v < XV; v++) s += exp(x_l[v]);
    CHECK(fabs(loss[0] - (log(s) - x_l[2])) < 1e-12, "loss value");
    CHECK(loss[1] == 0, "ignored target has zero loss");
    cpu_xent_bwd(dl, x_w, x_l, lse, x_t, XN, XV);
    CHECK(gradcheck("xent dlogits", xent_loss, NULL, x_l, dl, XN * XV, 100, 1e-6) < BOUND, "xent");
    /* extreme logits stay finite */
    real big[XV] = {1000, -1000, 0, 0, 0, 0, 0};
    int t0 = 1;
    cpu_xent_fwd(loss, lse, big, &t0, 1, XV);
    CHECK(isfinite(loss[0]) && fabs(loss[0] - 2000) < 1e-9, "stable at large logits: %g", loss[0]);
}

int main(void) {
    rng_seed(&rng, 1234, 1);
    RUN(test_rmsnorm);
    RUN(test_add_rmsnorm);
    RUN(test_linear);
    RUN(test_activations);
    RUN(test_swiglu_packed);
    RUN(test_rope);
    RUN(test_gather_scatter);
    RUN(test_rmsnorm_gather);
    RUN(test_embedding);
    RUN(test_xent);
    for (int i = 0; i < n_bufs; i++) free(bufs[i]);
    TEST_SUMMARY();
}
