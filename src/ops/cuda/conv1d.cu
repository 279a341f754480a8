/* conv1d.cu - causal depthwise conv1d (Mamba's short conv), channel-last:
 *   out[t,c] = b[c] + sum_k w[c,k] x[t-(K-1)+k, c]   (x[<0] = 0)
 * and the same followed by SiLU (ops.h conv1d_silu_*).
 *
 * The kernels (taps K <= 4, Mamba's d_conv): each thread owns V channels
 * (V = 4 with float4 loads when C % 4 == 0 and the rows are 16-byte aligned)
 * of one time segment of one sequence and walks it in order, the last K-1
 * inputs in registers, so every input is read once (plus K-1 halo rows per
 * segment). The backward walks K-1 rows past its segment (the conv outputs
 * that row s feeds), recomputing the pre-activation when SiLU is fused, keeps
 * the last K gradients of the conv output in registers and writes dx once;
 * dw and db are summed per thread, then over the block in a fixed order,
 * then once per channel over the blocks by a second kernel: one pass over
 * dout and x, no atomics, deterministic.
 *
 * The first kernels (one thread per element, dw and db as separate column
 * passes) stay for K > 4 and for A/B timing (FLOWHN_M2_KERNELS=old,
 * cuda_set_m2_kernels).
 *
 * Since branch elem-mamba the segment walks prefetch the rows 8 ahead into L2
 * and the backward writes dx's bf16 rounding (a shadow for in_proj's
 * backward); FLOWHN_CONV=old (cuda_set_conv_new) runs them as before.
 * Since branch conv-bwd the walks stream their rows through per-thread
 * cp.async rings in shared memory instead (conv1d_kernels.cuh, perf-notes
 * conv-bwd); FLOWHN_CONV_RING=0 (cuda_set_conv_ring) runs the prefetching ones. */
#include <algorithm>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "common.cuh"
#include "conv1d_kernels.cuh"

/* grid (channel blocks, row groups): each thread keeps one channel and walks
 * rows r = b*n + t with a 32-bit row index, so the position t costs one
 * 32-bit remainder per row (the first version's 64-bit i % C and i / C per
 * element made these kernels 4x slower than their memory traffic) */
__global__ void conv1d_fwd_kernel(float *out, const float *x, const float *w, const float *b, int R, int n,
                                  int C, int K) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float bias = b ? b[c] : 0.f;
    for (int r = blockIdx.y; r < R; r += gridDim.y) {
        int t = r % n;
        size_t i = (size_t)r * C + c;
        float s = bias;
        for (int k = 0; k < K; k++) {
            int ti = t - (K - 1) + k;
            if (ti >= 0) s += w[(size_t)c * K + k] * x[i - (size_t)(t - ti) * C];
        }
        out[i] = s;
    }
}

/* dx[s,c] = sum_k w[c,k] dout[s+(K-1)-k, c] over outputs inside the sequence */
/* (acc 0: dx overwritten, ops.h) */
__global__ void conv1d_bwd_dx_kernel(float *dx, const float *dout, const float *w, int R, int n, int C, int K,
                                     int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int r = blockIdx.y; r < R; r += gridDim.y) {
        int s = r % n;
        size_t i = (size_t)r * C + c;
        float acc = 0.f;
        for (int k = 0; k < K; k++) {
            int t = s + (K - 1) - k;
            if (t < n) acc += w[(size_t)c * K + k] * dout[i + (size_t)(t - s) * C];
        }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}

static dim3 conv_grid(int R, int C) { return dim3((C + 127) / 128, (unsigned)std::min(R, 65535)); }

/* row r = b*n + t; term of tap k: dout[t,c] x[t-(K-1)+k, c] */
struct ConvDw {
    const float *dout, *x;
    int n, C, K, k;
    __device__ float operator()(int r, int c) const {
        int t = r % n, ti = t - (K - 1) + k;
        if (ti < 0) return 0.f;
        return dout[(size_t)r * C + c] * x[((size_t)r + (ti - t)) * C + c];
    }
};
/* every tap at once (KK = K taps): one read of dout[r, c] and of the K inputs
 * it meets, instead of one pass over dout and x per tap; v[k] for tap k */
template <int KK>
struct ConvDwAll {
    const float *dout, *x;
    int n, C;
    __device__ void operator()(int r, int c, float *v) const {
        int t = r % n;
        float g = dout[(size_t)r * C + c];
#pragma unroll
        for (int k = 0; k < KK; k++) {
            int ti = t - (KK - 1) + k;
            if (ti >= 0) v[k] += g * x[((size_t)r + (ti - t)) * C + c];
        }
    }
};
struct ConvDb {
    const float *dout;
    int C;
    __device__ float operator()(int r, int c) const { return dout[(size_t)r * C + c]; }
};

