/* conv1d_kernels.cuh - the segment-walking causal depthwise conv1d kernels
 * (with or without a fused SiLU), device code only: conv1d.cu launches them,
 * tools/m2_emu runs them on the CPU (plain C++ with shims for the CUDA
 * builtins) to check their indexing where no GPU is at hand. Include after
 * common.cuh (sigmoidf_) and cuda_bf16.h. See conv1d.cu for the scheme. */
#ifndef FLOWHN_CONV1D_KERNELS_CUH
#define FLOWHN_CONV1D_KERNELS_CUH

#include <algorithm>

/* ---- the segment-walking kernels ---- */

/* V consecutive floats at p (16-byte aligned when V == 4) */
template <int V>
__device__ __forceinline__ void ldv(float *d, const float *__restrict__ p) {
    if constexpr (V == 4) {
        float4 r = __ldg(reinterpret_cast<const float4 *>(p));
        d[0] = r.x; d[1] = r.y; d[2] = r.z; d[3] = r.w;
    } else {
#pragma unroll
        for (int v = 0; v < V; v++) d[v] = __ldg(p + v);
    }
}
/* the same through the ordinary cache path, for data this kernel writes back (dx when accumulating) */
template <int V>
__device__ __forceinline__ void ldv_rw(float *d, const float *p) {
    if constexpr (V == 4) {
        float4 r = *reinterpret_cast<const float4 *>(p);
        d[0] = r.x; d[1] = r.y; d[2] = r.z; d[3] = r.w;
    } else {
#pragma unroll
        for (int v = 0; v < V; v++) d[v] = p[v];
    }
}
template <int V>
__device__ __forceinline__ void stv(float *p, const float *s) {
    if constexpr (V == 4) {
        *reinterpret_cast<float4 *>(p) = make_float4(s[0], s[1], s[2], s[3]);
    } else {
#pragma unroll
        for (int v = 0; v < V; v++) p[v] = s[v];
    }
}

/* an L2 prefetch of the line holding p: no register, nothing waits on it.
 * The walks below (PF) ask for the rows CONV_PF ahead of the ones they load,
 * so that a thread has the next steps' bytes on their way from HBM while it
 * computes (its register loads alone kept ~4 float4 per thread in flight,
 * ~32 KB per SM: the latency bound, not the bandwidth, set these kernels'
 * time; perf-notes, elem-mamba). Only for addresses inside the tensors. */
__device__ __forceinline__ void prefetch_l2(const float *p) {
#ifdef __CUDACC__
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else  /* tools/m2_emu: records the row for the bounds check */
    conv_prefetch_seen(p);
#endif
}
#define CONV_PF 8

/* dx's bf16 rounding, V values at p (8-byte aligned when V == 4): the product
 * that reads dx next (in_proj's backward) reads it (linear.cu shadows) */
template <int V>
__device__ __forceinline__ void stv_bf16(__nv_bfloat16 *p, const float *s) {
#ifdef __CUDACC__
    if constexpr (V == 4) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(s[0], s[1]), hi = __floats2bfloat162_rn(s[2], s[3]);
        uint2 u;
        u.x = *reinterpret_cast<unsigned *>(&lo);
        u.y = *reinterpret_cast<unsigned *>(&hi);
        *reinterpret_cast<uint2 *>(p) = u;
    } else
#endif
    {
#pragma unroll
        for (int v = 0; v < V; v++) p[v] = __float2bfloat16_rn(s[v]);
    }
}

/* the KK-1 input rows before a segment that starts at t0 (zeros before the
 * sequence): win[k] = x[t0 - (KK-1) + k], row stride C; both walks start so */
template <int KK, int V>
__device__ __forceinline__ void load_window(float (*win)[V], const float *xs, int t0, int C) {
#pragma unroll
    for (int k = 0; k < KK - 1; k++) {
        int ti = t0 - (KK - 1) + k;
        if (ti >= 0) ldv<V>(win[k], xs + (size_t)ti * C);
        else
#pragma unroll
            for (int v = 0; v < V; v++) win[k][v] = 0.f;
    }
}

