/* selective_scan.cu - Mamba-1 selective scan fused with softplus(dt), the D
 * skip and the SiLU(z) gate (contract in ops.h): h_t = a_t h_{t-1} + u_t per
 * (batch b, channel e, state s), a_t = exp(dt_t A_s), u_t = dt_t B_t[s] x_t.
 *
 * Layout: one thread per (b, e, s). A channel's S states sit in a group of G
 * lanes of one warp (G = S rounded up to a power of two, at most 32; S > 32
 * gives each lane SPL = S/32 states), so the 16 states of Mamba give two
 * channels per warp and B*E*S threads (196K at B=8, E=1536, S=16): enough to
 * fill the GPU while each thread walks its sequence in order. Sums over s are
 * shuffles inside the group. The per-(b, t, e) scalars (softplus, gate) are
 * computed once per group, not once per state: time goes in blocks of G
 * steps, lane g works out step t0+g's scalars, and the block's steps then
 * broadcast them from lane j with a shuffle; the block's sums over s are
 * reduce-scattered at its end, so lane g gets step t0+g's sum.
 *
 * Memory: the forward stores the state only at chunk boundaries (every L
 * steps, hs [B, nchunks+1, E, S]). The backward walks the chunks from last to
 * first carrying dL/dh; per chunk it recomputes the chunk's L states from the
 * saved entry state into shared memory (one column per thread), then walks
 * them in reverse. With dyy = dy silu(z) and dh_t = Cm_t dyy + a_{t+1} dh_{t+1}:
 *   dx += sum_s dh dt Bm + D dyy;  ddt = sum_s dh (A a h_{t-1} + Bm x);
 *   dA  += dh dt a h_{t-1};        dBm += dh dt x;  dCm += dyy h_t.
 * dBm/dCm are shared by all channels: summed over the warp's channels with
 * shuffles, over the block's in a shared-memory tile of the chunk, and added
 * to global memory once per block and chunk.
 *
 * Decay: a_t = exp(dt A) is one MUFU.EX2 (ex2.approx) of dt A log2(e), with
 * A log2(e) formed once per thread, instead of the accurate expf (~15
 * instructions with its range reduction) on the recurrence's critical path.
 * ex2.approx has a relative error of ~2^-22; the accurate expf already takes
 * the rounded product dt A (relative error |dt A| 2^-24 in a), so the extra
 * error is a few ulp per step and, varying in sign from step to step, grows
 * like sqrt of the state's memory length (docs/perf-notes.md). Building with
 * -DSCAN_ACCURATE_EXP restores expf (for measuring the difference).
 *
 * Backward in time segments: one block per (channels, b) walking all n steps
 * gives 768 blocks at the 135M shape, 1.45 waves at 4 resident blocks per SM,
 * and the second wave runs at a third of the occupancy for a whole block
 * time. The host splits time into K segments of whole chunks (K chosen from
 * the occupancy, below). dL/dh is linear in dy, so the register carried out
 * of segment j (after its first step) is R_j + P_j c_j: R_j the value from
 * zero carry-in, P_j = prod of a_t over the segment = exp(A sum dt), c_j the
 * carry into it from segment j+1. A light pass (scan_bwd_carry_kernel) walks
 * segments 1..K-1 for R_j and sum dt; each backward block then folds the
 * later segments' (R_j, P_j) into its own starting dL/dh. */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define SCAN_THREADS 256
/* resident backward blocks per SM asked of ptxas (S <= 32): 4 x 256 threads
 * at 64 registers, no spills (5 would need 48 and spills) */
#ifndef SCAN_BWD_MINB
#define SCAN_BWD_MINB 4
#endif

#ifdef SCAN_ACCURATE_EXP
#define SCAN_DECAY_SCALE 1.0f
__device__ __forceinline__ float scan_decay(float x) { return expf(x); }
#else
#define SCAN_DECAY_SCALE 1.4426950408889634f /* log2(e): a = 2^(dt A log2 e) */
__device__ __forceinline__ float scan_decay(float x2) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x2));
    return r;
}
#endif

/* dBm/dCm sums of the backward: with one state per lane and G <= 16, each
 * warp writes its per-step sums to a [warp][G][32] shared stage with plain
 * stores and the block sums the 8 rows every G steps; shared-memory float
 * atomicAdd has no native instruction on sm_90 (it is an LDS + ATOMS.CAST
 * compare-and-swap loop, contended by the block's 8 warps), which the
 * per-chunk tile (used for S > 16) pays twice per step. */
__host__ __device__ constexpr bool scan_staged(int G, int SPL) { return G <= 16 && SPL == 1; }

/* sum over the G lanes of a group (every lane gets it) */
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, G);
    return v;
}

/* Reduce-scatter over a group: lane g gets sum over the group's lanes of
 * v[g]. Each halving round sends the half of v the lane does not keep, so G
 * sums cost G-1 shuffles instead of G log2(G). */
