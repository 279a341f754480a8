/* test_mamba1_ops.c - the float Mamba-1 CPU ops (causal depthwise conv1d and
 * the fused selective scan) against naive double-precision loops written
 * here from the definitions in ops/ops.h, at several shapes (sequences shorter
 * than the kernel, one token, shapes large enough to take the OpenMP path).
 * Bound: relative L2 error < 1e-5. Also checks that the multiply-adds counted
 * into fh_macs equal the closed-form formulas stated in ops.h. */
#include <string.h>

#include "../src/core/flopcount.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-5
static Rng rng;

static real *rnd(size_t n, double lo, double hi) { return uniform_buffer(&rng, n, lo, hi); }

/* ---- causal depthwise conv1d ---- */
typedef struct { int B, n, C, K, bias; } ConvCase;

static void naive_conv(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K) {
    for (int bb = 0; bb < B; bb++)
        for (int t = 0; t < n; t++)
            for (int c = 0; c < C; c++) {
                double s = b ? b[c] : 0;
                for (int k = 0; k < K; k++) {
                    int ti = t - (K - 1) + k;
                    if (ti >= 0) s += (double)w[c * K + k] * x[((size_t)bb * n + ti) * C + c];
                }
                out[((size_t)bb * n + t) * C + c] = (real)s;
            }
}

static void check_conv(ConvCase cc) {
    int B = cc.B, n = cc.n, C = cc.C, K = cc.K;
    size_t N = (size_t)B * n * C;
    real *x = rnd(N, -1, 1), *w = rnd((size_t)C * K, -1, 1), *b = cc.bias ? rnd(C, -1, 1) : NULL;
    real *out = malloc(sizeof(real) * N), *ref = malloc(sizeof(real) * N);
    fh_macs = 0;
    cpu_conv1d_fwd(out, x, w, b, B, n, C, K);
    uint64_t counted = fh_macs;
    naive_conv(ref, x, w, b, B, n, C, K);
    double err = rel_l2(out, ref, N);
    printf("    conv1d B=%d n=%d C=%d K=%d bias=%d: rel L2 %.2e\n", B, n, C, K, cc.bias, err);
    CHECK(err < BOUND, "conv1d forward rel L2 %.3e", err);
    /* taps with input index >= 0, per channel and sequence */
    uint64_t taps = n >= K ? (uint64_t)n * K - (uint64_t)K * (K - 1) / 2 : (uint64_t)n * (n + 1) / 2;
    uint64_t expect = (uint64_t)B * C * taps;
    CHECK(counted == expect, "conv1d MACs %llu, formula %llu", (unsigned long long)counted,
          (unsigned long long)expect);
    free(x); free(w); free(b); free(out); free(ref);
}