/* rows loaded ahead per step of the walk: U loads of each stream in flight per thread */
#define CONV_U 4
/* the backward's: 2 (its two streams, dout and x, give 4 loads in flight per
 * thread; 4 took it past 128 registers, to 1-2 blocks per SM) */
#define CONV_UB 2
/* threads per block: 32 channel groups x CONV_SEGS segments */
#define CONV_SEGS 4

/* out = conv(x) (+ silu): thread (channel group, segment g of B * nseg) */
template <int KK, int V, bool SILU, bool PF>
__global__ void __launch_bounds__(32 * CONV_SEGS)
    conv_seg_fwd_kernel(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                        const float *__restrict__ b, int n, int C, int seg, int nseg, int nsegs_all, int ldx) {
    int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
    int g = blockIdx.y * CONV_SEGS + threadIdx.y;
    if (c0 >= C || g >= nsegs_all) return;
    int bb = g / nseg, t0 = (g % nseg) * seg, t1 = min(n, t0 + seg);
    float wr[V][KK], bias[V];
#pragma unroll
    for (int v = 0; v < V; v++) {
        bias[v] = b ? b[c0 + v] : 0.f;
#pragma unroll
        for (int k = 0; k < KK; k++) wr[v][k] = w[(size_t)(c0 + v) * KK + k];
    }
    size_t base = (size_t)bb * n * C + c0;
    const float *xs = x + (size_t)bb * n * ldx + c0;   /* x's rows ldx apart */
    float *os = out + base;
    float win[KK][V];  /* win[k] = x[t - (KK-1) + k]; win[KK-1] the current row */
    if (PF)   /* the first rows the walk's prefetches below do not cover */
#pragma unroll
        for (int r = 0; r < CONV_PF; r++)
            if (t0 + r < t1) prefetch_l2(xs + (size_t)(t0 + r) * ldx);
    load_window<KK, V>(win, xs, t0, ldx);
    for (int t = t0; t < t1; t += CONV_U) {
        if (PF)
#pragma unroll
            for (int u = 0; u < CONV_U; u++)
                if (t + CONV_PF + u < t1) prefetch_l2(xs + (size_t)(t + CONV_PF + u) * ldx);
        float nx[CONV_U][V];
#pragma unroll
        for (int u = 0; u < CONV_U; u++)
            if (t + u < t1) ldv<V>(nx[u], xs + (size_t)(t + u) * ldx);
#pragma unroll
        for (int u = 0; u < CONV_U; u++) {
            if (t + u >= t1) break;
            float o[V];
#pragma unroll
            for (int v = 0; v < V; v++) {
                win[KK - 1][v] = nx[u][v];
                float s = bias[v];
#pragma unroll
                for (int k = 0; k < KK; k++) s += wr[v][k] * win[k][v];
                o[v] = SILU ? s * sigmoidf_(s) : s;
            }
            stv<V>(os + (size_t)(t + u) * C, o);
#pragma unroll
            for (int k = 0; k < KK - 1; k++)
#pragma unroll
                for (int v = 0; v < V; v++) win[k][v] = win[k + 1][v];
        }
    }
}

/* dx (acc: ops.h), and the block's dw / db partials part[blockIdx.y][KK+1][C]
 * (entry KK: db; part NULL: neither wanted). With SILU, dout is the gradient
 * of silu(conv) and the conv's output is recomputed from x, w, b. */
/* at most 128 registers: 4 blocks (16 warps) per SM */
/* PF: the rows CONV_PF ahead prefetched into L2; dxb: NULL, or dx's bf16 rounding, laid out as dx (row
 * stride ldx: a dense shadow when ldx == C, else the window of a packed gradient's bf16 copy, linear.cu
 * cuda_pack_claim); ldx: x's and dx's row stride (ops.h), dout's is C; dxf 0 (with dxb, acc 0): dx's fp32
 * not stored, only dxb (the pack's fp32 elided, linear.cu cuda_pack_claim_only) */