template <int G>
__device__ __forceinline__ float group_sum_scatter(float (&v)[G], int g) {
#pragma unroll
    for (int w = G / 2; w >= 1; w >>= 1) {
        bool up = g & w;
#pragma unroll
        for (int i = 0; i < w; i++) {
            float send = up ? v[i] : v[i + w], keep = up ? v[i + w] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, w, G);
        }
    }
    return v[0];
}

/* Lanes of one thread: lane g of channel ch (clamped to E-1 so that a block's
 * tail groups still take part in the shuffles; `live` says whether it writes). */
template <int G>
struct ScanLane {
    int g, e, live;
    __device__ ScanLane(int E) {
        int ch = blockIdx.x * (SCAN_THREADS / G) + threadIdx.x / G;
        g = threadIdx.x % G;
        live = ch < E;
        e = live ? ch : E - 1;
    }
};

template <int G, int SPL>
__global__ void __launch_bounds__(SCAN_THREADS, SPL == 1 && G >= 16 ? 6 : 1)  /* 40 registers, no spills: 6 blocks per SM
                                                               * put the 135M shape's 768 blocks in one wave */
scan_fwd_kernel(float *y, float *hs, const float *x, const float *dt_raw, const float *A_log, const float *Bm,
                const float *Cm, const float *D, const float *z, int n, int E, int S, int L) {
    ScanLane<G> ln(E);
    int b = blockIdx.y, nc = (n + L - 1) / L;
    float A2[SPL], h[SPL];  /* A2 = A log2(e): the decay's exponent in base 2 */
    const float *Bb = Bm + (size_t)b * n * S + ln.g, *Cb = Cm + (size_t)b * n * S + ln.g;  /* + t*S + G*k */
#pragma unroll
    for (int k = 0; k < SPL; k++) {
        int s = ln.g + G * k;
        A2[k] = s < S ? -expf(A_log[(size_t)ln.e * S + s]) * SCAN_DECAY_SCALE : 0.f;
        h[k] = 0.f;
    }
    float *hsb = hs + (size_t)b * (nc + 1) * E * S + (size_t)ln.e * S;  /* + c*E*S + s */
#pragma unroll
    for (int k = 0; k < SPL; k++)
        if (ln.live && ln.g + G * k < S) hsb[ln.g + G * k] = 0.f;
    int save = min(L, n);  /* the next chunk boundary: the state after step save-1 is kept */
    for (int t0 = 0; t0 < n; t0 += G) {
        /* this lane's step t0+g: its scalars. Steps past the end get dt = 0
         * (a = 1, u = 0: h unchanged), so a block never branches per step. */
        int tm = t0 + ln.g;
        size_t im = ((size_t)b * n + min(tm, n - 1)) * E + ln.e;
        float dtm = tm < n ? softplusf_(dt_raw[im]) : 0.f, xm = x[im], dtxm = dtm * xm, pj[G];
        auto step = [&](int j) {
            int ts = min(t0 + j, n - 1) * S;
            float dt = __shfl_sync(0xffffffffu, dtm, j, G), dtx = __shfl_sync(0xffffffffu, dtxm, j, G), p = 0.f;
#pragma unroll
            for (int k = 0; k < SPL; k++) {
                if (ln.g + G * k < S) {
                    h[k] = fmaf(scan_decay(dt * A2[k]), h[k], dtx * Bb[ts + G * k]);
                    p = fmaf(Cb[ts + G * k], h[k], p);
                }
            }
            pj[j] = p;
        };
        auto keep = [&](int t) {  /* after step t: the state entering chunk (t+1)/L (or the final one) */
            float *dst = hsb + (size_t)((t + L) / L) * E * S;
#pragma unroll
            for (int k = 0; k < SPL; k++)
                if (ln.live && ln.g + G * k < S) dst[ln.g + G * k] = h[k];
            save = min(save + L, n);
        };
        int tend = min(t0 + G, n);
        if (save >= tend) {  /* no chunk boundary inside the block */
#pragma unroll
            for (int j = 0; j < G; j++) step(j);
            if (save == tend) keep(tend - 1);
        } else {
#pragma unroll
            for (int j = 0; j < G; j++) {
                step(j);
                if (t0 + j + 1 == save) keep(t0 + j);
            }
        }
        float prem = group_sum_scatter<G>(pj, ln.g);  /* C_t . h_t of this lane's step */
        if (ln.live && tm < n) {
            float zv = z[im];
            y[im] = (prem + D[ln.e] * xm) * zv * sigmoidf_(zv);
        }
    }
}

/* The carry pass: for time segment seg = blockIdx.z + 1 (segment 0's carry
 * is never needed), the dL/dh register its backward walk would leave from a
 * zero start (R, [B][K][E][S]) and the segment's sum of dt (sdt, [B][K][E]).
 * The same per-step update as scan_bwd_kernel: dh = (dh + C dyy) a. */
