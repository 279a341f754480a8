/* attention_tc.cu - causal grouped-query attention on bf16 tensor cores
 * (FlashAttention-2 structure), the path of the bf16 matmul precision.
 *
 * The op contract is unchanged (attention.cu, ops.h): q/k/v/dout and every
 * output stay fp32. A conversion pass rounds them to bf16 into per-head,
 * zero-padded scratch copies ([B, heads, rows rounded up to 64, HD], and a
 * transposed [B, heads, HD, rows] copy for operands read along the other
 * axis), so the attention kernels stream whole tiles with 16-byte cp.async
 * copies, double-buffered, with no bounds checks. Products run as warp-level
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
 *   dQ += dS K                       (dS through shared memory, fp32 atomics)
 * dq therefore gets one atomic add per element per key tile: not bitwise
 * deterministic run to run (dk, dv and the forward are). The recompute of S
 * and dP that a separate dq kernel needs would cost more than the atomics.
 *
 * Shared tiles are [rows][cols + 8] bf16: the padding makes the fragment
 * reads (lane 4g + t reads row g, 32-bit word t) hit 32 distinct banks. */
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
__device__ __forceinline__ u32 ld32(const bf16 *p) { return *reinterpret_cast<const u32 *>(p); }
/* A operand: rows row0.., columns k0.. of a [rows][ld] tile.
 * a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..) */
__device__ __forceinline__ void frag_a(u32 (&a)[4], const bf16 *s, int ld, int row0, int k0, int g, int t) {
    const bf16 *p = s + (row0 + g) * ld + k0 + 2 * t;
    a[0] = ld32(p);
    a[1] = ld32(p + 8 * ld);
    a[2] = ld32(p + 8);
    a[3] = ld32(p + 8 * ld + 8);
}
/* B operand (k x n) stored n-major, [n][ld] with k contiguous:
 * b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g) */
__device__ __forceinline__ void frag_b(u32 &b0, u32 &b1, const bf16 *s, int ld, int n0, int k0, int g, int t) {
    const bf16 *p = s + (n0 + g) * ld + k0 + 2 * t;
    b0 = ld32(p);
    b1 = ld32(p + 8);
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

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* ---- conversion pass ---- */

/* x [B, n, heads, hd] fp32 -> rows [B, heads, np, HD] and/or cols
 * [B, heads, HD, np] bf16 (either may be NULL), zeros on the padding (rows
 * n..np-1, columns hd..HD-1). One thread per (b, head, row), row fastest, so
 * the transposed stores coalesce. Given o and lse (the backward's dout):
 * also D = dout.out in fp32 and lse * log2(e) into [B, heads, np] (0 on
 * padding rows and where lse = -inf, i.e. no visible key). */
template <int HD>
__global__ void tc_convert_kernel(bf16 *rows, bf16 *cols, float *D2, float *L2, const float *x, const float *o,
                                  const float *lse, int B, int n, int heads, int hd, int np) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * heads * np) return;
    int i = (int)(idx % np);
    size_t bh = idx / np, b = bh / heads;
    int hh = (int)(bh % heads);
    bool live = i < n;
    size_t off = live ? ((b * n + i) * heads + hh) * (size_t)hd : 0;
    float dsum = 0.f;
#pragma unroll
    for (int d0 = 0; d0 < HD; d0 += 8) {
        __align__(16) bf16 w[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int d = d0 + e;
            float xv = live && d < hd ? x[off + d] : 0.f;
            if (o && live && d < hd) dsum += xv * o[off + d];
            w[e] = __float2bfloat16_rn(xv);
            if (cols) cols[(bh * HD + d) * np + i] = w[e];
        }
        if (rows) *reinterpret_cast<uint4 *>(rows + (bh * np + i) * HD + d0) = *reinterpret_cast<const uint4 *>(w);
    }
    if (o) {
        float l = live ? lse[bh * n + i] : 0.f;
        D2[bh * np + i] = dsum;
        L2[bh * np + i] = isfinite(l) ? l * LOG2E_F : 0.f;
    }
}

/* mq[i] = keys visible to query i (0 on the padding up to np) */
__global__ void tc_visible_kernel(int *mq, const int *qpos, const int *kpos, int nq, int nk, int np) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < np) mq[i] = i < nq ? visible_keys(kpos, nk, qpos[i]) : 0;
}

