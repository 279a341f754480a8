/* grad_mamba2_ops.c - finite-difference checks (double precision) of the
 * Mamba-2 CPU ops: the chunked SSD scan and the gated RMSNorm.
 * Each op's scalar test loss is L = sum(out * R) for a fixed random R, so
 * dout = R. SSD shapes have n not a multiple of the chunk length (a short last
 * chunk), one and two groups, one-step chunks, a chunk longer than the
 * sequence, and a single token. Bound: max relative error < 1e-6 (gradcheck's
 * five-point stencil at step EPS = 1e-4). */
#include <string.h>

#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

#define BOUND 1e-6
#define EPS 1e-4
static Rng rng;

static real *rnd(size_t n, double lo, double hi) { return uniform_buffer(&rng, n, lo, hi); }
static real *zeros(size_t n) { return calloc(n, sizeof(real)); }

/* ---- SSD ---- */
typedef struct { int B, n, nh, P, G, N, L; } SsdShape;
static SsdShape sh;
static real *s_xbc, *s_dt, *s_bias, *s_Alog, *s_D, *s_R;

static size_t n_states(SsdShape s) { return (size_t)s.B * ((s.n + s.L - 1) / s.L + 1) * s.nh * s.P * s.N; }

static double ssd_loss(void *u) {
    (void)u;
    size_t NE = (size_t)sh.B * sh.n * sh.nh * sh.P;
    real *y = malloc(sizeof(real) * NE), *st = malloc(sizeof(real) * n_states(sh));
    cpu_ssd_fwd(y, st, s_xbc, s_dt, s_bias, s_Alog, s_D, sh.B, sh.n, sh.nh, sh.P, sh.G, sh.N, sh.L);
    double L = dot(y, s_R, NE);
    free(y); free(st);
    return L;
}