template <int G, int SPL>
__global__ void __launch_bounds__(SCAN_THREADS)
scan_bwd_carry_kernel(float *R, float *sdt, const float *dy, const float *dt_raw, const float *A_log,
                      const float *Cm, const float *z, int n, int E, int S, int L, int cps, int K) {
    ScanLane<G> ln(E);
    int b = blockIdx.y, seg = blockIdx.z + 1, t_lo = seg * cps * L, t_hi = min(n, t_lo + cps * L);
    float A2[SPL], dh[SPL], sd = 0.f;
    const float *Cb = Cm + (size_t)b * n * S + ln.g;
#pragma unroll
    for (int k = 0; k < SPL; k++) {
        int s = ln.g + G * k;
        A2[k] = s < S ? -expf(A_log[(size_t)ln.e * S + s]) * SCAN_DECAY_SCALE : 0.f;
        dh[k] = 0.f;
    }
    for (int te = t_hi; te > t_lo; te -= G) {
        int ts = te - G, tm = ts + ln.g, on = tm >= t_lo;  /* steps before the segment: dt = dyy = 0 */
        size_t im = ((size_t)b * n + max(tm, t_lo)) * E + ln.e;
        float zm = z[im], dtm = on ? softplusf_(dt_raw[im]) : 0.f, dyym = on ? dy[im] * zm * sigmoidf_(zm) : 0.f;
        sd += dtm;
#pragma unroll
        for (int jj = 0; jj < G; jj++) {
            int j = G - 1 - jj, tS = max(ts + j, t_lo) * S;
            float dt = __shfl_sync(0xffffffffu, dtm, j, G), dyy = __shfl_sync(0xffffffffu, dyym, j, G);
#pragma unroll
            for (int k = 0; k < SPL; k++)
                if (ln.g + G * k < S) dh[k] = fmaf(Cb[tS + G * k], dyy, dh[k]) * scan_decay(dt * A2[k]);
        }
    }
    sd = group_sum<G>(sd);
    size_t q = ((size_t)b * K + seg) * E + ln.e;
    if (ln.live) {
#pragma unroll
        for (int k = 0; k < SPL; k++)
            if (ln.g + G * k < S) R[q * S + ln.g + G * k] = dh[k];
        if (ln.g == 0) sdt[q] = sd;
    }
}

