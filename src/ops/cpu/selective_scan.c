/* selective_scan.c - the Mamba-1 selective scan, fused with softplus(dt), the
 * D skip and the SiLU(z) gate:
 *   h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t ;  y_t = (C_t . h_t + D x_t) silu(z_t)
 * The forward saves every state h_t (hs [B, n, E, S]) for the backward, which
 * walks time in reverse carrying dL/dh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

static inline real softplus(real x) { return x > 20 ? x : R_LOG1P(R_EXP(x)); }
static inline real sigmoid(real x) { return 1 / (1 + R_EXP(-x)); }

void cpu_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm,
                            const real *Cm, const real *D, const real *z, int B, int n, int E, int S) {
    fh_count_macs(3ull * B * n * E * S);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            real *h = hs + ((size_t)b * n * E + e) * S;   /* state of step t lives at h + t*E*S */
            const real *prev = NULL;
            for (int t = 0; t < n; t++, h += (size_t)E * S) {
                size_t i = ((size_t)b * n + t) * E + e;
                const real *Bt = Bm + ((size_t)b * n + t) * S, *Ct = Cm + ((size_t)b * n + t) * S;
                real dt = softplus(dt_raw[i]), acc = 0;
                for (int s = 0; s < S; s++) {
                    real a = -R_EXP(A_log[(size_t)e * S + s]);
                    h[s] = R_EXP(dt * a) * (prev ? prev[s] : 0) + dt * Bt[s] * x[i];
                    acc += Ct[s] * h[s];
                }
                prev = h;
                y[i] = (acc + D[e] * x[i]) * z[i] * sigmoid(z[i]);
            }
        }
}

void cpu_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz,
                            const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log,
                            const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                            int S) {
    size_t nbs = (size_t)B * n * S;
    /* parallel over channels: each task owns dA_log[e], dD[e] and its dx/ddt/dz
     * entries; dB and dC are shared by all channels, so each thread sums into
     * its own copy, added up at the end */
#pragma omp parallel
    {
        real *lB = calloc(nbs, sizeof(real)), *lC = calloc(nbs, sizeof(real)), *dh = malloc(sizeof(real) * S);
#pragma omp for schedule(static)
        for (int e = 0; e < E; e++)
            for (int b = 0; b < B; b++) {
                memset(dh, 0, sizeof(real) * S);
                for (int t = n - 1; t >= 0; t--) {
                    size_t i = ((size_t)b * n + t) * E + e, bs = ((size_t)b * n + t) * S;
                    const real *h = hs + i * S, *hp = t ? hs + (i - E) * S : NULL;
                    real dt = softplus(dt_raw[i]), sz = sigmoid(z[i]), acc = 0;
                    for (int s = 0; s < S; s++) acc += Cm[bs + s] * h[s];
                    real pre = acc + D[e] * x[i];
                    if (dz) dz[i] += dy[i] * pre * sz * (1 + z[i] * (1 - sz));
                    real dpre = dy[i] * z[i] * sz, ddt = 0, dxi = dpre * D[e];
                    if (dD) dD[e] += dpre * x[i];
                    for (int s = 0; s < S; s++) {
                        real a = -R_EXP(A_log[(size_t)e * S + s]), da = R_EXP(dt * a), hprev = hp ? hp[s] : 0;
                        lC[bs + s] += dpre * h[s];
                        dh[s] += dpre * Cm[bs + s];
                        ddt += dh[s] * (a * da * hprev + Bm[bs + s] * x[i]);
                        if (dA_log) dA_log[(size_t)e * S + s] += dh[s] * dt * da * hprev * a;
                        lB[bs + s] += dh[s] * dt * x[i];
                        dxi += dh[s] * dt * Bm[bs + s];
                        dh[s] *= da;   /* to step t-1 */
                    }
                    if (dx) dx[i] += dxi;
                    if (ddt_raw) ddt_raw[i] += ddt * sigmoid(dt_raw[i]);   /* softplus' = sigmoid */
                }
            }
#pragma omp critical
        for (size_t k = 0; k < nbs; k++) {
            if (dBm) dBm[k] += lB[k];
            if (dCm) dCm[k] += lC[k];
        }
        free(lB); free(lC); free(dh);
    }
}