template <int KK, int V, bool SILU, bool PF>
__global__ void __launch_bounds__(32 * CONV_SEGS, 4)
    conv_seg_bwd_kernel(float *dx, float *__restrict__ part, const float *__restrict__ dout,
                        const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b, int n,
                        int C, int seg, int nseg, int nsegs_all, int acc, __nv_bfloat16 *dxb, int ldx, int dxf = 1) {
    __shared__ float sh[CONV_SEGS][33];
    int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
    int g = blockIdx.y * CONV_SEGS + threadIdx.y;
    bool live = c0 < C && g < nsegs_all;
    float pdw[V][KK], pdb[V];
#pragma unroll
    for (int v = 0; v < V; v++) {
        pdb[v] = 0.f;
#pragma unroll
        for (int k = 0; k < KK; k++) pdw[v][k] = 0.f;
    }
    if (live) {
        int bb = g / nseg, t0 = (g % nseg) * seg, t1 = min(n, t0 + seg);
        int tend = min(n, t1 + KK - 1);  /* conv outputs the segment's inputs feed */
        float wr[V][KK], bias[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            bias[v] = (SILU && b) ? b[c0 + v] : 0.f;
#pragma unroll
            for (int k = 0; k < KK; k++) wr[v][k] = w[(size_t)(c0 + v) * KK + k];
        }
        size_t base = (size_t)bb * n * C + c0;
        size_t xbase = (size_t)bb * n * ldx + c0;   /* x's and dx's rows ldx apart */
        const float *xs = x + xbase, *ds = dout + base;
        float *dxs = dx ? dx + xbase : nullptr;
        __nv_bfloat16 *dxbs = (dx && dxb) ? dxb + xbase : nullptr;   /* laid out as dx (ldx) */
        float win[KK][V];  /* inputs x[t - (KK-1) + k] */
        float dwin[KK][V]; /* conv-output gradients d[t - (KK-1) + k] (0 past the sequence) */
#pragma unroll
        for (int k = 0; k < KK; k++)
#pragma unroll
            for (int v = 0; v < V; v++) dwin[k][v] = 0.f;
        if (PF)   /* the first rows the walk's prefetches below do not cover */
#pragma unroll
            for (int r = 0; r < CONV_PF; r++)
                if (t0 + r < tend) {
                    prefetch_l2(ds + (size_t)(t0 + r) * C);
                    if (SILU || t0 + r < t1) prefetch_l2(xs + (size_t)(t0 + r) * ldx);
                }
        load_window<KK, V>(win, xs, t0, ldx);
        /* step t: d[t] (t < tend, else 0), then dx[t - (KK-1)] once it is in the segment */
        int tlast = t1 + KK - 1;
        for (int t = t0; t < tlast; t += CONV_UB) {
            if (PF)   /* the rows loaded CONV_PF / CONV_UB steps from now, the same conditions as the loads */
#pragma unroll
                for (int u = 0; u < CONV_UB; u++) {
                    int tp = t + CONV_PF + u;
                    if (tp < tend) {
                        prefetch_l2(ds + (size_t)tp * C);
                        if (SILU || tp < t1) prefetch_l2(xs + (size_t)tp * ldx);
                    }
                }
            float nx[CONV_UB][V], nd[CONV_UB][V];
#pragma unroll
            for (int u = 0; u < CONV_UB; u++)
                if (t + u < tend) {
                    ldv<V>(nd[u], ds + (size_t)(t + u) * C);
                    if (SILU || t + u < t1) ldv<V>(nx[u], xs + (size_t)(t + u) * ldx);
                }
#pragma unroll
            for (int u = 0; u < CONV_UB; u++) {
                int tt = t + u;
                if (tt >= tlast) break;
#pragma unroll
                for (int k = 0; k < KK - 1; k++)
#pragma unroll
                    for (int v = 0; v < V; v++) dwin[k][v] = dwin[k + 1][v];
                if (tt < tend) {
#pragma unroll
                    for (int v = 0; v < V; v++) {
                        win[KK - 1][v] = (SILU || tt < t1) ? nx[u][v] : 0.f;
                        float d = nd[u][v];
                        if (SILU) {
                            float s = bias[v];
#pragma unroll
                            for (int k = 0; k < KK; k++) s += wr[v][k] * win[k][v];
                            float sg = sigmoidf_(s);
                            d = d * sg * (1.f + s * (1.f - sg));
                        }
                        dwin[KK - 1][v] = d;
                        if (tt < t1) {
                            pdb[v] += d;
#pragma unroll
                            for (int k = 0; k < KK; k++) pdw[v][k] += d * win[k][v];
                        }
                    }
                } else {
#pragma unroll
                    for (int v = 0; v < V; v++) dwin[KK - 1][v] = 0.f;
                }
                int s_ = tt - (KK - 1);
                if (dxs && s_ >= t0) {
                    /* dx[s] = sum_k w[k] d[s + KK-1 - k] = sum_k w[k] dwin[KK-1-k] */
                    float o[V];
                    float *p = dxs + (size_t)s_ * ldx;
                    float old[V];
                    if (acc) ldv_rw<V>(old, p);
#pragma unroll
                    for (int v = 0; v < V; v++) {
                        float a = 0.f;
#pragma unroll
                        for (int k = 0; k < KK; k++) a += wr[v][k] * dwin[KK - 1 - k][v];
                        o[v] = acc ? old[v] + a : a;
                    }
                    if (dxf) stv<V>(p, o);
                    if (dxbs) stv_bf16<V>(dxbs + (size_t)s_ * ldx, o);
                }
#pragma unroll
                for (int k = 0; k < KK - 1; k++)
#pragma unroll
                    for (int v = 0; v < V; v++) win[k][v] = win[k + 1][v];
            }
        }
    }
    if (!part) return;  /* uniform over the grid: no thread is left at a barrier */
    /* the block's CONV_SEGS segments summed in order, one value per pass */
#pragma unroll
    for (int j = 0; j < KK + 1; j++)
#pragma unroll
        for (int v = 0; v < V; v++) {
            sh[threadIdx.y][threadIdx.x] = j < KK ? pdw[v][j] : pdb[v];
            __syncthreads();
            if (threadIdx.y == 0 && c0 + v < C) {
                float t = 0.f;
                for (int r = 0; r < CONV_SEGS; r++) t += sh[r][threadIdx.x];
                part[((size_t)blockIdx.y * (KK + 1) + j) * C + c0 + v] = t;
            }
            __syncthreads();
        }
}

