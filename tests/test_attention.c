/* test_attention.c - the float causal GQA attention over token subsets
 * (cpu_attention_fwd) against a naive double-precision implementation
 * written here from the contract in ops/ops.h: materialise every score,
 * mask key j unless kpos[j] <= qpos[i], softmax, weighted sum of values.
 * Shapes: a single token, isolated and prefix contexts, GQA and plain
 * multi-head, odd head sizes, queries that see no key, no keys at all,
 * scores large enough to overflow exp() in float without the max shift,
 * and shapes big enough to split over OpenMP threads.
 * Bounds: relative L2 error of out < 1e-5; lse within 1e-5 * max(1, |lse|)
 * where a key is visible; out exactly 0 where none is. Also checks that
 * fh_macs grows by 2 * hd * B * nh * sum_i(visible keys of query i). */
#include <string.h>

#include "../src/core/flopcount.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-5
static Rng rng;

typedef enum { ISOLATED, PREFIX, DISJOINT } Context;
typedef struct {
    const char *name;
    int B, T, nq, nk, nh, nkv, hd;
    Context ctx;
    double range;   /* q and k uniform in [-range, range] */
} Case;

static real *rnd(size_t n, double lo, double hi) { return uniform_buffer(&rng, n, lo, hi); }

/* a sorted random subset of n positions out of 0..T-1 (selection sampling) */
static void subset(int *pos, int n, int T) {
    int got = 0;
    for (int t = 0; t < T && got < n; t++)
        if (rng_uniform(&rng) * (T - t) < n - got) pos[got++] = t;
}

/* out, lse from the definition; lse = -inf for a query with no visible key */
static void naive_attention(double *out, double *lse, const real *q, const real *k, const real *v, const int *qpos,
                            const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    double *s = malloc(sizeof(double) * (nk ? nk : 1));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv);
            for (int i = 0; i < nq; i++) {
                const real *qi = q + (((size_t)b * nq + i) * nh + h) * hd;
                double *oi = out + (((size_t)b * nq + i) * nh + h) * hd;
                double mx = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    const real *kj = k + (((size_t)b * nk + j) * nkv + kh) * hd;
                    double d = 0;
                    for (int x = 0; x < hd; x++) d += (double)qi[x] * kj[x];
                    s[j] = kpos[j] <= qpos[i] ? d / sqrt((double)hd) : -INFINITY;
                    if (s[j] > mx) mx = s[j];
                }
                double z = 0;
                for (int j = 0; j < nk; j++) z += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
                for (int x = 0; x < hd; x++) oi[x] = 0;
                for (int j = 0; j < nk; j++) {
                    if (s[j] == -INFINITY) continue;
                    const real *vj = v + (((size_t)b * nk + j) * nkv + kh) * hd;
                    for (int x = 0; x < hd; x++) oi[x] += exp(s[j] - mx) / z * vj[x];
                }
                lse[((size_t)b * nh + h) * nq + i] = z > 0 ? mx + log(z) : -INFINITY;
            }
        }
    free(s);
}

static void check_case(const Case *c) {
    int B = c->B, nq = c->nq, nk = c->nk, nh = c->nh, nkv = c->nkv, hd = c->hd;
    int *qpos = malloc(sizeof(int) * (nq ? nq : 1)), *kpos = malloc(sizeof(int) * (nk ? nk : 1));
    subset(qpos, nq, c->T);
    if (c->ctx == ISOLATED) memcpy(kpos, qpos, sizeof(int) * nq);
    else if (c->ctx == PREFIX) for (int t = 0; t < nk; t++) kpos[t] = t;
    else subset(kpos, nk, c->T);

    size_t nqe = (size_t)B * nq * nh * hd, nke = (size_t)B * nk * nkv * hd, nl = (size_t)B * nh * nq;
    real *q = rnd(nqe, -c->range, c->range), *k = rnd(nke, -c->range, c->range), *v = rnd(nke, -1, 1);
    real *out = malloc(sizeof(real) * nqe), *lse = malloc(sizeof(real) * nl);
    double *ref = malloc(sizeof(double) * nqe), *ref_lse = malloc(sizeof(double) * nl);

    fh_macs = 0;
    cpu_attention_fwd(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    uint64_t counted = fh_macs;
    naive_attention(ref, ref_lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);

    /* relative L2 of out, and exact zeros where no key is visible */
    double num = 0, den = 0;
    int nonzero_blind = 0;
    for (size_t e = 0; e < nqe; e++) {
        double d = out[e] - ref[e];
        num += d * d;
        den += ref[e] * ref[e];
        size_t i = (e / ((size_t)nh * hd)) % nq;
        if ((nk == 0 || kpos[0] > qpos[i]) && out[e] != 0) nonzero_blind++;
    }
    double err = nqe ? sqrt(num) / fmax(sqrt(den), 1e-30) : 0;
    double lse_err = 0;
    int bad_lse = 0;
    for (size_t r = 0; r < nl; r++) {
        if (ref_lse[r] == -INFINITY) continue;   /* the no-key value is a sentinel, not compared */
        if (!isfinite(lse[r])) { bad_lse++; continue; }
        lse_err = fmax(lse_err, fabs(lse[r] - ref_lse[r]) / fmax(1, fabs(ref_lse[r])));
    }

    /* expected MACs: 2 * hd per visible key, per (batch, head, query) */
    uint64_t visible = 0;
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nk; j++) visible += kpos[j] <= qpos[i];
    uint64_t expect = 2ull * hd * B * nh * visible;

    printf("    %-20s B=%d nq=%d nk=%d nh=%d nkv=%d hd=%d: out rel L2 %.2e, lse rel %.2e, MACs %llu\n", c->name, B,
           nq, nk, nh, nkv, hd, err, lse_err, (unsigned long long)counted);
    CHECK(err < BOUND, "%s: out rel L2 %.3e", c->name, err);
    CHECK(lse_err < BOUND && bad_lse == 0, "%s: lse rel err %.3e, %d non-finite", c->name, lse_err, bad_lse);
    CHECK(nonzero_blind == 0, "%s: %d outputs of queries with no visible key are not 0", c->name, nonzero_blind);
    CHECK(counted == expect, "%s: MACs %llu, expected %llu", c->name, (unsigned long long)counted,
          (unsigned long long)expect);
    free(qpos); free(kpos); free(q); free(k); free(v); free(out); free(lse); free(ref); free(ref_lse);
}