static void test_conv1d(void) {
    const ConvCase cases[] = {
        {2, 7, 5, 4, 1},     /* n >= K */
        {1, 3, 6, 4, 1},     /* n < K */
        {3, 1, 4, 4, 0},     /* one token, no bias */
        {2, 9, 3, 1, 1},     /* K = 1: a per-channel scale */
        {2, 130, 300, 4, 1}, /* large enough for the parallel path */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv(cases[i]);
}

/* ---- Mamba-1 selective scan ---- */
typedef struct { int B, n, E, S, L; double dt_lo, dt_hi; } ScanCase;

/* y and the states h_t, straight from the recurrence in double */
static void naive_scan(double *y, double *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm,
                       const real *Cm, const real *D, const real *z, int B, int n, int E, int S) {
    double *h = calloc((size_t)E * S, sizeof(double));
    for (int b = 0; b < B; b++) {
        memset(h, 0, sizeof(double) * E * S);
        for (int t = 0; t < n; t++)
            for (int e = 0; e < E; e++) {
                size_t i = ((size_t)b * n + t) * E + e, r = (size_t)b * n + t;
                double dt = log1p(exp((double)dt_raw[i]));
                double acc = (double)D[e] * x[i];
                for (int s = 0; s < S; s++) {
                    double A = -exp((double)A_log[e * S + s]);
                    h[e * S + s] = exp(dt * A) * h[e * S + s] + dt * Bm[r * S + s] * x[i];
                    hs[i * S + s] = h[e * S + s];
                    acc += (double)Cm[r * S + s] * h[e * S + s];
                }
                y[i] = acc * z[i] / (1 + exp(-(double)z[i]));
            }
    }
    free(h);
}

static void check_scan(ScanCase sc) {
    int B = sc.B, n = sc.n, E = sc.E, S = sc.S, L = sc.L, nc = (n + L - 1) / L;
    size_t NE = (size_t)B * n * E, NS = (size_t)B * n * S, NH = (size_t)B * (nc + 1) * E * S;
    real *x = rnd(NE, -1, 1), *dt = rnd(NE, sc.dt_lo, sc.dt_hi), *z = rnd(NE, -3, 3);
    real *Bm = rnd(NS, -1, 1), *Cm = rnd(NS, -1, 1), *D = rnd(E, 0.5, 1.5);
    real *A_log = malloc(sizeof(real) * E * S);
    for (int e = 0; e < E; e++)
        for (int s = 0; s < S; s++) A_log[e * S + s] = (real)log(s + 1.0);   /* S4D-real init */
    real *y = malloc(sizeof(real) * NE), *hs = malloc(sizeof(real) * NH);
    double *yr = malloc(sizeof(double) * NE), *hr = malloc(sizeof(double) * NE * S);

    fh_macs = 0;
    cpu_selective_scan_fwd(y, hs, x, dt, A_log, Bm, Cm, D, z, B, n, E, S, L);
    uint64_t counted = fh_macs;
    naive_scan(yr, hr, x, dt, A_log, Bm, Cm, D, z, B, n, E, S);

    /* saved states: hs[b, c] is h at step c*L - 1 (zero for c = 0, the final
     * state for c = nc), picked out of the naive run's every-step states */
    double *hb = malloc(sizeof(double) * NH);
    for (int b = 0; b < B; b++)
        for (int c = 0; c <= nc; c++) {
            int t = (c * L < n ? c * L : n) - 1;
            for (size_t k = 0; k < (size_t)E * S; k++)
                hb[((size_t)b * (nc + 1) + c) * E * S + k] = t < 0 ? 0 : hr[((size_t)b * n + t) * E * S + k];
        }
    double ey = rel_l2_d(y, yr, NE), eh = rel_l2_d(hs, hb, NH);
    printf("    scan B=%d n=%d E=%d S=%d L=%d dt_raw in [%g, %g): rel L2 y %.2e, chunk states %.2e\n", B, n, E, S, L,
           sc.dt_lo, sc.dt_hi, ey, eh);
    CHECK(ey < BOUND, "scan output rel L2 %.3e", ey);
    CHECK(eh < BOUND, "scan saved states rel L2 %.3e", eh);
    int finite = 1;
    for (size_t i = 0; i < NE; i++) finite &= isfinite(y[i]);
    CHECK(finite, "scan output is finite");
    uint64_t expect = 3ull * B * n * E * S;
    CHECK(counted == expect, "scan MACs %llu, formula %llu", (unsigned long long)counted,
          (unsigned long long)expect);

    real *bufs[] = {x, dt, z, Bm, Cm, D, A_log, y, hs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(yr); free(hr); free(hb);
}

static void test_selective_scan(void) {
    const ScanCase cases[] = {
        {2, 7, 5, 3, 3, -3, 1},      /* last chunk partial */
        {2, 7, 5, 3, 1, -3, 1},      /* a state saved after every step */
        {3, 1, 4, 2, 4, -3, 1},      /* one token, chunk longer than the sequence */
        {1, 64, 24, 16, 16, -3, 1},  /* Mamba's d_state, whole chunks */
        {2, 33, 9, 5, 32, -6, 25},   /* tiny and huge dt: softplus's x > 20 branch, strong decay */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_scan(cases[i]);
}

int main(void) {
    rng_seed(&rng, 42, 3);
    RUN(test_conv1d);
    RUN(test_selective_scan);
    TEST_SUMMARY();
}