/* ---- forward ---- */

template <int HD>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_fwd_kernel(float *out, float *lse, const bf16 *Qh, const bf16 *Kh, const bf16 *Vt, const int *mq,
                        int nq, int nqp, int nkp, int nh, int nkv, int hd, float scale_log2) {
    constexpr int BQ = TC_BQ, BK = TC_BK, LDH = HD + 8, LDT = BK + 8, NB = BK / 8, ND = HD / 8;
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(tc_smem);  /* [BQ][LDH] */
    bf16 *sK = sQ + BQ * LDH;                      /* 2 x [BK][LDH] */
    bf16 *sVt = sK + 2 * BK * LDH;                 /* 2 x [HD][LDT] */
    __shared__ int smr[BQ];
    int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BQ;  /* long tiles first */
    int hk = h / (nh / nkv), warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int nrow = min(BQ, nq - q0);
    size_t bh = (size_t)b * nh + h, bk = (size_t)b * nkv + hk;
    const bf16 *Kb = Kh + bk * nkp * HD, *Vb = Vt + bk * HD * nkp;
    cp_tile<BQ, HD>(sQ, LDH, Qh + (bh * nqp + q0) * HD, HD);
    if (threadIdx.x < BQ) smr[threadIdx.x] = mq[q0 + threadIdx.x];
    __syncthreads();
    int mlast = smr[nrow - 1], row = warp * 16 + g;  /* this thread's rows: row, row + 8 */
    int mrow[2] = {smr[row], smr[row + 8]};
    if (mlast > 0) {
        cp_tile<BK, HD>(sK, LDH, Kb, HD);
        cp_tile<HD, BK>(sVt, LDT, Vb, nkp);
    }
    cp_commit();  /* Q and the first key tile */
    float o[ND][4], mrun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    for (int c0 = 0, buf = 0; c0 < mlast; c0 += BK, buf ^= 1) {
        if (c0 + BK < mlast) {  /* prefetch the next tile into the other buffer */
            cp_tile<BK, HD>(sK + (buf ^ 1) * BK * LDH, LDH, Kb + (size_t)(c0 + BK) * HD, HD);
            cp_tile<HD, BK>(sVt + (buf ^ 1) * HD * LDT, LDT, Vb + c0 + BK, nkp);
        }
        cp_commit();
        cp_wait<1>();  /* this tile (and Q) have landed */
        __syncthreads();
        const bf16 *cK = sK + buf * BK * LDH, *cV = sVt + buf * HD * LDT;
        float s[NB][4];
#pragma unroll
        for (int n = 0; n < NB; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            u32 a[4];
            frag_a(a, sQ, LDH, warp * 16, kk * 16, g, t);
#pragma unroll
            for (int n = 0; n < NB; n++) {
                u32 b0, b1;
                frag_b(b0, b1, cK, LDH, n * 8, kk * 16, g, t);
                mma_bf16(s[n], a, b0, b1);
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
            float alpha = mn == -INFINITY ? 1.f : exp2f(mrun[hr] - mn), base = mn == -INFINITY ? 0.f : mn;
            float rs = 0.f;
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = exp2f(s[n][2 * hr + e] - base);
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
            for (int n = 0; n < ND; n++) {
                u32 b0, b1;
                frag_b(b0, b1, cV, LDT, n * 8, kk * 16, g, t);
                mma_bf16(o[n], a, b0, b1);
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
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int d = n * 8 + 2 * t + e;
                if (d < hd) orow[d] = o[n][2 * hr + e] * inv;
            }
        if (t == 0) lse[bh * nq + q0 + r] = lt > 0.f ? mrun[hr] * LN2_F + logf(lt) : -INFINITY;
    }
}

/* ---- backward ---- */

template <int HD, int BQ>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_bwd_kernel(float *dq, float *dk, float *dv, const bf16 *Qh, const bf16 *Qt, const bf16 *Oh,
                        const bf16 *Ot, const float *D2, const float *L2, const bf16 *Kh, const bf16 *Kt,
                        const bf16 *Vh, const int *mq, const int *qpos, const int *kpos, int nq, int nk, int nqp,
                        int nkp, int nh, int nkv, int hd, float scale, float scale_log2) {
    constexpr int BK = TC_BK, LDH = HD + 8, LDQ = BQ + 8, LDK = BK + 8, NQ = BQ / 8, ND = HD / 8;
    /* dQ = dS K: warps split the BQ/16 row groups, then the column blocks */
    constexpr int RG = BQ / 16, NDW = ND / (4 / RG);
    /* one stage of query-side tiles: Q [BQ][LDH], Q^T [HD][LDQ], dO, dO^T, then m, lse2, D (BQ words each) */
    constexpr int STAGE = 2 * BQ * LDH + 2 * HD * LDQ + 3 * BQ * 2;  /* in bf16 units */
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sK = reinterpret_cast<bf16 *>(tc_smem), *sV = sK + BK * LDH, *sKt = sV + BK * LDH,  /* sKt [HD][LDK] */
        *sdS = sKt + HD * LDK, *stages = sdS + BQ * LDK;  /* sdS [BQ][LDK], query-major */
    int hk = blockIdx.x, b = blockIdx.y, c0 = blockIdx.z * BK;  /* low key tiles (the most queries) first */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, group = nh / nkv;
    int ncol = min(BK, nk - c0);
    int i0 = first_query_at(qpos, nq, kpos[c0]);  /* earlier queries see none of these keys */
    if (i0 >= nq) return;                          /* nothing to add */
    int qa = i0 / BQ * BQ, ntiles = (nq - qa + BQ - 1) / BQ, nit = group * ntiles;
    size_t bk = (size_t)b * nkv + hk;
    cp_tile<BK, HD>(sK, LDH, Kh + (bk * nkp + c0) * HD, HD);
    cp_tile<BK, HD>(sV, LDH, Vh + (bk * nkp + c0) * HD, HD);
    if (dq) cp_tile<HD, BK>(sKt, LDK, Kt + bk * HD * nkp + c0, nkp);
    /* query-side tiles of iteration it (head hk*group + it/ntiles, tile it%ntiles) into stage st */
    auto fetch = [&](int it, int st) {
        size_t bh = (size_t)b * nh + hk * group + it / ntiles;
        int q0 = qa + it % ntiles * BQ;
        bf16 *s = stages + st * STAGE;
        cp_tile<BQ, HD>(s, LDH, Qh + (bh * nqp + q0) * HD, HD);
        cp_tile<HD, BQ>(s + BQ * LDH, LDQ, Qt + bh * HD * nqp + q0, nqp);
        cp_tile<BQ, HD>(s + BQ * LDH + HD * LDQ, LDH, Oh + (bh * nqp + q0) * HD, HD);
        cp_tile<HD, BQ>(s + 2 * BQ * LDH + HD * LDQ, LDQ, Ot + bh * HD * nqp + q0, nqp);
        bf16 *side = s + 2 * BQ * LDH + 2 * HD * LDQ;
        cp_words(side, mq + q0, BQ);
        cp_words(side + 2 * BQ, L2 + bh * nqp + q0, BQ);
        cp_words(side + 4 * BQ, D2 + bh * nqp + q0, BQ);
    };
    fetch(0, 0);
    cp_commit();  /* the key side and the first query tile */
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
        const bf16 *sQ = s, *sQt = s + BQ * LDH, *sO = sQt + HD * LDQ, *sOt = sO + BQ * LDH;
        const int *smr = reinterpret_cast<const int *>(sOt + HD * LDQ);
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
            frag_a(ak, sK, LDH, warp * 16, kk * 16, g, t);
            frag_a(av, sV, LDH, warp * 16, kk * 16, g, t);
#pragma unroll
            for (int n = 0; n < NQ; n++) {
                u32 b0, b1;
                frag_b(b0, b1, sQ, LDH, n * 8, kk * 16, g, t);
                mma_bf16(st[n], ak, b0, b1);
                frag_b(b0, b1, sO, LDH, n * 8, kk * 16, g, t);
                mma_bf16(dpt[n], av, b0, b1);
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
            for (int n = 0; n < ND; n++) {
                u32 b0, b1;
                frag_b(b0, b1, sOt, LDQ, n * 8, kk * 16, g, t);
                mma_bf16(adv[n], ap, b0, b1);
                frag_b(b0, b1, sQt, LDQ, n * 8, kk * 16, g, t);
                mma_bf16(adk[n], as, b0, b1);
            }
        }
        if (dq) {
            /* dQ += scale dS K: dS goes through shared memory in query-major order */
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sdS[(n * 8 + 2 * t + (e & 1)) * LDK + krow + 8 * (e >> 1)] = __float2bfloat16_rn(dpt[n][e]);
            __syncthreads();
            int rg = warp % RG, nw = warp / RG;
            float acc[NDW][4];
#pragma unroll
            for (int m = 0; m < NDW; m++) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                u32 a[4];
                frag_a(a, sdS, LDK, rg * 16, kk * 16, g, t);
#pragma unroll
                for (int m = 0; m < NDW; m++) {
                    u32 b0, b1;
                    frag_b(b0, b1, sKt, LDK, (nw * NDW + m) * 8, kk * 16, g, t);
                    mma_bf16(acc[m], a, b0, b1);
                }
            }
            float *qbase = dq + ((size_t)b * nq + q0) * nh * hd + (size_t)h * hd;
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                int r = rg * 16 + g + 8 * hr;
                if (r >= nrow) continue;
                float *qrow = qbase + (size_t)r * nh * hd;
#pragma unroll
                for (int m = 0; m < NDW; m++) {
                    int d = (nw * NDW + m) * 8 + 2 * t;
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
        __syncthreads();  /* readers done before this stage and sdS are refilled */
    }
    cp_wait<0>();
    size_t kstride = (size_t)nkv * hd, koff = ((size_t)b * nk + c0) * kstride + (size_t)hk * hd;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        int j = krow + 8 * hr;
        if (j >= ncol) continue;
        size_t row = koff + (size_t)j * kstride;
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int d = n * 8 + 2 * t + e;
                if (d >= hd) continue;
                if (dk) dk[row + d] += scale * adk[n][2 * hr + e];
                if (dv) dv[row + d] += adv[n][2 * hr + e];
            }
    }
}

