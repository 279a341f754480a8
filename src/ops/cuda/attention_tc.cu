/* attention_tc.cu - causal grouped-query attention on bf16 tensor cores
 * (FlashAttention-2 structure), the path of the bf16 matmul precision.
 *
 * The op contract is unchanged (attention.cu, ops.h): q/k/v/dout and every
 * output stay fp32. The operands a kernel reads many times (the forward's K
 * and V, the backward's Q and dO) are rounded by a conversion pass into
 * per-head, zero-padded bf16 scratch copies [B, heads, rows rounded up to 64,
 * HD] (the pass reads and writes contiguous runs), so the kernels stream them
 * as whole tiles with 16-byte cp.async copies, double-buffered, with no bounds
 * checks; the tiles a block reads once (the forward's Q, the backward's K and
 * V) are read from the fp32 inputs and rounded while being stored to shared
 * memory, which saves their conversion (the same global bytes either way).
 * Operands are read from shared memory with ldmatrix; those needed along the
 * other axis (V in P V; Q, dO and K in the backward's dK, dV, dQ) with
 * ldmatrix.trans from the same row-major tiles, so no transposed copies. Products run as warp-level
 * mma.sync m16n8k16 (bf16 inputs, fp32 accumulation); softmax statistics,
 * lse, D = dout.out (computed in fp32 by the conversion pass) and all
 * accumulators are fp32; the probabilities P (and dS in the backward) are
 * rounded to bf16 only as operands of the next product. hd is padded with
 * zeros to HD = 16, 32, 64 or 128 (larger heads take the fp32 kernels).
 *
 * Forward: one block (4 warps) per (64-query tile, head, batch); each warp
 * owns 16 query rows. Per 64-key tile: S = Q K^T in registers, masked
 * (key j visible to query i iff j < m_i, m_i by binary search as in the fp32
 * kernels, so only key tiles below the tile's last m are visited), online
 * softmax in base 2 (row max and sum per quad of lanes), and O += P V with P
 * taken straight from the S accumulators (the m16n8 accumulator layout of two
 * adjacent 8-column blocks is the m16k16 operand layout).
 *
 * Backward: one kernel. A block owns a (64-key tile, kv head, batch), walks
 * the query heads of its GQA group and the query tiles that can see the tile
 * (from the tile holding the first query at kpos[c0]); each warp owns 16 keys:
 *   S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - D),
 *   dV += P^T dO, dK += dS^T Q       (registers, written once at the end)
 *   dQ += dS K                       (dS^T through shared memory, fp32 atomics)
 * dq therefore gets one atomic add per element per key tile: not bitwise
 * deterministic run to run (dk, dv and the forward are). The recompute of S
 * and dP that a separate dq kernel needs would cost more than the atomics.
 *
 * RoPE inside (ops.h attention_rope_*, theta > 0, hd 16/32/64/128 only): q
 * and k arrive unrotated and are rotated in fp32 where they are rounded to
 * bf16 (the forward's K conversion and Q tile load, the backward's Q
 * conversion and K tile load), from rope.cu's (cos, sin) tables of qpos and
 * kpos; the backward rotates its dQ contributions back (by -angle) before the
 * atomics and dK at its one write, so dq, dk are the unrotated inputs'
 * gradients. The fp32 rotated copies and their gradients (rope_fwd/rope_bwd
 * passes) are never written.
 *
 * Shared tiles are [rows][cols + 8] bf16: the padding shifts consecutive rows
 * by 4 banks, so the 8 row reads of an ldmatrix phase hit 32 distinct banks. */
#include <cuda_bf16.h>
#include <string.h>

#include "attention.cuh"

#define TC_THREADS 128 /* 4 warps */
#define TC_BK 64       /* keys per tile */
#define TC_BQ 64       /* forward: queries per block; row padding of the scratch copies */
#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

typedef __nv_bfloat16 bf16;
typedef uint32_t u32;

/* ---- warp-level mma helpers (PTX fragment layouts of m16n8k16, g = lane/4, t = lane%4) ---- */

/* c += a (16x16, row-major) * b (16x8, column-major), bf16 in, fp32 accumulate */
__device__ __forceinline__ void mma_bf16(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  /* .x (lo) in the low half */
    return *reinterpret_cast<u32 *>(&v);
}
/* A operand for k-step kk from accumulators c[n] of 8-column blocks: the
 * blocks 2kk and 2kk+1 are the k columns 0-7 and 8-15 */