/* taps whose input index is >= 0, per channel and sequence */
static uint64_t conv_taps(int n, int K) {
    if (n >= K) return (uint64_t)n * K - (uint64_t)K * (K - 1) / 2;
    return (uint64_t)n * (n + 1) / 2;
}


/* -1: not read yet; FLOWHN_M2_KERNELS=old selects the first conv1d and
 * gated-norm kernels (cuda_ops.h) */
static int m2_new_kernels = -1;
int cuda_set_m2_kernels(int on) { return cuda_env_switch(&m2_new_kernels, "FLOWHN_M2_KERNELS", "old", 1, on); }

/* -1: not read yet; FLOWHN_CONV=old: the segment kernels as on main before
 * branch elem-mamba, without the L2 prefetches and dx's bf16 rounding (cuda_ops.h) */
static int conv_new = -1;
int cuda_set_conv_new(int on) { return cuda_env_switch(&conv_new, "FLOWHN_CONV", "old", 1, on); }

/* -1: not read yet; FLOWHN_CONV_RING=0: the prefetching segment kernels instead of the ring ones (cuda_ops.h) */
static int conv_ring = -1;
int cuda_set_conv_ring(int on) { return cuda_env_switch(&conv_ring, "FLOWHN_CONV_RING", "0", 1, on); }

/* the ring kernels want shared memory over L1 (their copies skip L1 for V = 4):
 * 4 backward blocks an SM hold 130 KB. Asked once per kernel, at its first
 * launch (a warm-up step, not inside a recording); a refusal only costs occupancy. */
template <class K>
static void conv_ring_carveout(K kernel, bool *asked) {
    if (*asked) return;
    *asked = true;
    if (cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared) != cudaSuccess)
        cudaGetLastError();
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <int KK, int V, bool SILU>
static void conv_seg_fwd_pf(const ConvGeom &g, float *out, const float *x, const float *w, const float *b, int n,
                            int C, bool pf, int ldx) {
    if (pf && cuda_set_conv_ring(-1)) {
        static bool asked;
        conv_ring_carveout(conv_ring_fwd_kernel<KK, V, SILU>, &asked);
        conv_ring_fwd_kernel<KK, V, SILU><<<g.grid, g.block, 0, cuda_stream()>>>(out, x, w, b, n, C, g.seg, g.nseg,
                                                                               g.nsegs_all, ldx);
    } else if (pf)
        conv_seg_fwd_kernel<KK, V, SILU, true><<<g.grid, g.block, 0, cuda_stream()>>>(out, x, w, b, n, C, g.seg, g.nseg,
                                                                                      g.nsegs_all, ldx);
    else
        conv_seg_fwd_kernel<KK, V, SILU, false><<<g.grid, g.block, 0, cuda_stream()>>>(out, x, w, b, n, C, g.seg,
                                                                                       g.nseg, g.nsegs_all, ldx);
}
template <int KK, int V>
static void conv_seg_fwd(float *out, const float *x, const float *w, const float *b, int B, int n, int C, bool silu,
                         int ldx) {
    ConvGeom g = conv_geom(B, n, C, V);
    bool pf = cuda_set_conv_new(-1);
    if (silu) conv_seg_fwd_pf<KK, V, true>(g, out, x, w, b, n, C, pf, ldx);
    else conv_seg_fwd_pf<KK, V, false>(g, out, x, w, b, n, C, pf, ldx);
    CUDA_LAUNCHED();
}
template <int KK, int V, bool SILU>
static void conv_seg_bwd_pf(const ConvGeom &g, float *dx, float *part, const float *dout, const float *x,
                            const float *w, const float *b, int n, int C, int acc, bool pf, __nv_bfloat16 *dxb,
                            int ldx, int dxf) {
    if (pf && cuda_set_conv_ring(-1)) {
        static bool asked;
        conv_ring_carveout(conv_ring_bwd_kernel<KK, V, SILU>, &asked);
        conv_ring_bwd_kernel<KK, V, SILU><<<g.grid, g.block, 0, cuda_stream()>>>(
            dx, part, dout, x, w, b, n, C, g.seg, g.nseg, g.nsegs_all, acc, dxb, ldx, dxf);
    } else if (pf)
        conv_seg_bwd_kernel<KK, V, SILU, true><<<g.grid, g.block, 0, cuda_stream()>>>(
            dx, part, dout, x, w, b, n, C, g.seg, g.nseg, g.nsegs_all, acc, dxb, ldx, dxf);
    else
        conv_seg_bwd_kernel<KK, V, SILU, false><<<g.grid, g.block, 0, cuda_stream()>>>(
            dx, part, dout, x, w, b, n, C, g.seg, g.nseg, g.nsegs_all, acc, dxb, ldx, dxf);
}
/* With the new setting dx's bf16 rounding is written too (a shadow: in_proj's
 * backward reads dx as its dout two products later, linear.cu's declared
 * launches in between) and every range written is declared (cuda_shadow_done).
 * A strided dx (ldx > C: a column window of Mamba-2's packed in_proj gradient,
 * read whole by one product) has no shadow of its own: its rounding goes into
 * the window of the pack's bf16 copy (Ops.pack_bf16) if the model declared
 * one, else the product rounds the packed buffer; its declared range spans the
 * window's rows. */
