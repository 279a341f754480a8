/* ssd.c - the Mamba-2 SSD scan (scalar decay per head) on the CPU.
 *
 * Recurrence (ops.h): a_t = exp(-dt_t e^{A_log}), h_t = a_t h_{t-1} + dt_t x_t B_t^T,
 * y_t = h_t C_t + D x_t, with h a [P, N] matrix per head.
 *
 * Forward: the chunked state-space-duality algorithm of the Mamba-2 paper.
 * With chunks of length L (the last one may be shorter) and the decay from
 * step s to step t written a(s, t] = prod_{s<k<=t} a_k:
 *   1. within each chunk, independently of the others:
 *        y_t  = sum_{s<=t in chunk} (C_t . B_s) a(s, t] dt_s x_s + D x_t   (the quadratic form)
 *        S_c  = sum_{s in chunk} a(s, end] dt_s x_s B_s^T            (the chunk's own state)
 *   2. between chunks, sequentially: states[c+1] = a(chunk c) states[c] + S_c
 *   3. y_t += a(start, t] (states[c] C_t)   (the state entering the chunk, decayed)
 * The decays are exponentials of sums of log a accumulated term by term (never
 * differences of long cumulative sums, which would cancel in float).
 * states [B, nchunks+1, nh, P, N]: states[c] enters chunk c, states[nchunks] is
 * the final state; the backward needs nothing else.
 *
 * MACs counted into fh_macs by the forward, per sequence, summed over its
 * chunks of length l (nfull = n / L chunks of length L, then one of r = n % L
 * if r > 0; nchunks = ceil(n / L)):
 *   C_t . B_s for the causal pairs, once per GROUP (shared by its heads):  G * N * l(l+1)/2
 *   weighted sum of dt_s x_s over those pairs, per head:                  nh * P * l(l+1)/2
 *   chunk state S_c, per head:                                            nh * P * N * l
 *   inter-chunk pass, per head (every chunk, the first included):         nh * P * N
 *   y from the entering state, per head (every chunk, the first included): nh * P * N * l
 * i.e. per sequence
 *   (G*N + nh*P) * (nfull * L(L+1)/2 + r(r+1)/2) + nh*P*N * (2n + nchunks).
 * The D x skip and the scalar decay/weight products are not counted (the
 * elementwise work, as in the other scans).
 *
 * Backward: exact, by the recurrence. Chunks are walked in reverse carrying
 * dL/dh; inside a chunk its states are recomputed step by step from the saved
 * boundary state, then the steps are differentiated in reverse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/error.h"
#include "../../core/flopcount.h"
#include "cpu_ops.h"

/* softplus that does not overflow exp for large inputs */
static inline real softplus(real x) { return x > 20 ? x : R_LOG1P(R_EXP(x)); }
static inline real sigmoid(real x) { return 1 / (1 + R_EXP(-x)); }

/* the multiply-adds the forward's loops execute (see the formula above) */
static uint64_t ssd_fwd_macs(int B, int n, int nh, int P, int G, int N, int L) {
    uint64_t m = 0;
    for (int t0 = 0; t0 < n; t0 += L) {
        uint64_t l = (uint64_t)(n - t0 < L ? n - t0 : L), pairs = l * (l + 1) / 2;
        m += (uint64_t)G * N * pairs + (uint64_t)nh * P * pairs + (uint64_t)nh * P * N * (2 * l + 1);
    }
    return m * (uint64_t)B;
}