template <int G, int SPL>
__global__ void __launch_bounds__(SCAN_THREADS, SPL == 1 ? SCAN_BWD_MINB : 1)
scan_bwd_kernel(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD, float *dz,
                const float *dy, const float *hs, const float *x, const float *dt_raw, const float *A_log,
                const float *Bm, const float *Cm, const float *D, const float *z, int n, int E, int S, int L,
                const float *cR, const float *csdt, int cps, int K, int acc) {
    constexpr bool STAGED = scan_staged(G, SPL);
    extern __shared__ float smem[];
    float *hsm = smem;                                   /* [L][SPL][SCAN_THREADS]: the chunk's states */
    float *tB = hsm + (size_t)L * SPL * SCAN_THREADS;    /* [L][S]: the block's dBm for the chunk */
    float *tC = tB + (size_t)L * S;                      /* [L][S]: dCm */
    float *stage = tB;                                   /* STAGED: [warp][G][32] instead of tB, tC */
    ScanLane<G> ln(E);
    int b = blockIdx.y, nc = (n + L - 1) / L, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int seg = blockIdx.z, c_lo = seg * cps, c_hi = min(nc, c_lo + cps);  /* this block's chunks */
    if (!STAGED)
        for (int i = tid; i < 2 * L * S; i += SCAN_THREADS) tB[i] = 0.f;
    float A[SPL], A2[SPL], dh[SPL], dA[SPL], hin[SPL];
    const float *Bb = Bm + (size_t)b * n * S + ln.g, *Cb = Cm + (size_t)b * n * S + ln.g;  /* + t*S + G*k */
#pragma unroll
    for (int k = 0; k < SPL; k++) {
        int s = ln.g + G * k;
        A[k] = s < S ? -expf(A_log[(size_t)ln.e * S + s]) : 0.f;
        A2[k] = A[k] * SCAN_DECAY_SCALE;
        dh[k] = dA[k] = 0.f;
    }
    /* dL/dh entering this segment from the later ones: c_j = R_{j+1} + P_{j+1} c_{j+1}.
     * Dead lanes (channel clamped to E-1) keep dh = 0: they still add dBv = dh dt x into the sums. */
    for (int j = K - 1; ln.live && j > seg; j--) {
        size_t q = ((size_t)b * K + j) * E + ln.e;
        float sd = csdt[q];
#pragma unroll
        for (int k = 0; k < SPL; k++)
            if (ln.g + G * k < S) dh[k] = fmaf(scan_decay(sd * A2[k]), dh[k], cR[q * S + ln.g + G * k]);
    }
    float De = D[ln.e], dDacc = 0.f;
    const float *hsb = hs + (size_t)b * (nc + 1) * E * S + (size_t)ln.e * S;
    __syncthreads();
    for (int c = c_hi - 1; c >= c_lo; c--) {
        int t0 = c * L, t1 = min(t0 + L, n);
        /* 1. recompute the chunk's states h_t, t in [t0, t1), from its entry state */
        float h[SPL];
#pragma unroll
        for (int k = 0; k < SPL; k++) {
            int s = ln.g + G * k;
            hin[k] = h[k] = s < S ? hsb[(size_t)c * E * S + s] : 0.f;
        }
        for (int tb = t0; tb < t1; tb += G) {
            int tm = tb + ln.g;  /* steps past the chunk: dt = 0 leaves h alone */
            size_t im = ((size_t)b * n + min(tm, t1 - 1)) * E + ln.e;
            float dtm = tm < t1 ? softplusf_(dt_raw[im]) : 0.f, dtxm = dtm * x[im];
#pragma unroll
            for (int j = 0; j < G; j++) {
                int t = min(tb + j, t1 - 1);
                float dt = __shfl_sync(0xffffffffu, dtm, j, G), dtx = __shfl_sync(0xffffffffu, dtxm, j, G);
#pragma unroll
                for (int k = 0; k < SPL; k++) {
                    if (ln.g + G * k < S) h[k] = fmaf(scan_decay(dt * A2[k]), h[k], dtx * Bb[t * S + G * k]);
                    if (tb + j < t1) hsm[((size_t)(t - t0) * SPL + k) * SCAN_THREADS + tid] = h[k];
                }
            }
        }
        /* 2. walk the chunk in reverse, G steps at a time (lane g owns step ts+g) */
        for (int te = t1; te > t0; te -= G) {
            /* lane g owns step ts+g; steps before the chunk (ts < t0 in its
             * first block) get dt = dyy = 0, which makes them add nothing */
            int ts = te - G, tm = ts + ln.g, on = tm >= t0;
            size_t im = ((size_t)b * n + max(tm, t0)) * E + ln.e;
            float dtrm = dt_raw[im], dtm = on ? softplusf_(dtrm) : 0.f, xm = x[im], zm = z[im], dym = dy[im];
            float sgm = sigmoidf_(zm), dyym = ln.live && on ? dym * zm * sgm : 0.f;  /* dead lanes add nothing */
            float pj[G], dxm = 0.f, ddtm = 0.f;  /* pj: this lane's share of step j's C_t . h_t */
#pragma unroll
            for (int jj = 0; jj < G; jj++) {
                int j = G - 1 - jj, t = max(ts + j, t0);
                float dt = __shfl_sync(0xffffffffu, dtm, j, G), xv = __shfl_sync(0xffffffffu, xm, j, G);
                float dyy = __shfl_sync(0xffffffffu, dyym, j, G);
                float pp = 0.f, dxp = 0.f, ddtp = 0.f;
#pragma unroll
                for (int k = 0; k < SPL; k++) {
                    int s = ln.g + G * k;
                    float ht = hsm[((size_t)(t - t0) * SPL + k) * SCAN_THREADS + tid];
                    float hp = ts + j > t0 ? hsm[((size_t)(t - 1 - t0) * SPL + k) * SCAN_THREADS + tid] : hin[k];
                    float Bv = s < S ? Bb[t * S + G * k] : 0.f, Cv = s < S ? Cb[t * S + G * k] : 0.f;
                    float a = scan_decay(dt * A2[k]);
                    pp += Cv * ht;
                    dh[k] += Cv * dyy;
                    float dBv = dh[k] * dt * xv, dCv = dyy * ht;
                    dxp += dh[k] * dt * Bv;
                    ddtp += dh[k] * (A[k] * a * hp + Bv * xv);
                    dA[k] += dh[k] * dt * a * hp;
                    dh[k] *= a;  /* on to h_{t-1} */
                    /* dBm, dCm: over the warp's channels, then into the block's tile */
#pragma unroll
                    for (int o = G; o < 32; o <<= 1) {
                        dBv += __shfl_xor_sync(0xffffffffu, dBv, o);
                        dCv += __shfl_xor_sync(0xffffffffu, dCv, o);
                    }
                    if constexpr (STAGED) {
                        /* every lane now holds its s's sums over the warp's channels: lanes with
                         * bit G clear keep dBm's, the others dCm's (G <= 16: both kinds exist) */
                        stage[(warp * G + j) * 32 + lane] = (lane & G) ? dCv : dBv;
                    } else if (lane < G && s < S) {
                        atomicAdd(&tB[(t - t0) * S + s], dBv);
                        atomicAdd(&tC[(t - t0) * S + s], dCv);
                    }
                }
                pj[j] = pp;
                dxp = group_sum<G>(dxp);
                ddtp = group_sum<G>(ddtp);
                if (ln.g == j) { dxm = dxp; ddtm = ddtp; }
            }
            if constexpr (STAGED) {
                /* the block's dBm/dCm of these G steps: sum the warps' rows, one global
                 * atomic per (t, s) and block (as many as the per-chunk tile flush made) */
                __syncthreads();
                for (int i = tid; i < 2 * G * G; i += SCAN_THREADS) {
                    int j = i / (2 * G), l = i % (2 * G), s = l % G, t = ts + j;
                    float *dst = l < G ? dBm : dCm;
                    if (dst && t >= t0 && s < S) {
                        float v = 0.f;
#pragma unroll
                        for (int w = 0; w < SCAN_THREADS / 32; w++) v += stage[(w * G + j) * 32 + l];
                        atomicAdd(&dst[((size_t)b * n + t) * S + s], v);
                    }
                }
                __syncthreads();  /* the stage is rewritten by the next G steps */
            }
            float prem = group_sum_scatter<G>(pj, ln.g);
            if (ln.live && on) {
                /* this lane alone writes step tm of channel e: acc 0 stores (ops.h) */
                float gz = dym * (prem + De * xm) * sgm * (1.f + zm * (1.f - sgm)), gx = dxm + De * dyym;
                float gdt = ddtm * sigmoidf_(dtrm);  /* softplus' = sigmoid */
                if (dz) dz[im] = acc ? dz[im] + gz : gz;
                if (dx) dx[im] = acc ? dx[im] + gx : gx;
                if (ddt_raw) ddt_raw[im] = acc ? ddt_raw[im] + gdt : gdt;
                dDacc += dyym * xm;
            }
        }
        /* 3. the block's dBm/dCm of this chunk into global memory; tiles reset */
        if (STAGED) continue;  /* done per G steps; hsm is per-thread, no barrier needed */
        __syncthreads();
        size_t base = ((size_t)b * n + t0) * S;
        for (int i = tid; i < (t1 - t0) * S; i += SCAN_THREADS) {
            if (dBm) atomicAdd(&dBm[base + i], tB[i]);
            if (dCm) atomicAdd(&dCm[base + i], tC[i]);
            tB[i] = tC[i] = 0.f;
        }
        __syncthreads();
    }
    if (dA_log && ln.live) {  /* A = -exp(A_log): dA_log = dA A */
#pragma unroll
        for (int k = 0; k < SPL; k++) {
            int s = ln.g + G * k;
            if (s < S) atomicAdd(&dA_log[(size_t)ln.e * S + s], dA[k] * A[k]);
        }
    }
    dDacc = group_sum<G>(dDacc);
    if (dD && ln.live && ln.g == 0) atomicAdd(&dD[ln.e], dDacc);
}