/* dw[c, k] += sum over blocks of part[blk][k][c]; db[c] likewise from entry KK */
__global__ void conv_seg_finish_kernel(float *dw, float *db, const float *part, int nblk, int C, int KK) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;  /* e = k * C + c */
    if (e >= (KK + 1) * C) return;
    int k = e / C, c = e % C;
    if (k < KK ? !dw : !db) return;
    float t = 0.f;
    for (int i = 0; i < nblk; i++) t += part[(size_t)i * (KK + 1) * C + e];
    if (k < KK) dw[(size_t)c * KK + k] += t;
    else db[c] += t;
}

/* ---- the ring kernels (branch conv-bwd; FLOWHN_CONV_RING=0 runs the segment kernels above) ----
 * The same walk, geometry and arithmetic (the same bits), but each thread
 * streams its rows through its own ring of CONV_RD slots in shared memory
 * with cp.async, CONV_RD - 1 rows ahead. The copies are in flight without
 * holding registers (the backward's load registers were what capped it at 2
 * rows x 2 streams in flight, perf-notes conv-bwd) and a step's reads are
 * shared-memory reads, not an L2 round trip after a prefetch hint. A thread
 * reads only its own slots (no barrier); the copy for row r + CONV_RD - 1 is
 * issued after row r was read and goes into row r - 1's slot, read a step
 * earlier, never into the slot just read. One commit group per step, empty
 * or not, so that wait_group CONV_RD - 2 always means "row r has landed". */