static void test_forward(void) {
    const Case cases[] = {
        {"one token", 1, 1, 1, 1, 1, 1, 1, ISOLATED, 1},
        {"isolated gqa", 3, 37, 20, 20, 6, 2, 7, ISOLATED, 1},
        {"prefix mha", 2, 64, 23, 64, 4, 4, 16, PREFIX, 1},
        {"disjoint, blind q", 2, 50, 17, 30, 8, 1, 9, DISJOINT, 1},
        {"no keys", 2, 9, 5, 0, 2, 1, 3, DISJOINT, 1},
        {"large scores", 2, 40, 40, 40, 4, 2, 4, ISOLATED, 10},
        {"full causal", 4, 256, 256, 256, 8, 2, 32, ISOLATED, 1},
        {"prefix odd", 3, 97, 41, 97, 6, 3, 13, PREFIX, 1.5},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) check_case(&cases[n]);
}

/* the queries {0, 1, 11, 12} of a wrapping window over T = 13 against keys
 * {2, 5, 12}: queries 0 and 1 see nothing, 11 sees two keys, 12 all three
 * (a key at the query's own position is visible).
 * Checked by hand for head size 1, where out is a softmax-weighted mean of
 * the three scalar values. */
static void test_window_by_hand(void) {
    const int qpos[4] = {0, 1, 11, 12}, kpos[3] = {2, 5, 12};
    real q[4] = {0.3f, -1.0f, 0.5f, -2.0f}, k[3] = {1.0f, -0.5f, 2.0f}, v[3] = {1.0f, 2.0f, 4.0f};
    real out[4], lse[4];
    fh_macs = 0;
    cpu_attention_fwd(out, lse, q, k, v, qpos, kpos, 1, 4, 3, 1, 1, 1);
    CHECK(fh_macs == 2 * (0 + 0 + 2 + 3), "MACs %llu, expected 10", (unsigned long long)fh_macs);
    CHECK(out[0] == 0 && out[1] == 0, "blind queries out %g %g", out[0], out[1]);
    /* query 11: keys 2 and 5 only */
    double e0 = exp(0.5 * 1.0), e1 = exp(0.5 * -0.5);
    double o2 = (e0 * 1 + e1 * 2) / (e0 + e1);
    CHECK(fabs(out[2] - o2) < 1e-6, "query 11: %g, expected %g", out[2], o2);
    CHECK(fabs(lse[2] - log(e0 + e1)) < 1e-6, "query 11 lse %g", lse[2]);
    double f0 = exp(-2.0 * 1.0), f1 = exp(-2.0 * -0.5), f2 = exp(-2.0 * 2.0);
    double o3 = (f0 * 1 + f1 * 2 + f2 * 4) / (f0 + f1 + f2);
    CHECK(fabs(out[3] - o3) < 1e-6, "query 12: %g, expected %g", out[3], o3);
}

int main(void) {
    rng_seed(&rng, 2024, 3);
    RUN(test_forward);
    RUN(test_window_by_hand);
    TEST_SUMMARY();
}