template <int N>
__device__ __forceinline__ void frag_from_acc(u32 (&a)[4], const float (&c)[N][4], int kk) {
    a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

/* ldmatrix: four 8x8 bf16 matrices from shared memory; lanes 8m..8m+7 give the
 * row addresses of matrix m (16-byte aligned rows of 8 elements), register m
 * receives it in the mma fragment layout (lane 4g + t: row g, columns 2t, 2t+1;
 * with .trans the transpose: rows 2t, 2t+1 of column g). One instruction
 * replaces four 32-bit shared loads, and .trans reads a B operand along the
 * other axis of a row-major tile, so no transposed copies are needed. */
__device__ __forceinline__ void ldsm4(u32 (&r)[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm4_t(u32 (&r)[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
/* Lane addresses (lr = lane % 8, lm = lane / 8) of a [rows][ld] tile for:
 * A operand, rows row0..+15, k k0..+15: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15)
 * in the order a0..a3 */
__device__ __forceinline__ const bf16 *ldsm_a(const bf16 *s, int ld, int row0, int k0, int lr, int lm) {
    return s + (row0 + lr + 8 * (lm & 1)) * ld + k0 + 8 * (lm >> 1);
}
/* B operands of two 8-column blocks n0, n0+8 from an n-major tile [n][ld]
 * (k contiguous), non-transposed: r = {b0(n0), b1(n0), b0(n0+8), b1(n0+8)} */
__device__ __forceinline__ const bf16 *ldsm_bn(const bf16 *s, int ld, int n0, int k0, int lr, int lm) {
    return s + (n0 + lr + 8 * (lm >> 1)) * ld + k0 + 8 * (lm & 1);
}
/* the same four registers from a k-major tile [k][ld] (n contiguous), with .trans */
__device__ __forceinline__ const bf16 *ldsm_bk(const bf16 *s, int ld, int n0, int k0, int lr, int lm) {
    return s + (k0 + lr + 8 * (lm & 1)) * ld + n0 + 8 * (lm >> 1);
}

/* ---- asynchronous global -> shared copies (16 bytes, both sides 16-byte aligned) ---- */
__device__ __forceinline__ void cp16(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/* waits until at most N of this thread's newest groups are pending */
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
/* a ROWS x COLS bf16 tile, global row stride gld, into shared rows of sld */
template <int ROWS, int COLS>
__device__ __forceinline__ void cp_tile(bf16 *s, int sld, const bf16 *g, size_t gld) {
    constexpr int CH = COLS / 8;
    for (int c = threadIdx.x; c < ROWS * CH; c += TC_THREADS) {
        int r = c / CH, k = (c % CH) * 8;
        cp16(s + r * sld + k, g + (size_t)r * gld + k);
    }
}
/* n 32-bit values (n a multiple of 4) */
__device__ __forceinline__ void cp_words(void *s, const void *g, int n) {
    for (int c = threadIdx.x; c < n / 4; c += TC_THREADS)
        cp16((unsigned char *)s + 16 * c, (const unsigned char *)g + 16 * c);
}

/* ---- RoPE inside the attention (ops.h attention_rope_*) ----
 * Only with hd == HD (16, 32, 64, 128): column d's rotate-half partner is
 * d +- HD/2, within the tile and, in the layouts below, in the same thread.
 * cs: rope.cu's (cos, sin) table [rows][HD/2] of the positions (the same bits
 * as rope_fwd's), so a rotated value is rope_kernel's expression, rounded to
 * bf16 once. */

/* x rotated: own value x, partner xp, column d (< HD) */
__device__ __forceinline__ float rope_rot(float x, float xp, float2 r, bool lowhalf) {
    return lowhalf ? x * r.x - xp * r.y : x * r.x + xp * r.y;
}

/* ld_tile_f32 with each row rotated by its table row cs[r]; RB chunks' loads in
 * flight per thread before their stores (the forward's hd-64 kernel spills with
 * 1, the backward's with 2, at their register bounds) */
template <int ROWS, int HD, int RB>
__device__ __forceinline__ void ld_tile_rope(bf16 *s, int sld, const float *g, size_t gld, int nvalid, bool vec,
                                             const float2 *cs) {
    constexpr int CH = HD / 4, PER = ROWS * CH / TC_THREADS, BATCH = PER < RB ? PER : RB, HALF = HD / 2;
    static_assert(ROWS * CH % TC_THREADS == 0 && PER % BATCH == 0 && HALF % 4 == 0, "whole chunks per thread");
#pragma unroll
    for (int u0 = 0; u0 < PER; u0 += BATCH) {
    float4 v[BATCH], w[BATCH];
#pragma unroll
    for (int u = 0; u < BATCH; u++) {
        int c = threadIdx.x + (u0 + u) * TC_THREADS, r = c / CH, d = (c % CH) * 4;
        int pd = d < HALF ? d + HALF : d - HALF;
        v[u] = w[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nvalid) {
            const float *p = g + (size_t)r * gld;
            if (vec) {
                v[u] = *reinterpret_cast<const float4 *>(p + d);
                w[u] = *reinterpret_cast<const float4 *>(p + pd);
            } else {
                v[u] = make_float4(p[d], p[d + 1], p[d + 2], p[d + 3]);
                w[u] = make_float4(p[pd], p[pd + 1], p[pd + 2], p[pd + 3]);
            }
        }
    }
#pragma unroll
    for (int u = 0; u < BATCH; u++) {
        int c = threadIdx.x + (u0 + u) * TC_THREADS, r = c / CH, d = (c % CH) * 4;
        bool lo = d < HALF;
        float o[4] = {0.f, 0.f, 0.f, 0.f};
        if (r < nvalid) {  /* (cos, sin) of pairs i .. i+3: two 16-byte loads */
            const float2 *t = cs + (size_t)r * HALF + (lo ? d : d - HALF);
            float4 t01 = *reinterpret_cast<const float4 *>(t), t23 = *reinterpret_cast<const float4 *>(t + 2);
            o[0] = rope_rot(v[u].x, w[u].x, make_float2(t01.x, t01.y), lo);
            o[1] = rope_rot(v[u].y, w[u].y, make_float2(t01.z, t01.w), lo);
            o[2] = rope_rot(v[u].z, w[u].z, make_float2(t23.x, t23.y), lo);
            o[3] = rope_rot(v[u].w, w[u].w, make_float2(t23.z, t23.w), lo);
        }
        *reinterpret_cast<uint2 *>(s + r * sld + d) = make_uint2(pack_bf16(o[0], o[1]), pack_bf16(o[2], o[3]));
    }
    }
}

/* ROWS x HD tile of fp32 rows (row r at g + r * gld; rows >= nvalid and
 * columns >= hd read as 0) rounded to bf16 into shared [ROWS][sld]. For the
 * tiles a block reads exactly once (the forward's Q, the backward's K and V):
 * reading them straight from the op's fp32 inputs costs the same global
 * traffic as reading a converted copy, and saves the conversion pass over
 * them. Loads go in batches of 4 per thread before their stores. vec: hd % 4 == 0
 * and g, gld 16-byte aligned (float4 loads). */
template <int ROWS, int HD>
__device__ __forceinline__ void ld_tile_plain(bf16 *s, int sld, const float *g, size_t gld, int nvalid, int hd,
                                              bool vec) {
    constexpr int CH = HD / 4, PER = ROWS * CH / TC_THREADS, BATCH = PER < 4 ? PER : 4;
    static_assert(ROWS * CH % TC_THREADS == 0 && PER % BATCH == 0, "whole chunks per thread");
#pragma unroll
    for (int u0 = 0; u0 < PER; u0 += BATCH) {  /* BATCH loads in flight, then their stores */
    float4 v[BATCH];
#pragma unroll
    for (int u = 0; u < BATCH; u++) {
        int c = threadIdx.x + (u0 + u) * TC_THREADS, r = c / CH, d = (c % CH) * 4;
        v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nvalid && d < hd) {
            const float *p = g + (size_t)r * gld + d;
            if (vec) v[u] = *reinterpret_cast<const float4 *>(p);
            else {
                v[u].x = p[0];
                if (d + 1 < hd) v[u].y = p[1];
                if (d + 2 < hd) v[u].z = p[2];
                if (d + 3 < hd) v[u].w = p[3];
            }
        }
    }
#pragma unroll
    for (int u = 0; u < BATCH; u++) {
        int c = threadIdx.x + (u0 + u) * TC_THREADS, r = c / CH, d = (c % CH) * 4;
        *reinterpret_cast<uint2 *>(s + r * sld + d) = make_uint2(pack_bf16(v[u].x, v[u].y), pack_bf16(v[u].z, v[u].w));
    }
    }
}

/* ROPE: each row rotated first (attention_rope: hd == HD, cs the tile's rows of the (cos, sin) table) */
template <int ROWS, int HD, bool ROPE = false, int RB = 2>
__device__ __forceinline__ void ld_tile_f32(bf16 *s, int sld, const float *g, size_t gld, int nvalid, int hd,
                                            bool vec, const float2 *cs = NULL) {
    if constexpr (ROPE) ld_tile_rope<ROWS, HD, RB>(s, sld, g, gld, nvalid, vec, cs);
    else ld_tile_plain<ROWS, HD>(s, sld, g, gld, nvalid, hd, vec);
}

/* 2^x, flushing results below 2^-126 to 0 (softmax weights that small do not
 * matter); exp2f adds a denormal range fix-up around the same MUFU.EX2. Used
 * in the forward; in the backward (hd 64) ptxas then spilled 20 bytes at its
 * 168-register bound, so that one keeps exp2f. */
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* ---- conversion pass ---- */

/* x [B, n, heads, hd] fp32 -> rows [B, heads, np, HD] bf16, zeros on the
 * padding (rows n..np-1, columns hd..HD-1). One thread per 8 columns of a
 * (b, row, head), in x's order (column chunk fastest, then head, then row), so
 * a warp reads a contiguous run of x and writes whole 16-byte chunks, HD/8 of
 * them contiguous per head row. (The first version ran one thread per row:
 * scalar loads 3 KB apart and transposed 2-byte stores; the transposed copies
 * are now read from the row tiles by ldmatrix.trans.) VEC: hd % 8 == 0 and
 * 16-byte aligned x (and o), so a chunk is two float4 loads. Given o and lse
 * (the backward's dout): also D = dout.out in fp32 (summed over the HD/8
 * lanes of a row by shuffles) and lse * log2(e) into [B, heads, np] (0 on
 * padding rows and where lse = -inf, i.e. no visible key). */
template <int HD, bool VEC, bool ROPE = false>
__global__ void tc_convert_kernel(bf16 *rows, float *D2, float *L2, const float *x, const float *o, const float *lse,
                                  int B, int n, int heads, int hd, int np, const float2 *cs = NULL) {
    constexpr int CH = HD / 8;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    bool in = idx < (size_t)B * np * heads * CH;  /* no early return: the D sums shuffle */
    int c = (int)(idx % CH);
    size_t r = idx / CH;
    int hh = (int)(r % heads);
    size_t bi = r / heads;
    int i = (int)(bi % np);
    size_t b = bi / np;
    bool live = in && i < n;
    size_t off = live ? ((b * n + i) * heads + hh) * (size_t)hd + 8 * c : 0;
    float xv[8], ov[8];
    if (VEC && live && 8 * c < hd) {
        float4 x0 = *reinterpret_cast<const float4 *>(x + off), x1 = *reinterpret_cast<const float4 *>(x + off + 4);
        xv[0] = x0.x; xv[1] = x0.y; xv[2] = x0.z; xv[3] = x0.w;
        xv[4] = x1.x; xv[5] = x1.y; xv[6] = x1.z; xv[7] = x1.w;
        if (o) {
            float4 o0 = *reinterpret_cast<const float4 *>(o + off), o1 = *reinterpret_cast<const float4 *>(o + off + 4);
            ov[0] = o0.x; ov[1] = o0.y; ov[2] = o0.z; ov[3] = o0.w;
            ov[4] = o1.x; ov[5] = o1.y; ov[6] = o1.z; ov[7] = o1.w;
        }
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) {
            bool ok = live && 8 * c + e < hd;
            xv[e] = ok ? x[off + e] : 0.f;
            ov[e] = ok && o ? o[off + e] : 0.f;
        }
    }
    if constexpr (ROPE) {  /* attention_rope (hd == HD, no o): rotated by row i's table entries, then rounded */
        constexpr int HALF = HD / 2;
        static_assert(HALF % 8 == 0, "a chunk's partner is a whole chunk");
        if (live) {
            int d = 8 * c, pd = d < HALF ? d + HALF : d - HALF;
            bool lo = d < HALF;
            float xp[8];
            if (VEC) {
                float4 p0 = *reinterpret_cast<const float4 *>(x + off - d + pd),
                       p1 = *reinterpret_cast<const float4 *>(x + off - d + pd + 4);
                xp[0] = p0.x; xp[1] = p0.y; xp[2] = p0.z; xp[3] = p0.w;
                xp[4] = p1.x; xp[5] = p1.y; xp[6] = p1.z; xp[7] = p1.w;
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) xp[e] = x[off - d + pd + e];
            }
            const float2 *t = cs + (size_t)i * HALF + (lo ? d : d - HALF);
#pragma unroll
            for (int e = 0; e < 8; e++) xv[e] = rope_rot(xv[e], xp[e], t[e], lo);
        }
    }
    __align__(16) bf16 w[8];
    float dsum = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        w[e] = __float2bfloat16_rn(xv[e]);
        if (o) dsum += xv[e] * ov[e];  /* zero past hd and on padding rows */
    }
    size_t bh = b * heads + hh;
    if (in) *reinterpret_cast<uint4 *>(rows + (bh * np + i) * HD + 8 * c) = *reinterpret_cast<const uint4 *>(w);
    if (o) {
#pragma unroll
        for (int m = 1; m < CH; m <<= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, m);
        if (in && c == 0) {
            float l = live ? lse[bh * n + i] : 0.f;
            D2[bh * np + i] = dsum;
            L2[bh * np + i] = isfinite(l) ? l * LOG2E_F : 0.f;
        }
    }
}

/* mq[i] = keys visible to query i (0 on the padding up to np) */
__global__ void tc_visible_kernel(int *mq, const int *qpos, const int *kpos, int nq, int nk, int np) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < np) mq[i] = i < nq ? visible_keys(kpos, nk, qpos[i]) : 0;
}