#define CONV_RD 8

/* V floats from global src into shared dst, asynchronously (16-byte aligned both when V == 4) */
template <int V>
__device__ __forceinline__ void cp_async_v(float *dst, const float *src) {
#ifdef __CUDACC__
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (V == 4)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
    else
#pragma unroll
        for (int v = 0; v < V; v++)
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d + 4 * v), "l"(src + v) : "memory");
#else  /* tools/m2_emu: the copy lands at a later wait (conv_cp_wait), as it may on the GPU */
    conv_cp_async(dst, src, V);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDACC__
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
    conv_cp_commit();
#endif
}
/* every group but the newest N has landed */
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDACC__
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
    conv_cp_wait(N);
#endif
}

template <int KK, int V, bool SILU>
__global__ void __launch_bounds__(32 * CONV_SEGS)
    conv_ring_fwd_kernel(float *__restrict__ out, const float *__restrict__ x, const float *__restrict__ w,
                         const float *__restrict__ b, int n, int C, int seg, int nseg, int nsegs_all, int ldx) {
    __shared__ __align__(16) float ring[CONV_RD][CONV_SEGS][32 * V];
    int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
    int g = blockIdx.y * CONV_SEGS + threadIdx.y;
    if (c0 >= C || g >= nsegs_all) return;   /* no barrier below */
    int bb = g / nseg, t0 = (g % nseg) * seg, t1 = min(n, t0 + seg);
    float wr[V][KK], bias[V];
#pragma unroll
    for (int v = 0; v < V; v++) {
        bias[v] = b ? b[c0 + v] : 0.f;
#pragma unroll
        for (int k = 0; k < KK; k++) wr[v][k] = w[(size_t)(c0 + v) * KK + k];
    }
    const float *xs = x + (size_t)bb * n * ldx + c0;   /* x's rows ldx apart */
    float *os = out + (size_t)bb * n * C + c0;
    float *my = &ring[0][threadIdx.y][threadIdx.x * V];   /* slot s at my + s * SL */
    const int SL = CONV_SEGS * 32 * V;
#pragma unroll
    for (int r = 0; r < CONV_RD - 1; r++) {
        if (t0 + r < t1) cp_async_v<V>(my + r * SL, xs + (size_t)(t0 + r) * ldx);
        cp_async_commit();
    }
    float win[KK][V];
    load_window<KK, V>(win, xs, t0, ldx);
    for (int t = t0; t < t1; t++) {
        int i = t - t0;
        cp_async_wait<CONV_RD - 2>();   /* row t's group */
        const float *cur = my + (i % CONV_RD) * SL;
        float o[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            win[KK - 1][v] = cur[v];
            float s = bias[v];
#pragma unroll
            for (int k = 0; k < KK; k++) s += wr[v][k] * win[k][v];
            o[v] = SILU ? s * sigmoidf_(s) : s;
        }
        stv<V>(os + (size_t)t * C, o);
#pragma unroll
        for (int k = 0; k < KK - 1; k++)
#pragma unroll
            for (int v = 0; v < V; v++) win[k][v] = win[k + 1][v];
        int r = t + CONV_RD - 1;   /* into row t - 1's slot */
        if (r < t1) cp_async_v<V>(my + ((i + CONV_RD - 1) % CONV_RD) * SL, xs + (size_t)r * ldx);
        cp_async_commit();
    }
}

/* conv_seg_bwd_kernel's contract (dx, acc, part, dxb, ldx), rows through the ring: dout's and x's row r
 * (x's only where the segment kernel loads it: SILU, or r < t1) for r in [t0, tend) */