/* ---- the register-resident kernels (selective_scan_reg.cuh; the default) and their primitives ---- */
__device__ __forceinline__ void sr_cp4(float *dst, const float *src, bool valid) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sa), "l"(src), "r"(valid ? 4 : 0));
}
/* 16 bytes, L2 only (.cg): both addresses 16-byte aligned */
__device__ __forceinline__ void sr_cp16(float *dst, const float *src) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(src));
}
/* prefetch hints (no data, no fault on the in-range addresses given) */
__device__ __forceinline__ void sr_pf_l1(const float *p) { asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p)); }
__device__ __forceinline__ void sr_pf_l2(const float *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }
__device__ __forceinline__ void sr_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void sr_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void sr_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
__device__ __forceinline__ float *sr_smem() {
    extern __shared__ float4 sr_smem4[];
    return (float *)sr_smem4;
}
#include "selective_scan_reg.cuh"

/* shared memory of the register-resident kernels */
static const size_t SR_FWD_SMEM = sizeof(float) * 2 * SrTile<3, false, SR_TF>::SIZE;
static const size_t SR_BWD_SMEM =
    sizeof(float) * (2 * SrTile<4, true>::SIZE + SR_T * 32 + (SR_T / SR_LS - 1) * SR_S * 32);
static const size_t SR_BWD_LOW_SMEM = sizeof(float) * (4 * SR_T * 32 + (SR_T / SR_LS - 1) * SR_S * 32);

/* the carry / segment passes' output */
static float *scan_scratch(size_t n) {
    static BranchScratch s;
    return (float *)cuda_branch_scratch(&s, sizeof(float) * n, "the scan's carry scratch");
}

/* -1: not read yet; FLOWHN_SCAN1=old selects the thread-per-state kernels (cuda_ops.h) */
static int scan1_new = -1;
int cuda_set_scan1_kernels(int on) { return cuda_env_switch(&scan1_new, "FLOWHN_SCAN1", "old", 1, on); }