void cpu_ssd_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                 const real *D, int B, int n, int nh, int P, int G, int N, int L) {
    int E = nh * P, CX = E + 2 * G * N, hpg = nh / G, nchunks = (n + L - 1) / L, Lc = L < n ? L : n;
    size_t PN = (size_t)P * N, nsteps = (size_t)B * n * nh;
    /* dt and log a_t of every (b, t, head), and C.B of every causal pair of every (b, chunk, group) */
    real *dt = fh_malloc(sizeof(real) * 2 * nsteps, "SSD dt and log-decay");
    real *CB = fh_malloc(sizeof(real) * B * nchunks * G * Lc * Lc, "SSD chunk C B^T");
    if (!dt || !CB) { free(dt); free(CB); return; }
    real *loga = dt + nsteps;
    for (size_t i = 0; i < nsteps; i++) {
        int hd = (int)(i % nh);
        dt[i] = softplus(dt_raw[i] + dt_bias[hd]);
        loga[i] = -dt[i] * R_EXP(A_log[hd]);
    }
#define STEP(b, t, hd) (((size_t)(b) * n + (t)) * nh + (hd))
#define ROW(b, t) (xbc + ((size_t)(b) * n + (t)) * CX)
#define STATE(b, c, hd) (states + (((size_t)(b) * (nchunks + 1) + (c)) * nh + (hd)) * PN)

    /* 1. every chunk on its own: the quadratic form and the chunk's own state */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nchunks; c++)
            for (int g = 0; g < G; g++) {
                int t0 = c * L, l = n - t0 < L ? n - t0 : L;
                real *cb = CB + (((size_t)b * nchunks + c) * G + g) * Lc * Lc;   /* cb[i*Lc + j] = C_i . B_j */
                for (int i = 0; i < l; i++)
                    for (int j = 0; j <= i; j++) {
                        const real *Ci = ROW(b, t0 + i) + E + (size_t)G * N + (size_t)g * N;
                        const real *Bj = ROW(b, t0 + j) + E + (size_t)g * N;
                        real acc = 0;
                        for (int k = 0; k < N; k++) acc += Ci[k] * Bj[k];
                        cb[i * Lc + j] = acc;
                    }
                for (int hd = g * hpg; hd < (g + 1) * hpg; hd++) {
                    for (int i = 0; i < l; i++) {
                        real *yt = y + ((size_t)b * n + t0 + i) * E + (size_t)hd * P;
                        const real *xt = ROW(b, t0 + i) + (size_t)hd * P;
                        for (int p = 0; p < P; p++) yt[p] = D[hd] * xt[p];
                        real seg = 0;   /* log a(j, i]: walking j down adds log a_{j+1} */
                        for (int j = i; j >= 0; j--) {
                            if (j < i) seg += loga[STEP(b, t0 + j + 1, hd)];
                            real w = cb[i * Lc + j] * R_EXP(seg) * dt[STEP(b, t0 + j, hd)];
                            const real *xs = ROW(b, t0 + j) + (size_t)hd * P;
                            for (int p = 0; p < P; p++) yt[p] += w * xs[p];
                        }
                    }
                    /* S_c = sum_j a(j, end] dt_j x_j B_j^T, written where the pass below adds the carry */
                    real *S = STATE(b, c + 1, hd);
                    memset(S, 0, sizeof(real) * PN);
                    real seg = 0;   /* log a(j, end] */
                    for (int j = l - 1; j >= 0; j--) {
                        if (j < l - 1) seg += loga[STEP(b, t0 + j + 1, hd)];
                        real w = R_EXP(seg) * dt[STEP(b, t0 + j, hd)];
                        const real *row = ROW(b, t0 + j), *xs = row + (size_t)hd * P, *Bs = row + E + (size_t)g * N;
                        for (int p = 0; p < P; p++) {
                            real wx = w * xs[p], *Sp = S + (size_t)p * N;
                            for (int k = 0; k < N; k++) Sp[k] += wx * Bs[k];
                        }
                    }
                }
            }

    /* 2. the inter-chunk recurrence: states[c+1] = a(whole chunk c) states[c] + S_c */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int hd = 0; hd < nh; hd++) {
            memset(STATE(b, 0, hd), 0, sizeof(real) * PN);
            for (int c = 0; c < nchunks; c++) {
                int t0 = c * L, t1 = n < t0 + L ? n : t0 + L;
                real seg = 0;
                for (int t = t0; t < t1; t++) seg += loga[STEP(b, t, hd)];
                real a = R_EXP(seg);
                const real *prev = STATE(b, c, hd);
                real *next = STATE(b, c + 1, hd);
                for (size_t e = 0; e < PN; e++) next[e] += a * prev[e];
            }
        }

    /* 3. the contribution of the state entering each chunk: y_t += a(start, t] states[c] C_t */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < nchunks; c++)
            for (int hd = 0; hd < nh; hd++) {
                int t0 = c * L, t1 = n < t0 + L ? n : t0 + L, g = hd / hpg;
                const real *h = STATE(b, c, hd);
                real seg = 0;   /* log a(start, t], inclusive of step t */
                for (int t = t0; t < t1; t++) {
                    seg += loga[STEP(b, t, hd)];
                    real decay = R_EXP(seg);
                    const real *Ct = ROW(b, t) + E + (size_t)G * N + (size_t)g * N;
                    real *yt = y + ((size_t)b * n + t) * E + (size_t)hd * P;
                    for (int p = 0; p < P; p++) {
                        real acc = 0;
                        for (int k = 0; k < N; k++) acc += h[(size_t)p * N + k] * Ct[k];
                        yt[p] += decay * acc;
                    }
                }
            }
#undef STEP
#undef ROW
#undef STATE
    fh_count_macs(ssd_fwd_macs(B, n, nh, P, G, N, L));
    free(dt);
    free(CB);
}