/* ---- forward ---- */

/* HD <= 64: 4 resident blocks per SM (16 warps; 46 KB of shared tiles each at
 * HD 64), which caps registers at 128 (ptxas wanted 129 without the bound) */
template <int HD, bool ROPE>
__global__ void __launch_bounds__(TC_THREADS, HD <= 64 ? 4 : 1)
attention_tc_fwd_kernel(float *out, float *lse, const float *q, const bf16 *Kh, const bf16 *Vh, const int *mq,
                        int nq, int nkp, int nh, int nkv, int hd, float scale_log2, bool qvec, bf16 *ob,
                        const float2 *qcs) {
    constexpr int BQ = TC_BQ, BK = TC_BK, LDH = HD + 8, NB = BK / 8, ND = HD / 8;
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(tc_smem);  /* [BQ][LDH] */
    bf16 *sK = sQ + BQ * LDH;                      /* 2 x [BK][LDH] */
    bf16 *sV = sK + 2 * BK * LDH;                  /* 2 x [BK][LDH] (key-major; P V reads it with .trans) */
    __shared__ int smr[BQ];
    int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BQ;  /* long tiles first */
    int hk = h / (nh / nkv), warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int lr = lane & 7, lm = lane >> 3;
    int nrow = min(BQ, nq - q0);
    size_t bh = (size_t)b * nh + h, bk = (size_t)b * nkv + hk;
    const bf16 *Kb = Kh + bk * nkp * HD, *Vb = Vh + bk * nkp * HD;
    int mlast = mq[q0 + nrow - 1], row = warp * 16 + g;  /* this thread's rows: row, row + 8 */
    if (mlast > 0) {  /* the first key tile streams in while Q is read and rounded */
        cp_tile<BK, HD>(sK, LDH, Kb, HD);
        cp_tile<BK, HD>(sV, LDH, Vb, HD);
    }
    cp_commit();
    if (threadIdx.x < BQ) smr[threadIdx.x] = mq[q0 + threadIdx.x];
    ld_tile_f32<BQ, HD, ROPE>(sQ, LDH, q + ((size_t)b * nq + q0) * nh * hd + (size_t)h * hd, (size_t)nh * hd, nrow,
                              hd, qvec, ROPE ? qcs + (size_t)q0 * (HD / 2) : NULL);
    __syncthreads();
    int mrow[2] = {smr[row], smr[row + 8]};
    u32 qf[HD / 16][4];  /* this warp's Q fragments, the same for every key tile */
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) ldsm4(qf[kk], ldsm_a(sQ, LDH, warp * 16, kk * 16, lr, lm));
    float o[ND][4], mrun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    for (int c0 = 0, buf = 0; c0 < mlast; c0 += BK, buf ^= 1) {
        if (c0 + BK < mlast) {  /* prefetch the next tile into the other buffer */
            cp_tile<BK, HD>(sK + (buf ^ 1) * BK * LDH, LDH, Kb + (size_t)(c0 + BK) * HD, HD);
            cp_tile<BK, HD>(sV + (buf ^ 1) * BK * LDH, LDH, Vb + (size_t)(c0 + BK) * HD, HD);
        }
        cp_commit();
        cp_wait<1>();  /* this tile has landed */
        __syncthreads();
        const bf16 *cK = sK + buf * BK * LDH, *cV = sV + buf * BK * LDH;
        float s[NB][4];
#pragma unroll
        for (int n = 0; n < NB; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
            for (int n = 0; n < NB; n += 2) {
                u32 bb[4];
                ldsm4(bb, ldsm_bn(cK, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(s[n], qf[kk], bb[0], bb[1]);
                mma_bf16(s[n + 1], qf[kk], bb[2], bb[3]);
            }
        }
        /* online softmax in base 2; accumulator e of block n is row
         * row + 8*(e/2), key c0 + 8n + 2t + e%2 */
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float x = c0 + n * 8 + 2 * t + e < mrow[hr] ? s[n][2 * hr + e] * scale_log2 : -INFINITY;
                    s[n][2 * hr + e] = x;
                    tmax = fmaxf(tmax, x);
                }
            float mn = fmaxf(mrun[hr], quad_max(tmax));
            /* nothing visible to the row yet: keep sums at 0 (exp2(-inf) = 0) */
            float alpha = mn == -INFINITY ? 1.f : ex2(mrun[hr] - mn), base = mn == -INFINITY ? 0.f : mn;
            float rs = 0.f;
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = ex2(s[n][2 * hr + e] - base);
                    s[n][2 * hr + e] = p;
                    rs += p;
                }
            l[hr] = l[hr] * alpha + rs;  /* this lane's partial sum; the quad adds up at the end */
            mrun[hr] = mn;
#pragma unroll
            for (int n = 0; n < ND; n++) {
                o[n][2 * hr] *= alpha;
                o[n][2 * hr + 1] *= alpha;
            }
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            u32 a[4];
            frag_from_acc(a, s, kk);
#pragma unroll
            for (int n = 0; n < ND; n += 2) {
                u32 bb[4];
                ldsm4_t(bb, ldsm_bk(cV, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(o[n], a, bb[0], bb[1]);
                mma_bf16(o[n + 1], a, bb[2], bb[3]);
            }
        }
        __syncthreads();  /* readers done before this buffer is refilled */
    }
    cp_wait<0>();
    float *obase = out + ((size_t)b * nq + q0) * nh * hd + (size_t)h * hd;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        float lt = quad_sum(l[hr]);
        int r = row + 8 * hr;
        if (r >= nrow) continue;
        float inv = lt > 0.f ? 1.f / lt : 0.f;  /* no visible key: zeros */
        float *orow = obase + (size_t)r * nh * hd;
        bf16 *brow = ob ? ob + (orow - out) : NULL;   /* out's bf16 shadow (the o product's operand), if any */
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int d = n * 8 + 2 * t + e;
                if (d < hd) {
                    float val = o[n][2 * hr + e] * inv;
                    orow[d] = val;
                    if (brow) brow[d] = __float2bfloat16_rn(val);
                }
            }
        if (t == 0) lse[bh * nq + q0 + r] = lt > 0.f ? mrun[hr] * LN2_F + logf(lt) : -INFINITY;
    }
}