/* -1: not read yet; the register backward (cuda_ops.h): 5 the pair kernel with the dense
 * per-(t, e) work (default), 3 the session-10 pair kernel (=pair), 4 that at 12 warps/SM
 * (=pair12), 2 the V2 one (=v2), 1 the session-8 30 KB one (=low), 0 the 63.7 KB layout (=nosplit) */
static int scan1_bwd_mode = -1;
int cuda_set_scan1_bwd(int mode) {
    if (scan1_bwd_mode < 0) {
        const char *e = getenv("FLOWHN_SCAN1_BWD");
        scan1_bwd_mode = e && !strcmp(e, "nosplit") ? 0 : e && !strcmp(e, "low") ? 1 : e && !strcmp(e, "v2") ? 2
                      : e && !strcmp(e, "pair12") ? 4 : e && !strcmp(e, "pair") ? 3 : 5;
    }
    int was = scan1_bwd_mode;
    if (mode >= 0) scan1_bwd_mode = mode > 5 ? 5 : mode;
    return was;
}

/* resident one-warp blocks of a kernel on the whole GPU (0 if unknown) */
static long sr_slots(const void *fn, size_t smem) {
    int dev = 0, nsm = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, 32, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return (long)nsm * per_sm;
}

/* time segments of the register-resident kernels (sr_segments), 1 where the occupancy is unknown */
static int sr_split(const void *main_fn, size_t smem, const void *seg_fn, long w, int nc, int n, double c1, int *cps) {
    long slots = sr_slots(main_fn, smem), slots1 = sr_slots(seg_fn, 0);
    if (slots <= 0 || slots1 <= 0) {
        *cps = nc;
        return 1;
    }
    return sr_segments(w, slots, slots1, nc, n, c1, cps);
}

/* Kernel set for a state count: G lanes per channel, SPL states per lane. */
typedef void (*ScanFwdFn)(float *, float *, const float *, const float *, const float *, const float *,
                          const float *, const float *, const float *, int, int, int, int);
typedef void (*ScanBwdFn)(float *, float *, float *, float *, float *, float *, float *, const float *,
                          const float *, const float *, const float *, const float *, const float *, const float *,
                          const float *, const float *, int, int, int, int, const float *, const float *, int, int,
                          int);
typedef void (*ScanCarryFn)(float *, float *, const float *, const float *, const float *, const float *,
                            const float *, int, int, int, int, int, int);
typedef struct { int G, SPL; ScanFwdFn fwd; ScanBwdFn bwd; ScanCarryFn carry; } ScanKernels;

static int scan_kernels(int S, int L, ScanKernels *k, size_t *smem, const char *what) {
#define SCAN_K(g, spl) \
    *k = (ScanKernels){g, spl, scan_fwd_kernel<g, spl>, scan_bwd_kernel<g, spl>, scan_bwd_carry_kernel<g, spl>}
    if (S <= 4) SCAN_K(4, 1);
    else if (S <= 8) SCAN_K(8, 1);
    else if (S <= 16) SCAN_K(16, 1);
    else if (S <= 32) SCAN_K(32, 1);
    else if (S <= 64) SCAN_K(32, 2);
    else if (S <= 128) SCAN_K(32, 4);
    else {
        cuda_record_error(what, "d_state > 128 is not supported by the scan kernels", __FILE__, __LINE__);
        return -1;
    }
#undef SCAN_K
    if (L < 1) {
        cuda_record_error(what, "the chunk length L must be >= 1", __FILE__, __LINE__);
        return -1;
    }
    *smem = sizeof(float) * ((size_t)L * k->SPL * SCAN_THREADS +
                             (scan_staged(k->G, k->SPL) ? (size_t)(SCAN_THREADS / 32) * k->G * 32 : 2 * (size_t)L * S));
    return 0;
}

/* Time segments for the backward: the K (1..8, each a whole number of
 * chunks, no empty one) that minimizes the modeled time, in units of one
 * block walking all n steps: whole waves of K-times-shorter blocks, plus the
 * carry pass, which walks (K-1)/K of the sequence at ~1/10 of the backward's
 * work per step (a decay and an FMA per state, no states, no sums). */
static int scan_segments(const ScanKernels &k, size_t smem, long blocks, int nc) {
    int dev = 0, nsm = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k.bwd, SCAN_THREADS, smem) != cudaSuccess || nsm * per_sm <= 0) {
        (void)cudaGetLastError();
        return 1;
    }
    double slots = (double)nsm * per_sm, best = 1e30;
    int K = 1;
    for (int q = 1; q <= 8 && q <= nc; q++) {
        int cps = (nc + q - 1) / q;
        if ((nc + cps - 1) / cps != q) continue;  /* q segments of cps chunks would leave one empty */
        double cost = ceil(blocks * q / slots) / q + 0.1 * (q - 1) / q * (blocks / slots);
        if (cost < best - 1e-9) best = cost, K = q;
    }
    return K;
}