/* ---- launchers ---- */

int attention_tc_applies(int hd) { return hd >= 1 && hd <= 128 && !strcmp(cuda_matmul_precision(), "bf16"); }

static int round_up(int n, int m) { return (n + m - 1) / m * m; }
static size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* the bf16 copies: one scratch per branch stream (both branches of a parallel
 * block may run at once), grown on demand and kept (the shapes recur every step) */
static unsigned char *tc_scratch(size_t bytes) {
    static unsigned char *buf[CUDA_BRANCHES];
    static size_t cap[CUDA_BRANCHES];
    int br = cuda_branch();
    if (bytes <= cap[br]) return buf[br];
    cuda_scratch_free(buf[br]);
    buf[br] = NULL;
    cap[br] = 0;
    if (cudaMalloc(&buf[br], bytes) != cudaSuccess) {
        buf[br] = NULL;
        cuda_record_error("cudaMalloc", "cannot allocate the bf16 attention scratch", __FILE__, __LINE__);
        return NULL;
    }
    cap[br] = bytes;
    return buf[br];
}

template <int HD>
static void convert(bf16 *rows, bf16 *cols, float *D2, float *L2, const float *x, const float *o, const float *lse,
                    int B, int n, int heads, int hd, int np) {
    size_t threads = (size_t)B * heads * np;
    tc_convert_kernel<HD><<<blocks_for(threads, 256), 256, 0, cuda_stream()>>>(rows, cols, D2, L2, x, o, lse, B, n,
                                                                                heads, hd, np);
    CUDA_LAUNCHED();
}
static void visible(int *mq, const int *qpos, const int *kpos, int nq, int nk, int nqp) {
    tc_visible_kernel<<<blocks_for(nqp, 256), 256, 0, cuda_stream()>>>(mq, qpos, kpos, nq, nk, nqp);
    CUDA_LAUNCHED();
}