/* ---- backward ---- */

template <int HD, int BQ, bool ROPE>
__global__ void __launch_bounds__(TC_THREADS, HD == 64 ? 3 : 1)
attention_tc_bwd_kernel(float *dq, float *dk, float *dv, const bf16 *Qh, const bf16 *Oh, const float *D2,
                        const float *L2, const float *k, const float *v, const int *mq, const int *qpos,
                        const int *kpos, int nq, int nk, int nqp, int nh, int nkv, int hd, float scale,
                        float scale_log2, bool kvvec, int acc, const float2 *qcs, const float2 *kcs) {
    constexpr int BK = TC_BK, LDH = HD + 8, LDS = BQ + 8, NQ = BQ / 8, ND = HD / 8, HALF = HD / 2;
    /* dQ = dS K: warps split the BQ/16 row groups, then the column blocks. With WPR > 1 warps per row group,
     * warp nw owns the blocks nw*NDW/2 + [0, NDW/2) of each half of the columns (blk below), so a thread
     * holds every column's rotate-half partner (local block m + NDW/2), which RoPE's inverse rotation of dq
     * needs; the sums are the same whichever warp makes them */
    constexpr int RG = BQ / 16, WPR = 4 / RG, NDW = ND / WPR;
    static_assert(NDW % 2 == 0 && NQ % 2 == 0, "ldmatrix x4 reads pairs of 8-column blocks");
    static_assert(WPR == 1 || (NDW / 2) % 2 == 0, "block pairs within a half");
    /* one stage of query-side tiles: Q [BQ][LDH], dO [BQ][LDH], then m, lse2, D (BQ words each); the
     * products that need Q, dO or K along the other axis read them with ldmatrix.trans */
    constexpr int STAGE = 2 * BQ * LDH + 3 * BQ * 2;  /* in bf16 units */
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sK = reinterpret_cast<bf16 *>(tc_smem), *sV = sK + BK * LDH, *sdS = sV + BK * LDH,
         *stages = sdS + BK * LDS;  /* sdS [BK][LDS], key-major (the accumulators' layout) */
    int hk = blockIdx.x, b = blockIdx.y, c0 = blockIdx.z * BK;  /* low key tiles (the most queries) first */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, group = nh / nkv;
    int lr = lane & 7, lm = lane >> 3;
    int ncol = min(BK, nk - c0);
    int i0 = first_query_at(qpos, nq, kpos[c0]);  /* earlier queries see none of these keys */
    if (i0 >= nq) {  /* nothing to add; an overwrite (acc 0) stores the zero gradient */
        if (!acc) zero_kv_rows(dk, dv, ((size_t)b * nk + c0) * nkv * hd + (size_t)hk * hd, (size_t)nkv * hd, ncol, hd);
        return;
    }
    int qa = i0 / BQ * BQ, ntiles = (nq - qa + BQ - 1) / BQ, nit = group * ntiles;
    /* query-side tiles of iteration it (head hk*group + it/ntiles, tile it%ntiles) into stage st */
    auto fetch = [&](int it, int st) {
        size_t bh = (size_t)b * nh + hk * group + it / ntiles;
        int q0 = qa + it % ntiles * BQ;
        bf16 *s = stages + st * STAGE;
        cp_tile<BQ, HD>(s, LDH, Qh + (bh * nqp + q0) * HD, HD);
        cp_tile<BQ, HD>(s + BQ * LDH, LDH, Oh + (bh * nqp + q0) * HD, HD);
        bf16 *side = s + 2 * BQ * LDH;
        cp_words(side, mq + q0, BQ);
        cp_words(side + 2 * BQ, L2 + bh * nqp + q0, BQ);
        cp_words(side + 4 * BQ, D2 + bh * nqp + q0, BQ);
    };
    fetch(0, 0);
    cp_commit();  /* the first query tile streams in while K and V are read and rounded (read once) */
    size_t kvoff = ((size_t)b * nk + c0) * nkv * hd + (size_t)hk * hd;
    ld_tile_f32<BK, HD, ROPE, 1>(sK, LDH, k + kvoff, (size_t)nkv * hd, ncol, hd, kvvec,
                                 ROPE ? kcs + (size_t)c0 * HALF : NULL);
    ld_tile_f32<BK, HD>(sV, LDH, v + kvoff, (size_t)nkv * hd, ncol, hd, kvvec);
    bool dq_pairs = hd % 2 == 0 && ((uintptr_t)dq % 8 == 0);  /* float2 atomics aligned */
    int krow = warp * 16 + g;                                 /* this thread's keys: krow, krow + 8 */
    float adk[ND][4], adv[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) adk[n][e] = adv[n][e] = 0.f;
    for (int it = 0; it < nit; it++) {
        if (it + 1 < nit) fetch(it + 1, (it + 1) & 1);
        cp_commit();
        cp_wait<1>();  /* this iteration's tiles have landed */
        __syncthreads();
        const bf16 *s = stages + (it & 1) * STAGE;
        const bf16 *sQ = s, *sO = s + BQ * LDH;
        const int *smr = reinterpret_cast<const int *>(sO + BQ * LDH);
        const float *slse = reinterpret_cast<const float *>(smr + BQ), *sD = slse + BQ;
        int h = hk * group + it / ntiles, q0 = qa + it % ntiles * BQ, nrow = min(BQ, nq - q0);
        /* transposed scores: rows = this warp's 16 keys, columns = the BQ queries */
        float st[NQ][4], dpt[NQ][4];
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[n][e] = dpt[n][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            u32 ak[4], av[4];
            ldsm4(ak, ldsm_a(sK, LDH, warp * 16, kk * 16, lr, lm));
            ldsm4(av, ldsm_a(sV, LDH, warp * 16, kk * 16, lr, lm));
#pragma unroll
            for (int n = 0; n < NQ; n += 2) {
                u32 bb[4];
                ldsm4(bb, ldsm_bn(sQ, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(st[n], ak, bb[0], bb[1]);
                mma_bf16(st[n + 1], ak, bb[2], bb[3]);
                ldsm4(bb, ldsm_bn(sO, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(dpt[n], av, bb[0], bb[1]);
                mma_bf16(dpt[n + 1], av, bb[2], bb[3]);
            }
        }
        /* p and ds: accumulator e of block n is key krow + 8*(e/2), query 8n + 2t + e%2 */
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int i = n * 8 + 2 * t + e, mi = smr[i];
                float li = slse[i], Di = sD[i];
#pragma unroll
                for (int hr = 0; hr < 2; hr++) {
                    float p = c0 + krow + 8 * hr < mi ? exp2f(st[n][2 * hr + e] * scale_log2 - li) : 0.f;
                    st[n][2 * hr + e] = p;
                    dpt[n][2 * hr + e] = p * (dpt[n][2 * hr + e] - Di);
                }
            }
        /* dV += P^T dO, dK += dS^T Q (scale applied at the end) */
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            u32 ap[4], as[4];
            frag_from_acc(ap, st, kk);
            frag_from_acc(as, dpt, kk);
#pragma unroll
            for (int n = 0; n < ND; n += 2) {
                u32 bb[4];
                ldsm4_t(bb, ldsm_bk(sO, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(adv[n], ap, bb[0], bb[1]);
                mma_bf16(adv[n + 1], ap, bb[2], bb[3]);
                ldsm4_t(bb, ldsm_bk(sQ, LDH, n * 8, kk * 16, lr, lm));
                mma_bf16(adk[n], as, bb[0], bb[1]);
                mma_bf16(adk[n + 1], as, bb[2], bb[3]);
            }
        }
        if (dq) {
            /* dQ += scale dS K: dS^T goes through shared memory as it sits in the
             * accumulators (key rows, adjacent query pairs: one 32-bit store
             * each, conflict-free); the dS operand is read back with .trans */
#pragma unroll
            for (int n = 0; n < NQ; n++) {
                *reinterpret_cast<u32 *>(sdS + krow * LDS + n * 8 + 2 * t) = pack_bf16(dpt[n][0], dpt[n][1]);
                *reinterpret_cast<u32 *>(sdS + (krow + 8) * LDS + n * 8 + 2 * t) = pack_bf16(dpt[n][2], dpt[n][3]);
            }
            __syncthreads();
            int rg = warp % RG, nw = warp / RG;
            /* global 8-column block of local block m (WPR 1: nw is 0, the expression is the one the kernel had
             * before the RoPE variant; ptxas allocates the hd-64 kernel without spills with it) */
#define blk(m) (WPR == 1 ? nw * NDW + (m) : ((m) < NDW / 2 ? 0 : ND / 2) + nw * (NDW / 2) + (m) % (NDW / 2))
            float acc[NDW][4];
#pragma unroll
            for (int m = 0; m < NDW; m++) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                u32 a[4];
                ldsm4_t(a, ldsm_bn(sdS, LDS, kk * 16, rg * 16, lr, lm));  /* rows kk*16.. (keys) */
#pragma unroll
                for (int m = 0; m < NDW; m += 2) {
                    u32 bb[4];
                    ldsm4_t(bb, ldsm_bk(sK, LDH, blk(m) * 8, kk * 16, lr, lm));
                    mma_bf16(acc[m], a, bb[0], bb[1]);
                    mma_bf16(acc[m + 1], a, bb[2], bb[3]);
                }
            }
            float *qbase = dq + ((size_t)b * nq + q0) * nh * hd + (size_t)h * hd;
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                int r = rg * 16 + g + 8 * hr;
                if (r >= nrow) continue;
                float *qrow = qbase + (size_t)r * nh * hd;
                if constexpr (ROPE) {
                    /* the gradient of the unrotated q: each contribution rotated back by -angle (linear, so the
                     * atomics' sum is the rotated sum); hd == HD, so every column exists and pairs are aligned */
                    const float2 *tr = qcs + (size_t)(q0 + r) * HALF;
#pragma unroll
                    for (int m = 0; m < NDW / 2; m++) {
                        int d = blk(m) * 8 + 2 * t;  /* < HALF; its partners d + HALF are local block m + NDW/2 */
                        float4 cs2 = *reinterpret_cast<const float4 *>(tr + d);
                        float g0 = scale * acc[m][2 * hr], g1 = scale * acc[m][2 * hr + 1];
                        float p0 = scale * acc[m + NDW / 2][2 * hr], p1 = scale * acc[m + NDW / 2][2 * hr + 1];
                        float2 lo = make_float2(g0 * cs2.x + p0 * cs2.y, g1 * cs2.z + p1 * cs2.w);
                        float2 hi = make_float2(p0 * cs2.x - g0 * cs2.y, p1 * cs2.z - g1 * cs2.w);
                        if (dq_pairs) {
                            atomicAdd(reinterpret_cast<float2 *>(qrow + d), lo);
                            atomicAdd(reinterpret_cast<float2 *>(qrow + d + HALF), hi);
                        } else {
                            atomicAdd(qrow + d, lo.x);
                            atomicAdd(qrow + d + 1, lo.y);
                            atomicAdd(qrow + d + HALF, hi.x);
                            atomicAdd(qrow + d + HALF + 1, hi.y);
                        }
                    }
                } else {
#pragma unroll
                for (int m = 0; m < NDW; m++) {
                    int d = blk(m) * 8 + 2 * t;
                    float x0 = scale * acc[m][2 * hr], x1 = scale * acc[m][2 * hr + 1];
                    if (d + 1 < hd) {
                        if (dq_pairs) atomicAdd(reinterpret_cast<float2 *>(qrow + d), make_float2(x0, x1));
                        else {
                            atomicAdd(qrow + d, x0);
                            atomicAdd(qrow + d + 1, x1);
                        }
                    } else if (d < hd) {
                        atomicAdd(qrow + d, x0);
                    }
                }
                }
            }
        }
        /* readers done before this stage and sdS are refilled. With dq the
         * barrier between the sdS stores and the dQ product already orders
         * the stage's last reads before the next fetch into it, and the next
         * iteration's first barrier orders the dQ reads of sdS before its
         * stores, so only the dq == NULL path needs one here */
        if (!dq) __syncthreads();
    }
    cp_wait<0>();
    size_t kstride = (size_t)nkv * hd, koff = ((size_t)b * nk + c0) * kstride + (size_t)hk * hd;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        int j = krow + 8 * hr;
        if (j >= ncol) continue;
        size_t row = koff + (size_t)j * kstride;
        if constexpr (ROPE) {  /* dk of the unrotated k: rotated back by -angle at its one write */
            const float2 *tr = kcs + (size_t)(c0 + j) * HALF;
#pragma unroll
            for (int n = 0; n < ND / 2; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int d = n * 8 + 2 * t + e;
                    float2 r = tr[d];
                    float g0 = scale * adk[n][2 * hr + e], g1 = scale * adk[n + ND / 2][2 * hr + e];
                    float x0 = g0 * r.x + g1 * r.y, x1 = g1 * r.x - g0 * r.y;
                    if (dk) {
                        dk[row + d] = acc ? dk[row + d] + x0 : x0;
                        dk[row + d + HALF] = acc ? dk[row + d + HALF] + x1 : x1;
                    }
                }
#pragma unroll
            for (int n = 0; n < ND; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int d = n * 8 + 2 * t + e;
                    if (dv) dv[row + d] = acc ? dv[row + d] + adv[n][2 * hr + e] : adv[n][2 * hr + e];
                }
        } else {
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int d = n * 8 + 2 * t + e;
                if (d >= hd) continue;
                float gk = scale * adk[n][2 * hr + e], gv = adv[n][2 * hr + e];   /* acc 0 overwrites */
                if (dk) dk[row + d] = acc ? dk[row + d] + gk : gk;
                if (dv) dv[row + d] = acc ? dv[row + d] + gv : gv;
            }
        }
    }
}