void cuda_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S, int L) {
    ScanKernels k;
    size_t smem;
    if (B <= 0 || n <= 0 || E <= 0 || scan_kernels(S, L, &k, &smem, "selective_scan_fwd")) return;
    if (S <= SR_S && cuda_set_scan1_kernels(-1)) {
        /* c1 0.8: the segment pass has 16 of the forward's ~20 MUFU per step and no stores */
        int gx = blocks_for((size_t)E, 32), nc = (n + L - 1) / L, cps;
        int K = sr_split((const void *)scan_fwd_reg_kernel, SR_FWD_SMEM, (const void *)scan_fwd_seg_kernel,
                         (long)gx * B, nc, n, 0.8, &cps);
        float *cR = NULL, *csd = NULL;
        if (K > 1) {
            cR = scan_scratch((size_t)B * K * E * (S + 1));
            if (!cR) return;
            csd = cR + (size_t)B * K * E * S;
            scan_fwd_seg_kernel<<<dim3(gx, B, K - 1), 32, 0, cuda_stream()>>>(cR, csd, x, dt_raw, A_log, Bm, n, E, S,
                                                                              cps * L, K);
            CUDA_LAUNCHED();
        }
        scan_fwd_reg_kernel<<<dim3(gx, B, K), 32, SR_FWD_SMEM, cuda_stream()>>>(y, hs, x, dt_raw, A_log, Bm, Cm, D, z,
                                                                                  n, E, S, L, cR, csd, cps, K);
        CUDA_LAUNCHED();
        fh_count_macs((uint64_t)3 * n * E * S * B);
        return;
    }
    dim3 grid(blocks_for((size_t)E, SCAN_THREADS / k.G), B);
    k.fwd<<<grid, SCAN_THREADS, 0, cuda_stream()>>>(y, hs, x, dt_raw, A_log, Bm, Cm, D, z, n, E, S, L);
    CUDA_LAUNCHED();
    fh_count_macs((uint64_t)3 * n * E * S * B);
}

