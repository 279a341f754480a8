/* grad_attention.c - finite-difference checks (double precision) of the
 * causal grouped-query attention over token subsets (cpu_attention_bwd).
 * Loss L = sum(out * R) for a fixed random R, so dout = R; gradients of q,
 * k and v are checked against five-point central differences.
 * Layouts: isolated context (kpos == qpos, a random subset of 0..T-1),
 * prefix context (kpos = 0..T-1), keys and queries from different subsets,
 * GQA groups (nh = 4, nkv = 2) and plain multi-head (nh == nkv), odd head
 * size, B = 2, and wrapping-window queries {0, 1, 11, 12} where the first
 * queries see no key at all (their output is 0 and must get no gradient).
 * Bound: max relative error < 1e-6. */
#include <string.h>

#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-6
/* five-point differences: truncation O(eps^4) is negligible at 1e-4, while
 * rounding noise (~1e-16 / eps on an O(1) loss) would reach ~1e-6 of the
 * smallest gradients (~1e-4) at eps = 1e-6 */
#define EPS 1e-4
static Rng rng;

typedef struct {
    const char *name;
    int B, nh, nkv, hd;
    int nq, nk;
    int qpos[16], kpos[16];
} Layout;

/* the layout and inputs the loss reads */
static const Layout *L_;
static real *q_, *k_, *v_, *R_, *out_, *lse_;

static double loss(void *u) {
    (void)u;
    const Layout *c = L_;
    cpu_attention_fwd(out_, lse_, q_, k_, v_, c->qpos, c->kpos, c->B, c->nq, c->nk, c->nh, c->nkv, c->hd);
    return dot(out_, R_, (size_t)c->B * c->nq * c->nh * c->hd);
}

static real *rnd(size_t n, double lo, double hi) { return uniform_buffer(&rng, n, lo, hi); }

static int all_finite(const real *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite((double)x[i])) return 0;
    return 1;
}

/* a sorted random subset of n positions out of 0..T-1 (selection sampling) */
static void subset(int *pos, int n, int T) {
    int got = 0;
    for (int t = 0; t < T && got < n; t++)
        if (rng_uniform(&rng) * (T - t) < n - got) pos[got++] = t;
}

static void check_layout(const Layout *c) {
    L_ = c;
    size_t nqe = (size_t)c->B * c->nq * c->nh * c->hd, nke = (size_t)c->B * c->nk * c->nkv * c->hd;
    q_ = rnd(nqe, -1.5, 1.5); k_ = rnd(nke, -1.5, 1.5); v_ = rnd(nke, -1, 1); R_ = rnd(nqe, -1, 1);
    out_ = malloc(sizeof(real) * nqe); lse_ = malloc(sizeof(real) * c->B * c->nh * c->nq);
    real *dq = calloc(nqe, sizeof(real)), *dk = calloc(nke, sizeof(real)), *dv = calloc(nke, sizeof(real));

    loss(NULL);   /* out_, lse_ at the unperturbed point */
    cpu_attention_bwd(dq, dk, dv, R_, out_, lse_, q_, k_, v_, c->qpos, c->kpos, c->B, c->nq, c->nk, c->nh,
                      c->nkv, c->hd, FH_ACC);
    CHECK(all_finite(dq, nqe) && all_finite(dk, nke) && all_finite(dv, nke), "%s: non-finite gradient", c->name);

    /* queries that see no key: zero output, no gradient */
    for (int i = 0; i < c->nq; i++) {
        if (c->nk > 0 && c->kpos[0] <= c->qpos[i]) continue;
        for (int b = 0; b < c->B; b++)
            for (int x = 0; x < c->nh * c->hd; x++) {
                size_t o = ((size_t)b * c->nq + i) * c->nh * c->hd + x;
                CHECK(out_[o] == 0 && dq[o] == 0, "%s: query %d sees no key: out %g dq %g", c->name, i,
                      out_[o], dq[o]);
            }
    }

    char name[64];
    snprintf(name, sizeof name, "%s dq", c->name);
    double eq = gradcheck(name, loss, NULL, q_, dq, nqe, 200, EPS);
    snprintf(name, sizeof name, "%s dk", c->name);
    double ek = gradcheck(name, loss, NULL, k_, dk, nke, 200, EPS);
    snprintf(name, sizeof name, "%s dv", c->name);
    double ev = gradcheck(name, loss, NULL, v_, dv, nke, 200, EPS);
    CHECK(eq < BOUND, "%s dq max rel err %.3e", c->name, eq);
    CHECK(ek < BOUND, "%s dk max rel err %.3e", c->name, ek);
    CHECK(ev < BOUND, "%s dv max rel err %.3e", c->name, ev);

    /* backward accumulates, and a NULL gradient is skipped: a second call
     * with only dk doubles dk and leaves dq, dv alone */
    loss(NULL);
    real dq0 = dq[nqe - 1], dv0 = dv[0], dk0 = dk[nke / 2];
    cpu_attention_bwd(NULL, dk, NULL, R_, out_, lse_, q_, k_, v_, c->qpos, c->kpos, c->B, c->nq, c->nk, c->nh,
                      c->nkv, c->hd, FH_ACC);
    CHECK(fabs(dk[nke / 2] - 2 * dk0) <= 1e-12 * fmax(1, fabs(dk0)), "%s: dk accumulates", c->name);
    CHECK(dq[nqe - 1] == dq0 && dv[0] == dv0, "%s: NULL gradients untouched", c->name);

    free(q_); free(k_); free(v_); free(R_); free(out_); free(lse_); free(dq); free(dk); free(dv);
}