#undef blk

/* ---- launchers ---- */

int attention_tc_applies(int hd) { return hd >= 1 && hd <= 128 && !strcmp(cuda_matmul_precision(), "bf16"); }

static int round_up(int n, int m) { return (n + m - 1) / m * m; }
static size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* the bf16 copies: one scratch per branch stream (both branches of a parallel
 * block may run at once), grown on demand and kept (the shapes recur every step) */
static unsigned char *tc_scratch(size_t bytes) {
    static BranchScratch s;
    return (unsigned char *)cuda_branch_scratch(&s, bytes, "the bf16 attention scratch");
}

template <int HD>
static void convert(bf16 *rows, float *D2, float *L2, const float *x, const float *o, const float *lse, int B, int n,
                    int heads, int hd, int np, const float2 *cs = NULL) {
    size_t threads = (size_t)B * np * heads * (HD / 8);
    bool vec = hd % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)o % 16 == 0;  /* o may be NULL */
    dim3 g = blocks_for(threads, 256);
    if (cs && vec) tc_convert_kernel<HD, true, true><<<g, 256, 0, cuda_stream()>>>(rows, D2, L2, x, o, lse, B, n, heads,
                                                                                    hd, np, cs);
    else if (cs) tc_convert_kernel<HD, false, true><<<g, 256, 0, cuda_stream()>>>(rows, D2, L2, x, o, lse, B, n, heads,
                                                                                   hd, np, cs);
    else if (vec) tc_convert_kernel<HD, true><<<g, 256, 0, cuda_stream()>>>(rows, D2, L2, x, o, lse, B, n, heads, hd,
                                                                             np);
    else tc_convert_kernel<HD, false><<<g, 256, 0, cuda_stream()>>>(rows, D2, L2, x, o, lse, B, n, heads, hd, np);
    CUDA_LAUNCHED();
}
static void visible(int *mq, const int *qpos, const int *kpos, int nq, int nk, int nqp) {
    tc_visible_kernel<<<blocks_for(nqp, 256), 256, 0, cuda_stream()>>>(mq, qpos, kpos, nq, nk, nqp);
    CUDA_LAUNCHED();
}

