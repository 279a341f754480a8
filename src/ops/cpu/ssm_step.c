/* ssm_step.c - one-token recurrent updates of the Mamba-1 and Mamba-2 state,
 * for generation: O(1) work per token, whatever the context length. */
#include <math.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

static inline real softplus(real x) { return x > 20 ? x : R_LOG1P(R_EXP(x)); }
static inline real silu(real x) { return x / (1 + R_EXP(-x)); }

void cpu_selective_scan_step(real *y, real *h, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int E, int S) {
#pragma omp parallel for collapse(2) if ((long)B * E * S > 65536)
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)b * E + e;
            real dt = softplus(dt_raw[i]), acc = 0;
            real *hs = h + i * S;
            for (int s = 0; s < S; s++) {
                real a = -R_EXP(A_log[(size_t)e * S + s]);
                hs[s] = R_EXP(dt * a) * hs[s] + dt * Bm[(size_t)b * S + s] * x[i];
                acc += Cm[(size_t)b * S + s] * hs[s];
            }
            y[i] = (acc + D[e] * x[i]) * silu(z[i]);
        }
    fh_count_macs(3ull * B * E * S);
}

void cpu_ssd_step(real *y, real *h, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                  const real *D, int B, int nh, int P, int G, int N) {
    int E = nh * P, CX = E + 2 * G * N, heads_per_group = nh / G;
#pragma omp parallel for collapse(2) if ((long)B * nh * P * N > 65536)
    for (int b = 0; b < B; b++)
        for (int hd = 0; hd < nh; hd++) {
            const real *row = xbc + (size_t)b * CX;
            int g = hd / heads_per_group;
            const real *Bv = row + E + (size_t)g * N, *Cv = row + E + (size_t)G * N + (size_t)g * N;
            real dt = softplus(dt_raw[(size_t)b * nh + hd] + dt_bias[hd]);
            real decay = R_EXP(-dt * R_EXP(A_log[hd]));
            for (int p = 0; p < P; p++) {
                real xv = row[(size_t)hd * P + p], acc = 0;
                real *hs = h + (((size_t)b * nh + hd) * P + p) * N;
                for (int n = 0; n < N; n++) {
                    hs[n] = decay * hs[n] + dt * xv * Bv[n];
                    acc += hs[n] * Cv[n];
                }
                y[(size_t)b * E + (size_t)hd * P + p] = acc + D[hd] * xv;
            }
        }
    fh_count_macs(3ull * B * nh * P * N);
}