template <int KK, int V, bool SILU>
__global__ void __launch_bounds__(32 * CONV_SEGS, 4)
    conv_ring_bwd_kernel(float *dx, float *__restrict__ part, const float *__restrict__ dout,
                         const float *__restrict__ x, const float *__restrict__ w, const float *__restrict__ b, int n,
                         int C, int seg, int nseg, int nsegs_all, int acc, __nv_bfloat16 *dxb, int ldx, int dxf = 1) {
    __shared__ __align__(16) float ring[CONV_RD][2][CONV_SEGS][32 * V];   /* [slot][dout, x] */
    __shared__ float sh[CONV_SEGS][33];
    int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
    int g = blockIdx.y * CONV_SEGS + threadIdx.y;
    bool live = c0 < C && g < nsegs_all;
    float pdw[V][KK], pdb[V];
#pragma unroll
    for (int v = 0; v < V; v++) {
        pdb[v] = 0.f;
#pragma unroll
        for (int k = 0; k < KK; k++) pdw[v][k] = 0.f;
    }
    if (live) {
        int bb = g / nseg, t0 = (g % nseg) * seg, t1 = min(n, t0 + seg);
        int tend = min(n, t1 + KK - 1);  /* conv outputs the segment's inputs feed */
        float wr[V][KK], bias[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            bias[v] = (SILU && b) ? b[c0 + v] : 0.f;
#pragma unroll
            for (int k = 0; k < KK; k++) wr[v][k] = w[(size_t)(c0 + v) * KK + k];
        }
        size_t base = (size_t)bb * n * C + c0;
        size_t xbase = (size_t)bb * n * ldx + c0;   /* x's and dx's rows ldx apart */
        const float *xs = x + xbase, *ds = dout + base;
        float *dxs = dx ? dx + xbase : nullptr;
        __nv_bfloat16 *dxbs = (dx && dxb) ? dxb + xbase : nullptr;   /* laid out as dx (ldx) */
        float *myd = &ring[0][0][threadIdx.y][threadIdx.x * V];   /* dout's slot s at myd + s * SL, x's + XO */
        const int SL = 2 * CONV_SEGS * 32 * V, XO = CONV_SEGS * 32 * V;
#pragma unroll
        for (int r = 0; r < CONV_RD - 1; r++) {
            int tr = t0 + r;
            if (tr < tend) {
                cp_async_v<V>(myd + r * SL, ds + (size_t)tr * C);
                if (SILU || tr < t1) cp_async_v<V>(myd + r * SL + XO, xs + (size_t)tr * ldx);
            }
            cp_async_commit();
        }
        float win[KK][V];  /* inputs x[t - (KK-1) + k] */
        float dwin[KK][V]; /* conv-output gradients d[t - (KK-1) + k] (0 past the sequence) */
#pragma unroll
        for (int k = 0; k < KK; k++)
#pragma unroll
            for (int v = 0; v < V; v++) dwin[k][v] = 0.f;
        load_window<KK, V>(win, xs, t0, ldx);
        /* step tt: d[tt] (tt < tend, else 0), then dx[tt - (KK-1)] once it is in the segment */
        int tlast = t1 + KK - 1;
        for (int tt = t0; tt < tlast; tt++) {
            int i = tt - t0;
#pragma unroll
            for (int k = 0; k < KK - 1; k++)
#pragma unroll
                for (int v = 0; v < V; v++) dwin[k][v] = dwin[k + 1][v];
            if (tt < tend) {
                cp_async_wait<CONV_RD - 2>();   /* row tt's group */
                const float *cd = myd + (i % CONV_RD) * SL, *cx = cd + XO;
#pragma unroll
                for (int v = 0; v < V; v++) {
                    win[KK - 1][v] = (SILU || tt < t1) ? cx[v] : 0.f;
                    float d = cd[v];
                    if (SILU) {
                        float s = bias[v];
#pragma unroll
                        for (int k = 0; k < KK; k++) s += wr[v][k] * win[k][v];
                        float sg = sigmoidf_(s);
                        d = d * sg * (1.f + s * (1.f - sg));
                    }
                    dwin[KK - 1][v] = d;
                    if (tt < t1) {
                        pdb[v] += d;
#pragma unroll
                        for (int k = 0; k < KK; k++) pdw[v][k] += d * win[k][v];
                    }
                }
                int r = tt + CONV_RD - 1;   /* into row tt - 1's slot */
                if (r < tend) {
                    float *sl = myd + ((i + CONV_RD - 1) % CONV_RD) * SL;
                    cp_async_v<V>(sl, ds + (size_t)r * C);
                    if (SILU || r < t1) cp_async_v<V>(sl + XO, xs + (size_t)r * ldx);
                }
                cp_async_commit();
            } else {
#pragma unroll
                for (int v = 0; v < V; v++) dwin[KK - 1][v] = 0.f;
            }
            int s_ = tt - (KK - 1);
            if (dxs && s_ >= t0) {
                /* dx[s] = sum_k w[k] d[s + KK-1 - k] = sum_k w[k] dwin[KK-1-k] */
                float o[V];
                float *p = dxs + (size_t)s_ * ldx;
                float old[V];
                if (acc) ldv_rw<V>(old, p);
#pragma unroll
                for (int v = 0; v < V; v++) {
                    float a = 0.f;
#pragma unroll
                    for (int k = 0; k < KK; k++) a += wr[v][k] * dwin[KK - 1 - k][v];
                    o[v] = acc ? old[v] + a : a;
                }
                if (dxf) stv<V>(p, o);
                if (dxbs) stv_bf16<V>(dxbs + (size_t)s_ * ldx, o);
            }
#pragma unroll
            for (int k = 0; k < KK - 1; k++)
#pragma unroll
                for (int v = 0; v < V; v++) win[k][v] = win[k + 1][v];
        }
    }
    if (!part) return;  /* uniform over the grid: no thread is left at a barrier */
    /* the block's CONV_SEGS segments summed in order, one value per pass */
#pragma unroll
    for (int j = 0; j < KK + 1; j++)
#pragma unroll
        for (int v = 0; v < V; v++) {
            sh[threadIdx.y][threadIdx.x] = j < KK ? pdw[v][j] : pdb[v];
            __syncthreads();
            if (threadIdx.y == 0 && c0 + v < C) {
                float t = 0.f;
                for (int r = 0; r < CONV_SEGS; r++) t += sh[r][threadIdx.x];
                part[((size_t)blockIdx.y * (KK + 1) + j) * C + c0 + v] = t;
            }
            __syncthreads();
        }
}