/* RoPE's (cos, sin) tables of qpos and kpos (attention_rope: theta > 0; else
 * none): rope.cu's, [n][hd/2] each, in their own per-branch scratch; one
 * table when the positions are the same array. Returns the bytes written
 * from *qcs (for cuda_shadow_done), or (size_t)-1 if the scratch failed. */
static size_t rope_tables(const float2 **qcs, const float2 **kcs, const int *qpos, const int *kpos, int nq, int nk,
                          int hd, float theta) {
    *qcs = *kcs = NULL;
    if (theta <= 0.f) return 0;
    static BranchScratch s;
    int half = hd / 2, shared = qpos == kpos && nq == nk;
    size_t bq = align256(sizeof(float2) * (size_t)(nq > 0 ? nq : 1) * half);
    size_t bytes = bq + (shared ? 0 : align256(sizeof(float2) * (size_t)(nk > 0 ? nk : 1) * half));
    unsigned char *p = (unsigned char *)cuda_branch_scratch(&s, bytes, "the RoPE tables of the attention");
    if (!p) return (size_t)-1;
    *qcs = (const float2 *)p;
    *kcs = shared ? *qcs : (const float2 *)(p + bq);
    if (nq > 0) cuda_rope_table((float2 *)*qcs, qpos, nq, hd, theta);
    if (!shared && nk > 0) cuda_rope_table((float2 *)*kcs, kpos, nk, hd, theta);
    return bytes;
}