static void check_ssd(SsdShape s) {
    sh = s;
    int E = s.nh * s.P, CX = E + 2 * s.G * s.N;
    size_t NX = (size_t)s.B * s.n * CX, NE = (size_t)s.B * s.n * E, NH = (size_t)s.B * s.n * s.nh;
    /* realistic ranges: dt = softplus(-3..1 +- 0.5) ~ 0.03..1.7, A = -(1..nh) (Mamba-2's init range) */
    s_xbc = rnd(NX, -1, 1); s_dt = rnd(NH, -3, 1); s_bias = rnd(s.nh, -0.5, 0.5); s_D = rnd(s.nh, 0.5, 1.5);
    s_R = rnd(NE, -1, 1);
    s_Alog = malloc(sizeof(real) * s.nh);
    for (int h = 0; h < s.nh; h++) s_Alog[h] = (real)log(h + 1.0) + (real)(0.1 * (rng_uniform(&rng) - 0.5));

    real *y = zeros(NE), *st = zeros(n_states(s));
    real *dxbc = zeros(NX), *ddt = zeros(NH), *dbias = zeros(s.nh), *dAlog = zeros(s.nh), *dD = zeros(s.nh);
    cpu_ssd_fwd(y, st, s_xbc, s_dt, s_bias, s_Alog, s_D, s.B, s.n, s.nh, s.P, s.G, s.N, s.L);
    cpu_ssd_bwd(dxbc, ddt, dbias, dAlog, dD, s_R, st, s_xbc, s_dt, s_bias, s_Alog, s_D, s.B, s.n, s.nh, s.P, s.G,
                s.N, s.L, FH_ACC);
    printf("    B=%d n=%d nh=%d P=%d G=%d N=%d L=%d\n", s.B, s.n, s.nh, s.P, s.G, s.N, s.L);
    CHECK(gradcheck("ssd dxbc", ssd_loss, NULL, s_xbc, dxbc, NX, 1000, EPS) < BOUND, "dxbc");
    CHECK(gradcheck("ssd ddt_raw", ssd_loss, NULL, s_dt, ddt, NH, 400, EPS) < BOUND, "ddt_raw");
    CHECK(gradcheck("ssd ddt_bias", ssd_loss, NULL, s_bias, dbias, s.nh, 400, EPS) < BOUND, "ddt_bias");
    CHECK(gradcheck("ssd dA_log", ssd_loss, NULL, s_Alog, dAlog, s.nh, 400, EPS) < BOUND, "dA_log");
    CHECK(gradcheck("ssd dD", ssd_loss, NULL, s_D, dD, s.nh, 400, EPS) < BOUND, "dD");

    /* NULL gradients are skipped and the rest accumulate: a second backward
     * asking only for dA_log and ddt_raw doubles exactly those */
    real a0 = dAlog[s.nh - 1], t0 = ddt[NH - 1], x0 = dxbc[NX - 1], b0 = dbias[0];
    cpu_ssd_bwd(NULL, ddt, NULL, dAlog, NULL, s_R, st, s_xbc, s_dt, s_bias, s_Alog, s_D, s.B, s.n, s.nh, s.P, s.G,
                s.N, s.L, FH_ACC);
    CHECK(fabs(dAlog[s.nh - 1] - 2 * a0) < 1e-12 * (1 + fabs(a0)) && fabs(ddt[NH - 1] - 2 * t0) < 1e-12,
          "backward accumulates");
    CHECK(dxbc[NX - 1] == x0 && dbias[0] == b0, "NULL gradients leave the others alone");

    real *bufs[] = {s_xbc, s_dt, s_bias, s_Alog, s_D, s_R, y, st, dxbc, ddt, dbias, dAlog, dD};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void test_ssd_one_group(void) { check_ssd((SsdShape){2, 11, 4, 3, 1, 5, 4}); }
static void test_ssd_two_groups(void) { check_ssd((SsdShape){2, 11, 4, 3, 2, 5, 4}); }
static void test_ssd_unit_chunks(void) { check_ssd((SsdShape){2, 7, 4, 3, 2, 5, 1}); }
static void test_ssd_chunk_over_n(void) { check_ssd((SsdShape){1, 9, 4, 3, 4, 5, 64}); }   /* also G = nh */
static void test_ssd_single_token(void) { check_ssd((SsdShape){3, 1, 4, 3, 2, 5, 4}); }

/* ---- gated RMSNorm ---- */
static int gN, gC;
static real *g_y, *g_z, *g_w, *g_R;
#define GEPS 1e-5

static double grms_loss(void *u) {
    (void)u;
    size_t NC = (size_t)gN * gC;
    real *out = malloc(sizeof(real) * NC), *rstd = malloc(sizeof(real) * gN);
    cpu_gated_rmsnorm_fwd(out, rstd, g_y, g_z, g_w, gN, gC, GEPS, gC);
    double L = dot(out, g_R, NC);
    free(out); free(rstd);
    return L;
}

static void test_gated_rmsnorm(void) {
    gN = 7; gC = 10;
    size_t NC = (size_t)gN * gC;
    g_y = rnd(NC, -1, 1); g_z = rnd(NC, -3, 3); g_w = rnd(gC, 0.5, 1.5); g_R = rnd(NC, -1, 1);
    real *out = zeros(NC), *rstd = zeros(gN), *dy = zeros(NC), *dz = zeros(NC), *dw = zeros(gC);
    cpu_gated_rmsnorm_fwd(out, rstd, g_y, g_z, g_w, gN, gC, GEPS, gC);
    cpu_gated_rmsnorm_bwd(dy, dz, dw, g_R, g_y, g_z, g_w, rstd, gN, gC, FH_ACC, gC);
    CHECK(gradcheck("gated_rmsnorm dy", grms_loss, NULL, g_y, dy, NC, 400, EPS) < BOUND, "dy");
    CHECK(gradcheck("gated_rmsnorm dz", grms_loss, NULL, g_z, dz, NC, 400, EPS) < BOUND, "dz");
    CHECK(gradcheck("gated_rmsnorm dw", grms_loss, NULL, g_w, dw, gC, 400, EPS) < BOUND, "dw");
    real w0 = dw[3], y0 = dy[5];
    cpu_gated_rmsnorm_bwd(NULL, NULL, dw, g_R, g_y, g_z, g_w, rstd, gN, gC, FH_ACC, gC);
    CHECK(fabs(dw[3] - 2 * w0) < 1e-12 && dy[5] == y0, "backward accumulates, NULL skipped");
    real *bufs[] = {g_y, g_z, g_w, g_R, out, rstd, dy, dz, dw};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

int main(void) {
    rng_seed(&rng, 2024, 5);
    RUN(test_ssd_one_group);
    RUN(test_ssd_two_groups);
    RUN(test_ssd_unit_chunks);
    RUN(test_ssd_chunk_over_n);
    RUN(test_ssd_single_token);
    RUN(test_gated_rmsnorm);
    TEST_SUMMARY();
}