void cpu_ssd_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy,
                 const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                 const real *D, int B, int n, int nh, int P, int G, int N, int L, int acc) {
    int E = nh * P, CX = E + 2 * G * N, hpg = nh / G, nchunks = (n + L - 1) / L, Lc = L < n ? L : n;
    if (!acc) {   /* sums over the state and the group's heads: overwriting is accumulating into zeros */
        if (dxbc) memset(dxbc, 0, sizeof(real) * B * n * CX);
        if (ddt_raw) memset(ddt_raw, 0, sizeof(real) * B * n * nh);
    }
    size_t PN = (size_t)P * N;
    /* Parallel over (sequence, group): an iteration owns the B and C channels
     * of its group and the x channels and dt of its heads, in its sequence.
     * The per-head parameter gradients are shared by all sequences, so they
     * go to per-sequence slots pgrad[3][B][nh], summed at the end. Each
     * iteration also needs the states of one chunk and dL/dh. */
    real *pgrad = fh_calloc((size_t)3 * B * nh, sizeof(real), "SSD backward parameter gradients");
    real *work = fh_malloc(sizeof(real) * (size_t)B * G * (Lc + 2) * PN, "SSD backward chunk states");
    if (!pgrad || !work) { free(pgrad); free(work); return; }
    real *g_bias = pgrad, *g_Alog = pgrad + (size_t)B * nh, *g_D = pgrad + (size_t)2 * B * nh;

#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            real *hbuf = work + ((size_t)b * G + g) * (Lc + 2) * PN;   /* hbuf[k]: state after step t0+k-1 */
            real *dh = hbuf + (size_t)(Lc + 1) * PN;                  /* dL/dh after the current step */
            for (int hd = g * hpg; hd < (g + 1) * hpg; hd++) {
                real Ae = R_EXP(A_log[hd]);
                memset(dh, 0, sizeof(real) * PN);
                for (int c = nchunks - 1; c >= 0; c--) {
                    int t0 = c * L, t1 = n < t0 + L ? n : t0 + L;
                    /* recompute the chunk's states from the saved boundary state */
                    memcpy(hbuf, states + (((size_t)b * (nchunks + 1) + c) * nh + hd) * PN, sizeof(real) * PN);
                    for (int t = t0; t < t1; t++) {
                        const real *row = xbc + ((size_t)b * n + t) * CX, *Bv = row + E + (size_t)g * N;
                        real dt = softplus(dt_raw[((size_t)b * n + t) * nh + hd] + dt_bias[hd]), a = R_EXP(-dt * Ae);
                        const real *prev = hbuf + (size_t)(t - t0) * PN;
                        real *cur = hbuf + (size_t)(t - t0 + 1) * PN;
                        for (int p = 0; p < P; p++)
                            for (int k = 0; k < N; k++)
                                cur[(size_t)p * N + k] = a * prev[(size_t)p * N + k] + dt * row[(size_t)hd * P + p] * Bv[k];
                    }
                    /* differentiate the steps in reverse */
                    for (int t = t1 - 1; t >= t0; t--) {
                        size_t ti = ((size_t)b * n + t) * nh + hd;
                        const real *row = xbc + ((size_t)b * n + t) * CX;
                        const real *Bv = row + E + (size_t)g * N, *Cv = row + E + (size_t)G * N + (size_t)g * N;
                        const real *dyt = dy + ((size_t)b * n + t) * E + (size_t)hd * P;
                        real *drow = dxbc ? dxbc + ((size_t)b * n + t) * CX : NULL;
                        real u = dt_raw[ti] + dt_bias[hd], dt = softplus(u), a = R_EXP(-dt * Ae);
                        const real *hcur = hbuf + (size_t)(t - t0 + 1) * PN, *hprev = hcur - PN;
                        real ddt = 0, da = 0;
                        for (int p = 0; p < P; p++) {
                            real dyv = dyt[p], xv = row[(size_t)hd * P + p], dxv = dyv * D[hd];
                            g_D[(size_t)b * nh + hd] += dyv * xv;
                            for (int k = 0; k < N; k++) {
                                size_t pk = (size_t)p * N + k;
                                real d = dh[pk] + dyv * Cv[k];   /* dL/dh_t: from later steps and from y_t */
                                if (drow) {
                                    drow[E + (size_t)G * N + (size_t)g * N + k] += dyv * hcur[pk];   /* dC_t */
                                    drow[E + (size_t)g * N + k] += d * dt * xv;                       /* dB_t */
                                }
                                da += d * hprev[pk];
                                ddt += d * xv * Bv[k];
                                dxv += d * dt * Bv[k];
                                dh[pk] = d * a;   /* on to h_{t-1} */
                            }
                            if (drow) drow[(size_t)hd * P + p] += dxv;
                        }
                        /* a = exp(-dt e^{A_log}): da/ddt = -e^{A_log} a, da/dA_log = -dt e^{A_log} a */
                        ddt += da * -Ae * a;
                        g_Alog[(size_t)b * nh + hd] += da * -dt * Ae * a;
                        real du = ddt * sigmoid(u);   /* softplus' = sigmoid */
                        if (ddt_raw) ddt_raw[ti] += du;
                        g_bias[(size_t)b * nh + hd] += du;
                    }
                }
            }
        }

    for (int b = 0; b < B; b++)
        for (int hd = 0; hd < nh; hd++) {
            if (ddt_bias) ddt_bias[hd] += g_bias[(size_t)b * nh + hd];
            if (dA_log) dA_log[hd] += g_Alog[(size_t)b * nh + hd];
            if (dD) dD[hd] += g_D[(size_t)b * nh + hd];
        }
    free(pgrad);
    free(work);
}