/* theta > 0: attention_rope (q and k rotated by their positions first, hd == HD) */
template <int HD>
static void tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                   const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, float theta) {
    int nqp = round_up(nq, TC_BQ), nkp = round_up(nk > 0 ? nk : 1, TC_BK);
    size_t bk = align256(sizeof(bf16) * B * nkv * nkp * HD);
    unsigned char *p = tc_scratch(2 * bk + align256(sizeof(int) * nqp));
    if (!p) return;
    bf16 *Kh = (bf16 *)p, *Vh = (bf16 *)(p + bk);  /* Q is read and rounded by the kernel (read once) */
    int *mq = (int *)(p + 2 * bk);
    size_t smem = sizeof(bf16) * (TC_BQ * (HD + 8) + 4 * TC_BK * (HD + 8));
    const void *kern = theta > 0.f ? (const void *)attention_tc_fwd_kernel<HD, true>
                                   : (const void *)attention_tc_fwd_kernel<HD, false>;
    if (attention_set_smem(kern, smem, "attention_fwd")) return;
    /* the RoPE tables first (declared as all they write, so other roundings stay valid), before a shadow is
     * claimed: a failure then leaves no claim behind */
    const float2 *qcs, *kcs;
    unsigned long t0 = cuda_epoch;
    size_t tb = rope_tables(&qcs, &kcs, qpos, kpos, nq, nk, hd, theta);
    if (tb == (size_t)-1) return;
    CudaRange tw = {qcs, tb};
    if (tb) cuda_shadow_done(t0, &tw, 1);
    /* the output is what the o product reads next: its bf16 rounding is written too (common.cuh
     * cuda_shadow_claim); every launch from here on is declared to cuda_shadow_done */
    size_t nout = (size_t)B * nq * nh * hd;
    bf16 *ob = (bf16 *)cuda_shadow_claim(out, nout);
    unsigned long before = cuda_epoch;
    convert<HD>(Kh, NULL, NULL, k, NULL, NULL, B, nk, nkv, hd, nkp, kcs);
    convert<HD>(Vh, NULL, NULL, v, NULL, NULL, B, nk, nkv, hd, nkp);
    visible(mq, qpos, kpos, nq, nk, nqp);
    dim3 grid(nh, B, nqp / TC_BQ);
    bool qvec = hd % 4 == 0 && (uintptr_t)q % 16 == 0;
    if (qcs)
        attention_tc_fwd_kernel<HD, true><<<grid, TC_THREADS, smem, cuda_stream()>>>(
            out, lse, q, Kh, Vh, mq, nq, nkp, nh, nkv, hd, LOG2E_F / sqrtf((float)hd), qvec, ob, qcs);
    else
        attention_tc_fwd_kernel<HD, false><<<grid, TC_THREADS, smem, cuda_stream()>>>(
            out, lse, q, Kh, Vh, mq, nq, nkp, nh, nkv, hd, LOG2E_F / sqrtf((float)hd), qvec, ob, NULL);
    CUDA_LAUNCHED();
    CudaRange wr[4] = {{p, 2 * bk + align256(sizeof(int) * nqp)}, {out, nout * sizeof(float)},
                       {lse, sizeof(float) * B * nh * nq}, {ob, ob ? nout * sizeof(bf16) : 0}};
    cuda_shadow_done(before, wr, 4);
}

