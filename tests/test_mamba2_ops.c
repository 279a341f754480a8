/* test_mamba2_ops.c - the float Mamba-2 CPU ops against naive double loops
 * written here from the definitions in ops/ops.h:
 *   - the chunked SSD forward (output y and the saved chunk-boundary states)
 *     against the plain sequential recurrence h_t = a_t h_{t-1} + dt_t x_t B_t^T,
 *     for chunk lengths 1, 3, 4 and 64 (longer than the sequence), one and
 *     several groups, a large shape that takes the OpenMP path, and extreme dt;
 *   - the multiply-adds counted into fh_macs against the closed form stated at
 *     the top of src/ops/cpu/ssd.c, recomputed here;
 *   - the gated RMSNorm forward.
 * Bound: relative L2 error < 1e-5. */
#include <string.h>

#include "../src/core/flopcount.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-5
static Rng rng;

static real *rnd(size_t n, double lo, double hi) { return uniform_buffer(&rng, n, lo, hi); }

/* ---- SSD ---- */
typedef struct { int B, n, nh, P, G, N, L; double dt_lo, dt_hi; } SsdCase;

/* y and the states at chunk boundaries (states[c] = h before step c*L, the
 * last one = h after the last step), straight from the recurrence in double */
static void naive_ssd(double *y, double *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                      const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L) {
    int E = nh * P, CX = E + 2 * G * N, nchunks = (n + L - 1) / L;
    size_t PN = (size_t)P * N;
    double *h = malloc(sizeof(double) * nh * PN);
    for (int b = 0; b < B; b++) {
        memset(h, 0, sizeof(double) * nh * PN);
        for (int t = 0; t <= n; t++) {
            if (t % L == 0 || t == n) {   /* a chunk boundary: save the state entering step t */
                int c = t == n ? nchunks : t / L;
                memcpy(states + ((size_t)b * (nchunks + 1) + c) * nh * PN, h, sizeof(double) * nh * PN);
            }
            if (t == n) break;
            const real *row = xbc + ((size_t)b * n + t) * CX;
            for (int hd = 0; hd < nh; hd++) {
                int g = hd / (nh / G);
                const real *Bv = row + E + g * N, *Cv = row + E + G * N + g * N;
                double u = (double)dt_raw[((size_t)b * n + t) * nh + hd] + dt_bias[hd];
                double dt = u > 30 ? u : log1p(exp(u));
                double a = exp(-dt * exp((double)A_log[hd]));
                for (int p = 0; p < P; p++) {
                    double xv = row[hd * P + p], acc = (double)D[hd] * xv, *hp = h + hd * PN + (size_t)p * N;
                    for (int k = 0; k < N; k++) {
                        hp[k] = a * hp[k] + dt * xv * Bv[k];
                        acc += hp[k] * Cv[k];
                    }
                    y[((size_t)b * n + t) * E + hd * P + p] = acc;
                }
            }
        }
    }
    free(h);
}

/* the closed form from the top of ssd.c */
static uint64_t ssd_macs_formula(int B, int n, int nh, int P, int G, int N, int L) {
    uint64_t nfull = n / L, r = n % L, nchunks = (n + L - 1) / L;
    uint64_t pairs = nfull * L * (L + 1) / 2 + r * (r + 1) / 2;
    return (uint64_t)B * (((uint64_t)G * N + (uint64_t)nh * P) * pairs +
                          (uint64_t)nh * P * N * (2 * (uint64_t)n + nchunks));
}