template <int HD>
static void tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                   const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    int nqp = round_up(nq, TC_BQ), nkp = round_up(nk > 0 ? nk : 1, TC_BK);
    size_t bq = align256(sizeof(bf16) * B * nh * nqp * HD), bk = align256(sizeof(bf16) * B * nkv * nkp * HD);
    unsigned char *p = tc_scratch(bq + 2 * bk + align256(sizeof(int) * nqp));
    if (!p) return;
    bf16 *Qh = (bf16 *)p, *Kh = (bf16 *)(p + bq), *Vt = (bf16 *)(p + bq + bk);
    int *mq = (int *)(p + bq + 2 * bk);
    convert<HD>(Qh, NULL, NULL, NULL, q, NULL, NULL, B, nq, nh, hd, nqp);
    convert<HD>(Kh, NULL, NULL, NULL, k, NULL, NULL, B, nk, nkv, hd, nkp);
    convert<HD>(NULL, Vt, NULL, NULL, v, NULL, NULL, B, nk, nkv, hd, nkp);
    visible(mq, qpos, kpos, nq, nk, nqp);
    size_t smem = sizeof(bf16) * (TC_BQ * (HD + 8) + 2 * TC_BK * (HD + 8) + 2 * HD * (TC_BK + 8));
    if (attention_set_smem((const void *)attention_tc_fwd_kernel<HD>, smem, "attention_fwd")) return;
    dim3 grid(nh, B, nqp / TC_BQ);
    attention_tc_fwd_kernel<HD><<<grid, TC_THREADS, smem, cuda_stream()>>>(out, lse, Qh, Kh, Vt, mq, nq, nqp, nkp,
                                                                          nh, nkv, hd, LOG2E_F / sqrtf((float)hd));
    CUDA_LAUNCHED();
}

