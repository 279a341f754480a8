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
 * to global memory once per block and chunk. */
#include "common.cuh"

#define SCAN_THREADS 256

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
__global__ void __launch_bounds__(SCAN_THREADS)
scan_fwd_kernel(float *y, float *hs, const float *x, const float *dt_raw, const float *A_log, const float *Bm,
                const float *Cm, const float *D, const float *z, int n, int E, int S, int L) {
    ScanLane<G> ln(E);
    int b = blockIdx.y, nc = (n + L - 1) / L;
    float A[SPL], h[SPL];
#pragma unroll
    for (int k = 0; k < SPL; k++) {
        int s = ln.g + G * k;
        A[k] = s < S ? -expf(A_log[(size_t)ln.e * S + s]) : 0.f;
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
        float dtm = tm < n ? softplusf_(dt_raw[im]) : 0.f, xm = x[im], pj[G];
        auto step = [&](int j) {
            int t = min(t0 + j, n - 1);
            float dt = __shfl_sync(0xffffffffu, dtm, j, G), xv = __shfl_sync(0xffffffffu, xm, j, G), p = 0.f;
            const float *Bt = Bm + ((size_t)b * n + t) * S, *Ct = Cm + ((size_t)b * n + t) * S;
#pragma unroll
            for (int k = 0; k < SPL; k++) {
                int s = ln.g + G * k;
                if (s < S) {
                    h[k] = expf(dt * A[k]) * h[k] + dt * Bt[s] * xv;
                    p += Ct[s] * h[k];
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

template <int G, int SPL>
__global__ void __launch_bounds__(SCAN_THREADS)
scan_bwd_kernel(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD, float *dz,
                const float *dy, const float *hs, const float *x, const float *dt_raw, const float *A_log,
                const float *Bm, const float *Cm, const float *D, const float *z, int n, int E, int S, int L) {
    extern __shared__ float smem[];
    float *hsm = smem;                                   /* [L][SPL][SCAN_THREADS]: the chunk's states */
    float *tB = hsm + (size_t)L * SPL * SCAN_THREADS;    /* [L][S]: the block's dBm for the chunk */
    float *tC = tB + (size_t)L * S;                      /* [L][S]: dCm */
    ScanLane<G> ln(E);
    int b = blockIdx.y, nc = (n + L - 1) / L, tid = threadIdx.x, lane = tid & 31;
    for (int i = tid; i < 2 * L * S; i += SCAN_THREADS) tB[i] = 0.f;
    float A[SPL], dh[SPL], dA[SPL], hin[SPL];
#pragma unroll
    for (int k = 0; k < SPL; k++) {
        int s = ln.g + G * k;
        A[k] = s < S ? -expf(A_log[(size_t)ln.e * S + s]) : 0.f;
        dh[k] = dA[k] = 0.f;
    }
    float De = D[ln.e], dDacc = 0.f;
    const float *hsb = hs + (size_t)b * (nc + 1) * E * S + (size_t)ln.e * S;
    __syncthreads();
    for (int c = nc - 1; c >= 0; c--) {
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
            float dtm = tm < t1 ? softplusf_(dt_raw[im]) : 0.f, xm = x[im];
#pragma unroll
            for (int j = 0; j < G; j++) {
                int t = min(tb + j, t1 - 1);
                float dt = __shfl_sync(0xffffffffu, dtm, j, G), xv = __shfl_sync(0xffffffffu, xm, j, G);
                const float *Bt = Bm + ((size_t)b * n + t) * S;
#pragma unroll
                for (int k = 0; k < SPL; k++) {
                    int s = ln.g + G * k;
                    if (s < S) h[k] = expf(dt * A[k]) * h[k] + dt * Bt[s] * xv;
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
                const float *Bt = Bm + ((size_t)b * n + t) * S, *Ct = Cm + ((size_t)b * n + t) * S;
                float pp = 0.f, dxp = 0.f, ddtp = 0.f;
#pragma unroll
                for (int k = 0; k < SPL; k++) {
                    int s = ln.g + G * k;
                    float ht = hsm[((size_t)(t - t0) * SPL + k) * SCAN_THREADS + tid];
                    float hp = ts + j > t0 ? hsm[((size_t)(t - 1 - t0) * SPL + k) * SCAN_THREADS + tid] : hin[k];
                    float Bv = s < S ? Bt[s] : 0.f, Cv = s < S ? Ct[s] : 0.f, a = expf(dt * A[k]);
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
                    if (lane < G && s < S) {
                        atomicAdd(&tB[(t - t0) * S + s], dBv);
                        atomicAdd(&tC[(t - t0) * S + s], dCv);
                    }
                }
                pj[j] = pp;
                dxp = group_sum<G>(dxp);
                ddtp = group_sum<G>(ddtp);
                if (ln.g == j) { dxm = dxp; ddtm = ddtp; }
            }
            float prem = group_sum_scatter<G>(pj, ln.g);
            if (ln.live && on) {
                if (dz) dz[im] += dym * (prem + De * xm) * sgm * (1.f + zm * (1.f - sgm));
                if (dx) dx[im] += dxm + De * dyym;
                if (ddt_raw) ddt_raw[im] += ddtm * sigmoidf_(dtrm);  /* softplus' = sigmoid */
                dDacc += dyym * xm;
            }
        }
        /* 3. the block's dBm/dCm of this chunk into global memory; tiles reset */
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

/* Kernel pair for a state count: G lanes per channel, SPL states per lane. */
typedef void (*ScanFwdFn)(float *, float *, const float *, const float *, const float *, const float *,
                          const float *, const float *, const float *, int, int, int, int);
typedef void (*ScanBwdFn)(float *, float *, float *, float *, float *, float *, float *, const float *,
                          const float *, const float *, const float *, const float *, const float *, const float *,
                          const float *, const float *, int, int, int, int);
typedef struct { int G, SPL; ScanFwdFn fwd; ScanBwdFn bwd; } ScanKernels;

static int scan_kernels(int S, int L, ScanKernels *k, size_t *smem, const char *what) {
#define SCAN_K(g, spl) *k = (ScanKernels){g, spl, scan_fwd_kernel<g, spl>, scan_bwd_kernel<g, spl>}
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
    *smem = sizeof(float) * ((size_t)L * k->SPL * SCAN_THREADS + 2 * (size_t)L * S);
    return 0;
}

void cuda_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S, int L) {
    ScanKernels k;
    size_t smem;
    if (B <= 0 || n <= 0 || E <= 0 || scan_kernels(S, L, &k, &smem, "selective_scan_fwd")) return;
    dim3 grid(blocks_for((size_t)E, SCAN_THREADS / k.G), B);
    k.fwd<<<grid, SCAN_THREADS, 0, cuda_stream()>>>(y, hs, x, dt_raw, A_log, Bm, Cm, D, z, n, E, S, L);
    CUDA_LAUNCHED();
    fh_count_macs((uint64_t)3 * n * E * S * B);
}

void cuda_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz,
                             const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S, int L) {
    ScanKernels k;
    size_t smem;
    if (B <= 0 || n <= 0 || E <= 0 || scan_kernels(S, L, &k, &smem, "selective_scan_bwd")) return;
    /* chunks longer than the sequence only cost shared memory: walk n-long ones */
    if (L > n) return cuda_selective_scan_bwd(dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw, A_log,
                                              Bm, Cm, D, z, B, n, E, S, n);
    if (smem > 48 * 1024) cuda_func_smem((const void *)k.bwd, smem);
    dim3 grid(blocks_for((size_t)E, SCAN_THREADS / k.G), B);
    k.bwd<<<grid, SCAN_THREADS, smem, cuda_stream()>>>(dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw, A_log, Bm, Cm,
                                         D, z, n, E, S, L);
    CUDA_LAUNCHED();
}