static void check_ssd(SsdCase sc) {
    int B = sc.B, n = sc.n, nh = sc.nh, P = sc.P, G = sc.G, N = sc.N, L = sc.L;
    int E = nh * P, CX = E + 2 * G * N, nchunks = (n + L - 1) / L;
    size_t NX = (size_t)B * n * CX, NE = (size_t)B * n * E, NH = (size_t)B * n * nh;
    size_t NS = (size_t)B * (nchunks + 1) * nh * P * N;
    real *xbc = rnd(NX, -1, 1), *dt = rnd(NH, sc.dt_lo, sc.dt_hi), *bias = rnd(nh, -0.5, 0.5);
    real *D = rnd(nh, 0.5, 1.5), *A_log = malloc(sizeof(real) * nh);
    for (int h = 0; h < nh; h++) A_log[h] = (real)log(1.0 + 15.0 * h / nh);   /* A in [-1, -16) */
    real *y = malloc(sizeof(real) * NE), *st = malloc(sizeof(real) * NS);
    double *yr = malloc(sizeof(double) * NE), *sr = malloc(sizeof(double) * NS);

    fh_macs = 0;
    cpu_ssd_fwd(y, st, xbc, dt, bias, A_log, D, B, n, nh, P, G, N, L);
    uint64_t counted = fh_macs;
    naive_ssd(yr, sr, xbc, dt, bias, A_log, D, B, n, nh, P, G, N, L);

    double ey = rel_l2_d(y, yr, NE), es = rel_l2_d(st, sr, NS);
    printf("    B=%d n=%d nh=%d P=%d G=%d N=%d L=%d dt_raw in [%g, %g): rel L2 y %.2e, states %.2e\n", B, n, nh, P,
           G, N, L, sc.dt_lo, sc.dt_hi, ey, es);
    CHECK(ey < BOUND, "SSD output rel L2 %.3e", ey);
    CHECK(es < BOUND, "SSD chunk-boundary states rel L2 %.3e", es);
    int finite = 1;
    for (size_t i = 0; i < NE; i++) finite &= isfinite(y[i]);
    CHECK(finite, "SSD output is finite");
    uint64_t expect = ssd_macs_formula(B, n, nh, P, G, N, L);
    CHECK(counted == expect, "SSD MACs %llu, formula %llu", (unsigned long long)counted,
          (unsigned long long)expect);

    real *bufs[] = {xbc, dt, bias, D, A_log, y, st};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(yr); free(sr);
}

static void test_ssd(void) {
    const SsdCase cases[] = {
        {2, 11, 4, 3, 1, 5, 4, -3, 1},      /* short last chunk */
        {2, 11, 4, 3, 2, 5, 1, -3, 1},      /* one step per chunk */
        {2, 11, 4, 3, 2, 5, 3, -3, 1},
        {2, 11, 4, 3, 1, 5, 64, -3, 1},     /* one chunk longer than the sequence */
        {1, 12, 6, 4, 3, 7, 4, -3, 1},      /* n a multiple of L, three groups */
        {3, 1, 4, 3, 2, 5, 4, -3, 1},       /* one token */
        {2, 150, 8, 16, 2, 32, 64, -4, 1},  /* Mamba-2-like chunk; large enough for the parallel path */
        {2, 40, 4, 8, 1, 16, 16, -8, 25},   /* tiny and huge dt: softplus's x > 20 branch, decay to ~0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_ssd(cases[i]);
}

/* ---- gated RMSNorm ---- */
static void test_gated_rmsnorm(void) {
    int N = 9, C = 37;
    real eps = 1e-5f;
    size_t NC = (size_t)N * C;
    real *y = rnd(NC, -2, 2), *z = rnd(NC, -4, 4), *w = rnd(C, 0.5, 1.5);
    real *out = malloc(sizeof(real) * NC), *rstd = malloc(sizeof(real) * N);
    double *ref = malloc(sizeof(double) * NC), *rref = malloc(sizeof(double) * N);
    cpu_gated_rmsnorm_fwd(out, rstd, y, z, w, N, C, eps, C);
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int c = 0; c < C; c++) {
            double g = (double)y[i * C + c] * z[i * C + c] / (1 + exp(-(double)z[i * C + c]));
            ss += g * g;
        }
        rref[i] = 1 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++)
            ref[i * C + c] = (double)y[i * C + c] * z[i * C + c] / (1 + exp(-(double)z[i * C + c])) * rref[i] * w[c];
    }
    double eo = rel_l2_d(out, ref, NC), er = rel_l2_d(rstd, rref, N);
    printf("    N=%d C=%d: rel L2 out %.2e, rstd %.2e\n", N, C, eo, er);
    CHECK(eo < BOUND && er < BOUND, "gated RMSNorm out %.3e, rstd %.3e", eo, er);
    free(y); free(z); free(w); free(out); free(rstd); free(ref); free(rref);
}

int main(void) {
    rng_seed(&rng, 77, 11);
    RUN(test_ssd);
    RUN(test_gated_rmsnorm);
    TEST_SUMMARY();
}