/* (a) isolated context: the branch attends only among its own tokens */
static void test_isolated(void) {
    Layout c = {.name = "isolated", .B = 1, .nh = 2, .nkv = 1, .hd = 4, .nq = 7, .nk = 7};
    subset(c.qpos, 7, 13);
    memcpy(c.kpos, c.qpos, sizeof c.qpos);
    check_layout(&c);
}

/* (b) prefix context: a subset of queries attends to every earlier token */
static void test_prefix(void) {
    Layout c = {.name = "prefix", .B = 1, .nh = 2, .nkv = 2, .hd = 4, .nq = 7, .nk = 13};
    subset(c.qpos, 7, 13);
    for (int t = 0; t < 13; t++) c.kpos[t] = t;
    check_layout(&c);
}

/* (c) GQA (two query heads per kv head) and plain multi-head, odd hd, B = 2 */
static void test_gqa(void) {
    Layout c = {.name = "gqa 4/2 isolated", .B = 2, .nh = 4, .nkv = 2, .hd = 5, .nq = 6, .nk = 6};
    subset(c.qpos, 6, 11);
    memcpy(c.kpos, c.qpos, sizeof c.qpos);
    check_layout(&c);
    Layout d = {.name = "gqa 4/2 prefix", .B = 2, .nh = 4, .nkv = 2, .hd = 5, .nq = 5, .nk = 11};
    subset(d.qpos, 5, 11);
    for (int t = 0; t < 11; t++) d.kpos[t] = t;
    check_layout(&d);
    Layout e = {.name = "mha 3/3", .B = 2, .nh = 3, .nkv = 3, .hd = 5, .nq = 6, .nk = 9};
    subset(e.qpos, 6, 12);
    subset(e.kpos, 9, 12);
    check_layout(&e);
}

/* (d) wrapping-window queries; keys from a disjoint subset so that queries
 * 0 and 1 see no key, and the prefix form where every query sees some */
static void test_window(void) {
    Layout c = {.name = "window vs keys", .B = 2, .nh = 2, .nkv = 1, .hd = 3, .nq = 4, .nk = 5,
                .qpos = {0, 1, 11, 12}, .kpos = {2, 4, 5, 8, 10}};
    check_layout(&c);
    Layout d = {.name = "window isolated", .B = 1, .nh = 4, .nkv = 2, .hd = 5, .nq = 4, .nk = 4,
                .qpos = {0, 1, 11, 12}, .kpos = {0, 1, 11, 12}};
    check_layout(&d);
    Layout e = {.name = "window prefix", .B = 1, .nh = 2, .nkv = 1, .hd = 5, .nq = 4, .nk = 13,
                .qpos = {0, 1, 11, 12}};
    for (int t = 0; t < 13; t++) e.kpos[t] = t;
    check_layout(&e);
}