template <int KK, int V>
static void conv_seg_bwd(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                         const float *b, int B, int n, int C, int acc, bool silu, int ldx) {
    ConvGeom g = conv_geom(B, n, C, V);
    bool nw = cuda_set_conv_new(-1);
    float *part = nullptr;
    size_t part_n = (size_t)g.grid.y * (KK + 1) * C, total = (size_t)B * n * C;
    if (dw || db) {
        part = cuda_colsum_scratch(part_n);
        if (!part) return;
    }
    /* claimed last, after anything that may allocate: a claim is always filled and declared below. A strided
     * dx (a window of Mamba-2's packed in_proj gradient) writes its rounding into the window of the pack's
     * bf16 copy when the model declared one (Ops.pack_bf16), laid out as dx */
    __nv_bfloat16 *dxb = nullptr;
    int packed = 0, skip = 0;   /* skip: the pack was marked bf16-only, dx overwritten: no fp32 stored */
    if (nw && dx && ldx == C) dxb = (__nv_bfloat16 *)cuda_shadow_claim(dx, total);
    else if (nw && dx) packed = (dxb = (__nv_bfloat16 *)cuda_pack_claim_only(dx, B * n, C, ldx, acc, &skip)) != nullptr;
    unsigned long before = cuda_epoch;
    if (silu) conv_seg_bwd_pf<KK, V, true>(g, dx, part, dout, x, w, b, n, C, acc, nw, dxb, ldx, !skip);
    else conv_seg_bwd_pf<KK, V, false>(g, dx, part, dout, x, w, b, n, C, acc, nw, dxb, ldx, !skip);
    CUDA_LAUNCHED();
    if (part) {
        conv_seg_finish_kernel<<<((KK + 1) * C + 255) / 256, 256, 0, cuda_stream()>>>(dw, db, part, (int)g.grid.y, C,
                                                                                      KK);
        CUDA_LAUNCHED();
    }
    if (nw) {
        size_t dx_n = ((size_t)B * n - 1) * ldx + C;   /* the window's span (total when dense) */
        CudaRange wr[5] = {{dx, dx ? dx_n * sizeof(float) : 0},
                           {dxb, dxb ? dx_n * 2 : 0},
                           {part, part ? part_n * sizeof(float) : 0},
                           {dw, dw ? (size_t)C * KK * sizeof(float) : 0},
                           {db, db ? (size_t)C * sizeof(float) : 0}};
        cuda_shadow_done(before, wr, 5);
        if (packed) cuda_pack_done();   /* after: its own declared write over the pack does not end it */
    }
}

/* V = 4 when every row pointer the kernel forms is 16-byte aligned (x's, dx's rows ldx apart) */
static int conv_vec(int C, int ldx, const void *a, const void *b2, const void *c) {
    return (C % 4 == 0 && ldx % 4 == 0 && aligned16(a) && aligned16(b2) && (!c || aligned16(c))) ? 4 : 1;
}
template <int KK>
static void conv_fwd_k(float *out, const float *x, const float *w, const float *b, int B, int n, int C, bool silu,
                       int ldx) {
    if (conv_vec(C, ldx, out, x, nullptr) == 4) conv_seg_fwd<KK, 4>(out, x, w, b, B, n, C, silu, ldx);
    else conv_seg_fwd<KK, 1>(out, x, w, b, B, n, C, silu, ldx);
}
template <int KK>
static void conv_bwd_k(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                       const float *b, int B, int n, int C, int acc, bool silu, int ldx) {
    if (conv_vec(C, ldx, dout, x, dx) == 4) conv_seg_bwd<KK, 4>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx);
    else conv_seg_bwd<KK, 1>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx);
}
/* the new kernels take K 1..4; 0 when not taken */
static int conv_new_fwd(float *out, const float *x, const float *w, const float *b, int B, int n, int C, int K,
                        bool silu, int ldx) {
    switch (K) {
    case 1: conv_fwd_k<1>(out, x, w, b, B, n, C, silu, ldx); return 1;
    case 2: conv_fwd_k<2>(out, x, w, b, B, n, C, silu, ldx); return 1;
    case 3: conv_fwd_k<3>(out, x, w, b, B, n, C, silu, ldx); return 1;
    case 4: conv_fwd_k<4>(out, x, w, b, B, n, C, silu, ldx); return 1;
    default: return 0;
    }
}
static int conv_new_bwd(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                        const float *b, int B, int n, int C, int K, int acc, bool silu, int ldx) {
    switch (K) {
    case 1: conv_bwd_k<1>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx); return 1;
    case 2: conv_bwd_k<2>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx); return 1;
    case 3: conv_bwd_k<3>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx); return 1;
    case 4: conv_bwd_k<4>(dx, dw, db, dout, x, w, b, B, n, C, acc, silu, ldx); return 1;
    default: return 0;
    }
}