/* The walk's geometry: segments long enough to amortize the K-1 halo rows
 * (and the backward's K-1 rows of lookahead), short enough for ~64K threads
 * to walk at once: one wave of the backward on the H200 (132 SMs x 4 blocks
 * of 128 threads at <= 128 registers), ~2/3 of the forward's (79 registers).
 * mamba2-gpt2small (B 8, n 1024, C 1792): segments of 57 rows, 504 blocks. */
struct ConvGeom {
    int V, seg, nseg, nsegs_all;
    dim3 grid, block;
};
static inline ConvGeom conv_geom(int B, int n, int C, int V) {
    ConvGeom g;
    g.V = V;
    long groups = (C + V - 1) / V;
    long want = std::max(1L, 65536L / std::max(1L, groups * B));
    long maxseg = std::max(1, (n + 15) / 16);  /* segments of at least 16 rows */
    g.nseg = (int)std::min(want, maxseg);
    g.seg = (n + g.nseg - 1) / g.nseg;
    g.nseg = (n + g.seg - 1) / g.seg;
    g.nsegs_all = B * g.nseg;
    g.block = dim3(32, CONV_SEGS);
    g.grid = dim3((unsigned)((groups + 31) / 32), (unsigned)((g.nsegs_all + CONV_SEGS - 1) / CONV_SEGS));
    return g;
}
#endif