template <int HD, int BQ>
static void tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                   const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B, int nq,
                   int nk, int nh, int nkv, int hd) {
    int nqp = round_up(nq, TC_BQ), nkp = round_up(nk, TC_BK);
    size_t bq = align256(sizeof(bf16) * B * nh * nqp * HD), bk = align256(sizeof(bf16) * B * nkv * nkp * HD);
    size_t br = align256(sizeof(float) * B * nh * nqp);
    unsigned char *p = tc_scratch(4 * bq + 3 * bk + 2 * br + align256(sizeof(int) * nqp));
    if (!p) return;
    bf16 *Qh = (bf16 *)p, *Qt = (bf16 *)(p + bq), *Oh = (bf16 *)(p + 2 * bq), *Ot = (bf16 *)(p + 3 * bq);
    bf16 *Kh = (bf16 *)(p + 4 * bq), *Kt = (bf16 *)(p + 4 * bq + bk), *Vh = (bf16 *)(p + 4 * bq + 2 * bk);
    float *D2 = (float *)(p + 4 * bq + 3 * bk), *L2 = (float *)(p + 4 * bq + 3 * bk + br);
    int *mq = (int *)(p + 4 * bq + 3 * bk + 2 * br);
    convert<HD>(Qh, Qt, NULL, NULL, q, NULL, NULL, B, nq, nh, hd, nqp);
    convert<HD>(Oh, Ot, D2, L2, dout, out, lse, B, nq, nh, hd, nqp);
    convert<HD>(Kh, dq ? Kt : NULL, NULL, NULL, k, NULL, NULL, B, nk, nkv, hd, nkp);
    convert<HD>(Vh, NULL, NULL, NULL, v, NULL, NULL, B, nk, nkv, hd, nkp);
    visible(mq, qpos, kpos, nq, nk, nqp);
    size_t stage = 2 * BQ * (HD + 8) + 2 * HD * (BQ + 8) + 6 * BQ;
    size_t smem = sizeof(bf16) * (2 * TC_BK * (HD + 8) + HD * (TC_BK + 8) + BQ * (TC_BK + 8) + 2 * stage);
    if (attention_set_smem((const void *)attention_tc_bwd_kernel<HD, BQ>, smem, "attention_bwd")) return;
    dim3 grid(nkv, B, nkp / TC_BK);
    float scale = 1.f / sqrtf((float)hd);
    attention_tc_bwd_kernel<HD, BQ><<<grid, TC_THREADS, smem, cuda_stream()>>>(
        dq, dk, dv, Qh, Qt, Oh, Ot, D2, L2, Kh, Kt, Vh, mq, qpos, kpos, nq, nk, nqp, nkp, nh, nkv, hd, scale,
        scale * LOG2E_F);
    CUDA_LAUNCHED();
}

void attention_tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                      const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    if (hd <= 16) tc_fwd<16>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 32) tc_fwd<32>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 64) tc_fwd<64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else tc_fwd<128>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
}

/* hd 128 takes 32-query tiles in the backward: 64 would not fit its
 * accumulators in registers */
void attention_tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                      const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                      int nq, int nk, int nh, int nkv, int hd) {
    if (hd <= 16) tc_bwd<16, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 32) tc_bwd<32, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 64) tc_bwd<64, 64>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else tc_bwd<128, 32>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
}