void cuda_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz,
                             const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S, int L, int acc) {
    ScanKernels k;
    size_t smem;
    if (B <= 0 || n <= 0 || E <= 0 || scan_kernels(S, L, &k, &smem, "selective_scan_bwd")) return;
    /* chunks longer than the sequence only cost shared memory: walk n-long ones */
    if (L > n) return cuda_selective_scan_bwd(dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw, A_log,
                                              Bm, Cm, D, z, B, n, E, S, n, acc);
    /* dx, dz, ddt_raw: one lane writes each element, so an overwrite (ops.h acc)
     * stores them; dBm, dCm are summed over the channels by atomics across
     * blocks: an overwrite zeroes them first */
    if (!acc) {
        if (dBm) cuda_zero(dBm, sizeof(float) * B * n * S);
        if (dCm) cuda_zero(dCm, sizeof(float) * B * n * S);
    }
    if (S <= SR_S && L <= SR_T && cuda_set_scan1_kernels(-1)) {
        typedef void (*BwdFn)(float *, float *, float *, float *, float *, float *, float *, const float *,
                              const float *, const float *, const float *, const float *, const float *,
                              const float *, const float *, const float *, int, int, int, int, int, const float *,
                              const float *, int, int);
        int mode = cuda_set_scan1_bwd(-1), low = mode > 0;
        if (mode >= 3) {  /* two lanes a channel: 16 channels a warp, 15 KB a warp (14/SM) */
            BwdFn pf = mode == 5 ? (S == SR_S ? scan_bwd_pair_kernel<true, 14, true> : scan_bwd_pair_kernel<false, 14, true>)
                     : mode == 4 ? (S == SR_S ? scan_bwd_pair_kernel<true, 12> : scan_bwd_pair_kernel<false, 12>)
                                 : (S == SR_S ? scan_bwd_pair_kernel<true> : scan_bwd_pair_kernel<false>);
            size_t psmem = sizeof(float) * SP_SMEM_FLOATS;
            static bool pcarved;
            if (!pcarved) {  /* 14 x (15 + 1) KB an SM: the largest carveout */
                for (const void *f : {(const void *)scan_bwd_pair_kernel<true>, (const void *)scan_bwd_pair_kernel<false>,
                                      (const void *)scan_bwd_pair_kernel<true, 12>, (const void *)scan_bwd_pair_kernel<false, 12>,
                                      (const void *)scan_bwd_pair_kernel<true, 14, true>,
                                      (const void *)scan_bwd_pair_kernel<false, 14, true>})
                    CUDA_CALL(cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout,
                                                   (int)cudaSharedmemCarveoutMaxShared));
                pcarved = true;
            }
            /* the segment pass keeps 32 channels a warp: half the main kernel's warps, so its
             * resident slots count double in sr_segments' model (which counts one grid of w warps) */
            int gp = blocks_for((size_t)E, SP_C), g32 = blocks_for((size_t)E, 32), nc = (n + L - 1) / L, cps = nc, K = 1;
            long slots = sr_slots((const void *)pf, psmem), slots1 = sr_slots((const void *)scan_bwd_seg_kernel, 0);
            if (slots > 0 && slots1 > 0) K = sr_segments((long)gp * B, slots, 2 * slots1, nc, n, 0.3, &cps);
            float *cR = NULL, *csd = NULL;
            if (K > 1) {
                cR = scan_scratch((size_t)B * K * E * (S + 1));
                if (!cR) return;
                csd = cR + (size_t)B * K * E * S;
                scan_bwd_seg_kernel<<<dim3(g32, B, K - 1), 32, 0, cuda_stream()>>>(cR, csd, dy, dt_raw, A_log, Cm, z, n,
                                                                                   E, S, cps * L, K);
                CUDA_LAUNCHED();
            }
            pf<<<dim3(gp, B, K), 32, psmem, cuda_stream()>>>(dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw,
                                                              A_log, Bm, Cm, D, z, n, E, S, L, acc, cR, csd, cps, K);
            CUDA_LAUNCHED();
            return;
        }
        BwdFn fn = !low       ? scan_bwd_reg_kernel<false, false>
                 : mode == 1  ? (S == SR_S ? scan_bwd_reg_kernel<true, true> : scan_bwd_reg_kernel<true, false>)
                 : S == SR_S  ? scan_bwd_reg_kernel<true, true, true> : scan_bwd_reg_kernel<true, false, true>;
        size_t smem = low ? SR_BWD_LOW_SMEM : SR_BWD_SMEM;
        cuda_func_smem((const void *)fn, smem);
        static bool carved;
        if (low && !carved) {  /* 7 x (30 + 1) KB of shared memory an SM: ask for the largest carveout */
            for (const void *f : {(const void *)scan_bwd_reg_kernel<true, true>, (const void *)scan_bwd_reg_kernel<true, false>,
                                  (const void *)scan_bwd_reg_kernel<true, true, true>,
                                  (const void *)scan_bwd_reg_kernel<true, false, true>})
                CUDA_CALL(cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout,
                                               (int)cudaSharedmemCarveoutMaxShared));
            carved = true;
        }
        /* c1 0.3: the carry pass has 16 of the backward's ~54 MUFU per step. At the new layout's 7
         * warps/SM the model asks for more segments (K 1 -> 7 at mamba1-135m, 5 -> 7 at fac-1b) */
        int gx = blocks_for((size_t)E, 32), nc = (n + L - 1) / L, cps;
        int K = sr_split((const void *)fn, smem, (const void *)scan_bwd_seg_kernel, (long)gx * B, nc, n, 0.3, &cps);
        float *cR = NULL, *csd = NULL;
        if (K > 1) {
            cR = scan_scratch((size_t)B * K * E * (S + 1));
            if (!cR) return;
            csd = cR + (size_t)B * K * E * S;
            scan_bwd_seg_kernel<<<dim3(gx, B, K - 1), 32, 0, cuda_stream()>>>(cR, csd, dy, dt_raw, A_log, Cm, z, n, E,
                                                                              S, cps * L, K);
            CUDA_LAUNCHED();
        }
        fn<<<dim3(gx, B, K), 32, smem, cuda_stream()>>>(
            dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw, A_log, Bm, Cm, D, z, n, E, S, L, acc, cR, csd,
            cps, K);
        CUDA_LAUNCHED();
        return;
    }
    if (smem > 48 * 1024) cuda_func_smem((const void *)k.bwd, smem);
    int gx = blocks_for((size_t)E, SCAN_THREADS / k.G), nc = (n + L - 1) / L, K = scan_segments(k, smem, (long)gx * B, nc);
    int cps = (nc + K - 1) / K;
    float *cR = NULL, *csdt = NULL;
    if (K > 1) {
        cR = scan_scratch((size_t)B * K * E * (S + 1));
        if (!cR) return;
        csdt = cR + (size_t)B * K * E * S;
        k.carry<<<dim3(gx, B, K - 1), SCAN_THREADS, 0, cuda_stream()>>>(cR, csdt, dy, dt_raw, A_log, Cm, z, n, E, S, L,
                                                                         cps, K);
        CUDA_LAUNCHED();
    }
    k.bwd<<<dim3(gx, B, K), SCAN_THREADS, smem, cuda_stream()>>>(dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw,
                                                                  A_log, Bm, Cm, D, z, n, E, S, L, cR, csdt, cps, K,
                                                                  acc);
    CUDA_LAUNCHED();
}
