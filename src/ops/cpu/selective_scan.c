/* selective_scan.c - the Mamba-1 selective scan, fused with softplus(dt), the
 * D skip and the SiLU(z) gate:
 *   h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t ;  y_t = (C_t . h_t + D x_t) silu(z_t)
 * Time is cut into chunks of L steps. The forward saves only the states at
 * chunk boundaries (hs [B, nchunks+1, E, S]); the backward walks the chunks
 * from last to first, recomputes each chunk's states from its saved entry
 * state, then walks the chunk in reverse carrying dL/dh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/flopcount.h"
#include "cpu_ops.h"

static inline real softplus(real x) { return x > 20 ? x : R_LOG1P(R_EXP(x)); }
static inline real sigmoid(real x) { return 1 / (1 + R_EXP(-x)); }

/* a[s] = A = -exp(A_log[s]) for one channel: computed once per channel, not per step (the same
 * values: exp(-dt exp(A_log)) and exp(dt a) round identically, negation being exact) */
static inline void channel_a(real *a, const real *A_log, int S) {
    for (int s = 0; s < S; s++) a[s] = -R_EXP(A_log[s]);
}

/* one step of the recurrence for channel e: h = exp(dt A) hprev + dt B x (hprev may equal h);
 * the decays exp(dt A) also go to da when it is not NULL */
static inline void scan_step(real *h, const real *hprev, const real *a, const real *Bt, real dt, real xv, int S,
                             real *da) {
    for (int s = 0; s < S; s++) {
        real d = R_EXP(dt * a[s]);
        if (da) da[s] = d;
        h[s] = d * hprev[s] + dt * Bt[s] * xv;
    }
}

void cpu_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm,
                            const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L) {
    fh_count_macs(3ull * B * n * E * S);
    int nc = (n + L - 1) / L;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            /* the running state lives in the slot of the chunk being walked;
             * each chunk starts by copying it into the next chunk's slot */
            real *h = hs + ((size_t)b * (nc + 1) * E + e) * S, a[S];
            channel_a(a, A_log + (size_t)e * S, S);
            memset(h, 0, sizeof(real) * S);
            for (int c = 0; c < nc; c++) {
                real *hn = h + (size_t)E * S;
                memcpy(hn, h, sizeof(real) * S);
                for (int t = c * L; t < n && t < c * L + L; t++) {
                    size_t i = ((size_t)b * n + t) * E + e, r = ((size_t)b * n + t) * S;
                    real dt = softplus(dt_raw[i]), acc = 0;
                    scan_step(hn, hn, a, Bm + r, dt, x[i], S, NULL);
                    for (int s = 0; s < S; s++) acc += Cm[r + s] * hn[s];
                    y[i] = (acc + D[e] * x[i]) * z[i] * sigmoid(z[i]);
                }
                h = hn;
            }
        }
}

void cpu_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz,
                            const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log,
                            const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                            int S, int L, int acc) {
    size_t nbs = (size_t)B * n * S;
    if (!acc) {   /* each is a sum (over the state, the channels): overwriting is accumulating into zeros */
        size_t nbe = (size_t)B * n * E;
        if (dx) memset(dx, 0, sizeof(real) * nbe);
        if (ddt_raw) memset(ddt_raw, 0, sizeof(real) * nbe);
        if (dz) memset(dz, 0, sizeof(real) * nbe);
        if (dBm) memset(dBm, 0, sizeof(real) * nbs);
        if (dCm) memset(dCm, 0, sizeof(real) * nbs);
    }
    int nc = (n + L - 1) / L;
    /* parallel over channels: each task owns dA_log[e], dD[e] and its dx/ddt/dz
     * entries; dB and dC are shared by all channels, so each thread sums into
     * its own copy, added up at the end. hc holds one chunk's states:
     * hc[j] = h at step c*L + j - 1 (hc[0] the chunk's saved entry state). */
#pragma omp parallel
    {
        real *lB = calloc(nbs, sizeof(real)), *lC = calloc(nbs, sizeof(real)), *dh = malloc(sizeof(real) * S);
        real *hc = malloc(sizeof(real) * (size_t)((L < n ? L : n) + 1) * S);
        real *dac = malloc(sizeof(real) * (size_t)(L < n ? L : n) * S), *a = malloc(sizeof(real) * S);
#pragma omp for schedule(static)
        for (int e = 0; e < E; e++) {
            channel_a(a, A_log + (size_t)e * S, S);
            for (int b = 0; b < B; b++) {
                memset(dh, 0, sizeof(real) * S);
                for (int c = nc - 1; c >= 0; c--) {
                    int t0 = c * L, t1 = t0 + L < n ? t0 + L : n;
                    memcpy(hc, hs + (((size_t)b * (nc + 1) + c) * E + e) * S, sizeof(real) * S);
                    for (int t = t0; t < t1; t++) {   /* recompute the chunk's states */
                        size_t i = ((size_t)b * n + t) * E + e;
                        real *h = hc + (size_t)(t - t0 + 1) * S;
                        scan_step(h, h - S, a, Bm + ((size_t)b * n + t) * S, softplus(dt_raw[i]), x[i], S,
                                  dac + (size_t)(t - t0) * S);
                    }
                    for (int t = t1 - 1; t >= t0; t--) {
                        size_t i = ((size_t)b * n + t) * E + e, bs = ((size_t)b * n + t) * S;
                        const real *h = hc + (size_t)(t - t0 + 1) * S, *hp = h - S, *dat = dac + (size_t)(t - t0) * S;
                        real dt = softplus(dt_raw[i]), sz = sigmoid(z[i]), acc = 0;
                        for (int s = 0; s < S; s++) acc += Cm[bs + s] * h[s];
                        real pre = acc + D[e] * x[i];
                        if (dz) dz[i] += dy[i] * pre * sz * (1 + z[i] * (1 - sz));
                        real dpre = dy[i] * z[i] * sz, ddt = 0, dxi = dpre * D[e];
                        if (dD) dD[e] += dpre * x[i];
                        for (int s = 0; s < S; s++) {
                            real da = dat[s];
                            lC[bs + s] += dpre * h[s];
                            dh[s] += dpre * Cm[bs + s];
                            ddt += dh[s] * (a[s] * da * hp[s] + Bm[bs + s] * x[i]);
                            if (dA_log) dA_log[(size_t)e * S + s] += dh[s] * dt * da * hp[s] * a[s];
                            lB[bs + s] += dh[s] * dt * x[i];
                            dxi += dh[s] * dt * Bm[bs + s];
                            dh[s] *= da;   /* to step t-1 */
                        }
                        if (dx) dx[i] += dxi;
                        if (ddt_raw) ddt_raw[i] += ddt * sigmoid(dt_raw[i]);   /* softplus' = sigmoid */
                    }
                }
            }
        }
#pragma omp critical
        for (size_t k = 0; k < nbs; k++) {
            if (dBm) dBm[k] += lB[k];
            if (dCm) dCm[k] += lC[k];
        }
        free(lB); free(lC); free(dh); free(hc); free(dac); free(a);
    }
}