template <int HD, int BQ>
static void tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                   const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B, int nq,
                   int nk, int nh, int nkv, int hd, int acc, float theta) {
    int nqp = round_up(nq, TC_BQ), nkp = round_up(nk, TC_BK);
    size_t bq = align256(sizeof(bf16) * B * nh * nqp * HD), br = align256(sizeof(float) * B * nh * nqp);
    unsigned char *p = tc_scratch(2 * bq + 2 * br + align256(sizeof(int) * nqp));
    if (!p) return;
    const float2 *qcs, *kcs;
    if (rope_tables(&qcs, &kcs, qpos, kpos, nq, nk, hd, theta) == (size_t)-1) return;
    /* K and V are read and rounded by the kernel (each block reads its key tile once) */
    bf16 *Qh = (bf16 *)p, *Oh = (bf16 *)(p + bq);
    float *D2 = (float *)(p + 2 * bq), *L2 = (float *)(p + 2 * bq + br);
    int *mq = (int *)(p + 2 * bq + 2 * br);
    convert<HD>(Qh, NULL, NULL, q, NULL, NULL, B, nq, nh, hd, nqp, qcs);
    convert<HD>(Oh, D2, L2, dout, out, lse, B, nq, nh, hd, nqp);
    visible(mq, qpos, kpos, nq, nk, nqp);
    size_t stage = 2 * BQ * (HD + 8) + 6 * BQ;
    size_t smem = sizeof(bf16) * (2 * TC_BK * (HD + 8) + TC_BK * (BQ + 8) + 2 * stage);
    const void *kern = qcs ? (const void *)attention_tc_bwd_kernel<HD, BQ, true>
                           : (const void *)attention_tc_bwd_kernel<HD, BQ, false>;
    if (attention_set_smem(kern, smem, "attention_bwd")) return;
    dim3 grid(nkv, B, nkp / TC_BK);
    float scale = 1.f / sqrtf((float)hd);
    bool kvvec = hd % 4 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0;
    /* dq is summed by atomics from every key tile: an overwrite zeroes it first
     * (dk, dv are stored by the one block owning their rows) */
    if (!acc && dq) cuda_zero(dq, sizeof(float) * B * nq * nh * hd);
    if (qcs)
        attention_tc_bwd_kernel<HD, BQ, true><<<grid, TC_THREADS, smem, cuda_stream()>>>(
            dq, dk, dv, Qh, Oh, D2, L2, k, v, mq, qpos, kpos, nq, nk, nqp, nh, nkv, hd, scale, scale * LOG2E_F,
            kvvec, acc, qcs, kcs);
    else
        attention_tc_bwd_kernel<HD, BQ, false><<<grid, TC_THREADS, smem, cuda_stream()>>>(
            dq, dk, dv, Qh, Oh, D2, L2, k, v, mq, qpos, kpos, nq, nk, nqp, nh, nkv, hd, scale, scale * LOG2E_F,
            kvvec, acc, NULL, NULL);
    CUDA_LAUNCHED();
}

void attention_tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                      const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    if (hd <= 16) tc_fwd<16>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, 0.f);
    else if (hd <= 32) tc_fwd<32>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, 0.f);
    else if (hd <= 64) tc_fwd<64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, 0.f);
    else tc_fwd<128>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, 0.f);
}

/* hd 128 takes 32-query tiles in the backward: 64 would not fit its
 * accumulators in registers */
void attention_tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                      const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                      int nq, int nk, int nh, int nkv, int hd, int acc) {
    if (hd <= 16) tc_bwd<16, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, 0.f);
    else if (hd <= 32) tc_bwd<32, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, 0.f);
    else if (hd <= 64) tc_bwd<64, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, 0.f);
    else tc_bwd<128, 32>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, 0.f);
}

/* ---- RoPE inside (ops.h attention_rope_*): head sizes equal to a tile width only ---- */

int attention_tc_rope_applies(int hd) {
    return attention_tc_applies(hd) && (hd == 16 || hd == 32 || hd == 64 || hd == 128);
}

void attention_tc_rope_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                           const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, float theta) {
    if (hd == 16) tc_fwd<16>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    else if (hd == 32) tc_fwd<32>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    else if (hd == 64) tc_fwd<64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    else tc_fwd<128>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
}

void attention_tc_rope_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                           int nq, int nk, int nh, int nkv, int hd, int acc, float theta) {
    if (hd == 16) tc_bwd<16, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, theta);
    else if (hd == 32) tc_bwd<32, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, theta);
    else if (hd == 64) tc_bwd<64, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, theta);
    else tc_bwd<128, 32>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, theta);
}