/* ---- the ops ---- */

static void conv1d_fwd_old(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K) {
    conv1d_fwd_kernel<<<conv_grid(B * n, C), 128, 0, cuda_stream()>>>(out, x, w, b, B * n, n, C, K);
    CUDA_LAUNCHED();
}

void cuda_conv1d_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    if (!(cuda_set_m2_kernels(-1) && conv_new_fwd(out, x, w, b, B, n, C, K, false, C)))
        conv1d_fwd_old(out, x, w, b, B, n, C, K);
    fh_count_macs((uint64_t)B * C * conv_taps(n, K));
}

static void conv1d_bwd_old(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                           int B, int n, int C, int K, int acc) {
    if (dx) {
        conv1d_bwd_dx_kernel<<<conv_grid(B * n, C), 128, 0, cuda_stream()>>>(dx, dout, w, B * n, n, C, K, acc);
        CUDA_LAUNCHED();
    }
    if (dw && K == 4)  /* Mamba's d_conv */
        colsum_multi<4>(dw, K, B * n, C, ConvDwAll<4>{dout, x, n, C});
    else if (dw)
        for (int k = 0; k < K; k++) colsum(dw + k, K, B * n, C, ConvDw{dout, x, n, C, K, k});
    if (db) colsum(db, 1, B * n, C, ConvDb{dout, C});
}

void cuda_conv1d_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                     int B, int n, int C, int K, int acc) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    if (!(cuda_set_m2_kernels(-1) && conv_new_bwd(dx, dw, db, dout, x, w, nullptr, B, n, C, K, acc, false, C)))
        conv1d_bwd_old(dx, dw, db, dout, x, w, B, n, C, K, acc);
}

/* conv then SiLU: the segment kernels with the activation fused; for K > 4
 * the first conv kernel, then silu in place (forward) / the pre-activation
 * recomputed into scratch (backward). The first kernels are dense: a strided
 * x (ldx > C) goes through a dense copy there, dx through one (a rare path:
 * Mamba's d_conv is 4) */
static BranchScratch conv_silu_scratch;
void cuda_conv1d_silu_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K,
                          int ldx) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    if (!conv_new_fwd(out, x, w, b, B, n, C, K, true, ldx)) {
        const real *xd = x;
        if (ldx != C) {
            float *s = (float *)cuda_branch_scratch(&conv_silu_scratch, sizeof(float) * total, "conv1d_silu scratch");
            if (!s) return;
            cuda_copy_rows(s, C, x, ldx, B * n, C);
            xd = s;
        }
        conv1d_fwd_old(out, xd, w, b, B, n, C, K);
        cuda_silu_fwd(out, out, total);
    }
    fh_count_macs((uint64_t)B * C * conv_taps(n, K));
}

void cuda_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                          const real *b, int B, int n, int C, int K, int acc, int ldx) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    if (conv_new_bwd(dx, dw, db, dout, x, w, b, B, n, C, K, acc, true, ldx)) return;
    int strided = ldx != C;
    float *pre = (float *)cuda_branch_scratch(&conv_silu_scratch, sizeof(float) * (strided ? 4 : 2) * total,
                                              "conv1d_silu scratch");
    if (!pre) return;
    const real *xd = x;
    real *dxd = dx;
    if (strided) {   /* dense x, and a dense dx holding dx's values when accumulating */
        float *xs = pre + 2 * total;
        cuda_copy_rows(xs, C, x, ldx, B * n, C);
        xd = xs;
        if (dx) {
            dxd = pre + 3 * total;
            if (acc) cuda_copy_rows(dxd, C, dx, ldx, B * n, C);
        }
    }
    conv1d_fwd_old(pre, xd, w, b, B, n, C, K);
    cuda_silu_bwd(pre + total, dout, pre, total, FH_OVERWRITE);
    conv1d_bwd_old(dxd, dw, db, pre + total, xd, w, B, n, C, K, acc);
    if (strided && dx) cuda_copy_rows(dx, ldx, dxd, C, B * n, C);
}