/* (e) row strides (ops.h): q, k, v as the column windows of one packed [B n, qd + 2 kvd + pad] buffer (the
 * fused q/k/v product's output, with pad > 0: ld > the packed width too), dq, dk, dv likewise. Finite
 * differences on the packed buffer; the same bits as the dense op on dense copies; the pad columns untouched
 * (attention_bwd) and the rope composition (attention_rope_*) the same bits as on dense copies. */
enum { SB = 2, SN = 6, SNH = 4, SNKV = 2, SHD = 6, SPAD = 3 };
static const int s_pos[SN] = {0, 2, 3, 5, 8, 9};
static real *sp_, *sR_, *sout_, *slse_;
static const int SQD = SNH * SHD, SKVD = SNKV * SHD, SLD = SNH * SHD + 2 * SNKV * SHD + SPAD;
static double strided_loss(void *u) {
    (void)u;
    cpu_attention_fwd_ld(sout_, slse_, sp_, sp_ + SQD, sp_ + SQD + SKVD, s_pos, s_pos, SB, SN, SN, SNH, SNKV, SHD,
                         SLD, SLD);
    return dot(sout_, sR_, (size_t)SB * SN * SQD);
}
static void unpack(real *dst, const real *src, int off, int cols) {
    for (int r = 0; r < SB * SN; r++) memcpy(dst + (size_t)r * cols, src + (size_t)r * SLD + off, sizeof(real) * cols);
}
static void test_strided(void) {
    size_t np = (size_t)SB * SN * SLD, nqe = (size_t)SB * SN * SQD, nke = (size_t)SB * SN * SKVD;
    sp_ = rnd(np, -1.5, 1.5); sR_ = rnd(nqe, -1, 1);
    sout_ = malloc(sizeof(real) * nqe); slse_ = malloc(sizeof(real) * SB * SNH * SN);
    real *dp = calloc(np, sizeof(real));
    for (size_t r = 0; r < (size_t)SB * SN; r++)   /* the pad columns: must stay as they are */
        for (int c = SLD - SPAD; c < SLD; c++) dp[r * SLD + c] = 7;
    strided_loss(NULL);
    cpu_attention_bwd_ld(dp, dp + SQD, dp + SQD + SKVD, sR_, sout_, slse_, sp_, sp_ + SQD, sp_ + SQD + SKVD, s_pos,
                         s_pos, SB, SN, SN, SNH, SNKV, SHD, FH_OVERWRITE, SLD, SLD);
    int pad_ok = 1;
    for (size_t r = 0; r < (size_t)SB * SN; r++)
        for (int c = SLD - SPAD; c < SLD; c++) pad_ok &= dp[r * SLD + c] == 7;
    CHECK(pad_ok, "strided backward wrote outside its columns");
    for (size_t r = 0; r < (size_t)SB * SN; r++)
        for (int c = SLD - SPAD; c < SLD; c++) dp[r * SLD + c] = 0;   /* their true gradient */
    double e = gradcheck("strided dqkv", strided_loss, NULL, sp_, dp, np, 300, EPS);
    CHECK(e < BOUND, "strided dqkv max rel err %.3e", e);

    /* the same bits as the dense op on dense copies */
    real *q = malloc(sizeof(real) * nqe), *k = malloc(sizeof(real) * nke), *v = malloc(sizeof(real) * nke);
    unpack(q, sp_, 0, SQD); unpack(k, sp_, SQD, SKVD); unpack(v, sp_, SQD + SKVD, SKVD);
    real *out = malloc(sizeof(real) * nqe), *lse = malloc(sizeof(real) * SB * SNH * SN);
    real *dq = calloc(nqe, sizeof(real)), *dk = calloc(nke, sizeof(real)), *dv = calloc(nke, sizeof(real));
    real *gq = malloc(sizeof(real) * nqe), *gk = malloc(sizeof(real) * nke), *gv = malloc(sizeof(real) * nke);
    cpu_attention_fwd(out, lse, q, k, v, s_pos, s_pos, SB, SN, SN, SNH, SNKV, SHD);
    strided_loss(NULL);
    CHECK(!memcmp(out, sout_, sizeof(real) * nqe) && !memcmp(lse, slse_, sizeof(real) * SB * SNH * SN),
          "strided forward: not the dense op's bits");
    cpu_attention_bwd(dq, dk, dv, sR_, out, lse, q, k, v, s_pos, s_pos, SB, SN, SN, SNH, SNKV, SHD, FH_OVERWRITE);
    memset(dp, 0, sizeof(real) * np);
    cpu_attention_bwd_ld(dp, dp + SQD, dp + SQD + SKVD, sR_, out, lse, sp_, sp_ + SQD, sp_ + SQD + SKVD, s_pos, s_pos,
                         SB, SN, SN, SNH, SNKV, SHD, FH_OVERWRITE, SLD, SLD);
    unpack(gq, dp, 0, SQD); unpack(gk, dp, SQD, SKVD); unpack(gv, dp, SQD + SKVD, SKVD);
    CHECK(!memcmp(dq, gq, sizeof(real) * nqe) && !memcmp(dk, gk, sizeof(real) * nke) &&
          !memcmp(dv, gv, sizeof(real) * nke), "strided backward: not the dense op's bits");

    /* RoPE inside: strided against dense, forward and backward (acc: added to what is there) */
    CHECK(cpu_attention_rope_fwd(out, lse, q, k, v, s_pos, s_pos, SB, SN, SN, SNH, SNKV, SHD, 10000, SQD, SKVD) == 0,
          "rope fwd dense");
    CHECK(cpu_attention_rope_fwd(sout_, slse_, sp_, sp_ + SQD, sp_ + SQD + SKVD, s_pos, s_pos, SB, SN, SN, SNH, SNKV,
                                 SHD, 10000, SLD, SLD) == 0, "rope fwd strided");
    CHECK(!memcmp(out, sout_, sizeof(real) * nqe), "strided rope forward: not the dense op's bits");
    for (int acc = 0; acc < 2; acc++) {
        for (size_t i = 0; i < np; i++) dp[i] = acc ? 0.25 : 0;
        for (size_t i = 0; i < nqe; i++) dq[i] = acc ? 0.25 : 0;
        for (size_t i = 0; i < nke; i++) dk[i] = dv[i] = acc ? 0.25 : 0;
        cpu_attention_rope_bwd(dq, dk, dv, sR_, out, lse, q, k, v, s_pos, s_pos, SB, SN, SN, SNH, SNKV, SHD, 10000,
                               acc, SQD, SKVD);
        cpu_attention_rope_bwd(dp, dp + SQD, dp + SQD + SKVD, sR_, out, lse, sp_, sp_ + SQD, sp_ + SQD + SKVD, s_pos,
                               s_pos, SB, SN, SN, SNH, SNKV, SHD, 10000, acc, SLD, SLD);
        unpack(gq, dp, 0, SQD); unpack(gk, dp, SQD, SKVD); unpack(gv, dp, SQD + SKVD, SKVD);
        double worst = 0;
        for (size_t i = 0; i < nqe; i++) worst = fmax(worst, fabs(gq[i] - dq[i]));
        for (size_t i = 0; i < nke; i++) worst = fmax(worst, fmax(fabs(gk[i] - dk[i]), fabs(gv[i] - dv[i])));
        /* overwrite: the same bits; acc: dv summed apart then added (one rounding apart) */
        CHECK(acc ? worst < 1e-14 : worst == 0, "strided rope backward acc %d: %.3e from the dense op's", acc, worst);
    }
    free(q); free(k); free(v); free(out); free(lse); free(dq); free(dk); free(dv); free(gq); free(gk); free(gv);
    free(sp_); free(sR_); free(sout_); free(slse_); free(dp);
}

int main(void) {
    rng_seed(&rng, 1234, 7);
    RUN(test_isolated);
    RUN(test_prefix);
    RUN(test_gqa);
    RUN(test_window);
    RUN(test_strided);
    TEST_SUMMARY();
}
