/* attention_tc.cu - causal grouped-query attention on bf16 tensor cores
 * (FlashAttention-2 structure), the path of the bf16 matmul precision.
 *
 * The op contract is unchanged (attention.cu, ops.h): q/k/v/dout and every
 * output stay fp32. Tiles are rounded to bf16 while they are copied into
 * shared memory; products run as warp-level mma.sync m16n8k16 (bf16 inputs,
 * fp32 accumulation); softmax statistics, lse, D and all accumulators are
 * fp32; the probabilities P (and dS in the backward) are rounded to bf16 only
 * as operands of the next product. hd is padded with zeros to HD = 16, 32, 64
 * or 128 in shared memory (larger heads take the fp32 kernels).
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
 * (from the first query at kpos[c0]); each warp owns 16 keys and computes
 *   S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - D),
 *   dV += P^T dO, dK += dS^T Q       (registers, written once at the end)
 *   dQ += dS K                       (dS through shared memory, fp32 atomics)
 * dq therefore gets one atomic add per element per key tile: not bitwise
 * deterministic run to run (dk, dv and the forward are). The recompute of S
 * and dP that a separate dq kernel needs would cost more than the atomics.
 *
 * Shared layouts: [rows][HD + 8] bf16 (and transposed [HD][rows + 8] copies
 * for the operands read along the other axis). The +8 padding makes the
 * fragment reads (lane = 4 g + t reads row g, 32-bit word t) hit 32 distinct
 * banks; the loader's lane mapping (8 rows x 4 column pairs per warp) makes
 * both the row and the transposed stores conflict-free. */
#include <cuda_bf16.h>
#include <string.h>

#include "attention.cuh"

#define TC_THREADS 128 /* 4 warps */
#define TC_BK 64       /* keys per tile */
#define TC_BQ 64       /* forward: queries per block */
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

/* Rounds rows [0, nrows) x columns [0, hd) of an fp32 tile (row r at
 * src + r*stride) to bf16, into `rows` ([BR][ld]) and/or its transpose `cols`
 * ([HD][ldt]); zeros fill the rest of BR x HD. A warp covers 8 rows x 8
 * columns per step (lane: row lane%8, column pair lane/8). */
template <int BR, int HD>
__device__ __forceinline__ void load_tile_bf16(bf16 *rows, int ld, bf16 *cols, int ldt, const float *src, int nrows,
                                               size_t stride, int hd) {
    bool pairs = (hd % 2 == 0) && (stride % 2 == 0) && ((uintptr_t)src % 8 == 0);  /* float2 loads aligned */
    constexpr int RC = BR / 8, NCH = RC * (HD / 8);
    for (int idx = threadIdx.x; idx < NCH * 32; idx += TC_THREADS) {
        int chunk = idx >> 5, lane = idx & 31;
        int r = (chunk % RC) * 8 + (lane & 7), d = (chunk / RC) * 8 + 2 * (lane >> 3);
        float x0 = 0.f, x1 = 0.f;
        if (r < nrows) {
            const float *p = src + (size_t)r * stride + d;
            if (d + 1 < hd) {
                if (pairs) {
                    float2 f = *reinterpret_cast<const float2 *>(p);
                    x0 = f.x;
                    x1 = f.y;
                } else {
                    x0 = p[0];
                    x1 = p[1];
                }
            } else if (d < hd) {
                x0 = p[0];
            }
        }
        __nv_bfloat162 v2 = __floats2bfloat162_rn(x0, x1);
        if (rows) *reinterpret_cast<__nv_bfloat162 *>(rows + r * ld + d) = v2;
        if (cols) {
            cols[d * ldt + r] = v2.x;
            cols[(d + 1) * ldt + r] = v2.y;
        }
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* ---- forward ---- */

template <int HD>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                        const int *kpos, int nq, int nk, int nh, int nkv, int hd, float scale_log2) {
    constexpr int BQ = TC_BQ, BK = TC_BK, LDH = HD + 8, LDT = BK + 8, NB = BK / 8, ND = HD / 8;
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(tc_smem), *sK = sQ + BQ * LDH, *sVt = sK + BK * LDH;  /* sVt [HD][LDT] */
    __shared__ int smr[BQ];
    int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BQ;  /* long tiles first */
    int hk = h / (nh / nkv), warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int nrow = min(BQ, nq - q0);
    size_t qstride = (size_t)nh * hd, qoff = ((size_t)b * nq + q0) * qstride + (size_t)h * hd;
    size_t kstride = (size_t)nkv * hd, kbase = (size_t)b * nk * kstride + (size_t)hk * hd;
    load_tile_bf16<BQ, HD>(sQ, LDH, nullptr, 0, q + qoff, nrow, qstride, hd);
    if (threadIdx.x < BQ)
        smr[threadIdx.x] = (int)threadIdx.x < nrow ? visible_keys(kpos, nk, qpos[q0 + threadIdx.x]) : 0;
    __syncthreads();
    int mlast = smr[nrow - 1], row = warp * 16 + g;  /* this thread's rows: row, row + 8 */
    int mrow[2] = {smr[row], smr[row + 8]};
    float o[ND][4], mrun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    for (int c0 = 0; c0 < mlast; c0 += BK) {
        int ncol = min(BK, mlast - c0);
        __syncthreads();  /* the previous tile's readers are done */
        load_tile_bf16<BK, HD>(sK, LDH, nullptr, 0, k + kbase + (size_t)c0 * kstride, ncol, kstride, hd);
        load_tile_bf16<BK, HD>(nullptr, 0, sVt, LDT, v + kbase + (size_t)c0 * kstride, ncol, kstride, hd);
        __syncthreads();
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
                frag_b(b0, b1, sK, LDH, n * 8, kk * 16, g, t);
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
                frag_b(b0, b1, sVt, LDT, n * 8, kk * 16, g, t);
                mma_bf16(o[n], a, b0, b1);
            }
        }
    }
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        float lt = quad_sum(l[hr]);
        int r = row + 8 * hr;
        if (r >= nrow) continue;
        float inv = lt > 0.f ? 1.f / lt : 0.f;  /* no visible key: zeros */
        float *orow = out + qoff + (size_t)r * qstride;
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int d = n * 8 + 2 * t + e;
                if (d < hd) orow[d] = o[n][2 * hr + e] * inv;
            }
        if (t == 0) lse[((size_t)b * nh + h) * nq + q0 + r] = lt > 0.f ? mrun[hr] * LN2_F + logf(lt) : -INFINITY;
    }
}

/* ---- backward ---- */

template <int HD, int BQ>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_bwd_kernel(float *dq, float *dk, float *dv, const float *dout, const float *D, const float *lse,
                        const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int nq,
                        int nk, int nh, int nkv, int hd, float scale, float scale_log2) {
    constexpr int BK = TC_BK, LDH = HD + 8, LDQ = BQ + 8, LDK = BK + 8, NQ = BQ / 8, ND = HD / 8;
    /* dQ = dS K: warps split the BQ/16 row groups, then the column blocks */
    constexpr int RG = BQ / 16, NDW = ND / (4 / RG);
    extern __shared__ __align__(16) unsigned char tc_smem[];
    bf16 *sK = reinterpret_cast<bf16 *>(tc_smem), *sV = sK + BK * LDH, *sKt = sV + BK * LDH,  /* sKt [HD][LDK] */
        *sQ = sKt + HD * LDK, *sQt = sQ + BQ * LDH, *sO = sQt + HD * LDQ, *sOt = sO + BQ * LDH,
         *sdS = sOt + HD * LDQ;  /* sQt, sOt [HD][LDQ]; sdS [BQ][LDK] (query-major) */
    __shared__ int smr[BQ];
    __shared__ float slse[BQ], sD[BQ];
    int hk = blockIdx.x, b = blockIdx.y, c0 = blockIdx.z * BK;  /* low key tiles (the most queries) first */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, group = nh / nkv;
    int ncol = min(BK, nk - c0);
    int i0 = first_query_at(qpos, nq, kpos[c0]);  /* earlier queries see none of these keys */
    if (i0 >= nq) return;                          /* nothing to add */
    size_t kstride = (size_t)nkv * hd, koff = ((size_t)b * nk + c0) * kstride + (size_t)hk * hd;
    size_t qstride = (size_t)nh * hd;
    load_tile_bf16<BK, HD>(sK, LDH, dq ? sKt : nullptr, LDK, k + koff, ncol, kstride, hd);
    load_tile_bf16<BK, HD>(sV, LDH, nullptr, 0, v + koff, ncol, kstride, hd);
    bool dq_pairs = hd % 2 == 0 && ((uintptr_t)dq % 8 == 0);  /* float2 atomics aligned */
    int krow = warp * 16 + g;                                 /* this thread's keys: krow, krow + 8 */
    float adk[ND][4], adv[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) adk[n][e] = adv[n][e] = 0.f;
    for (int h = hk * group; h < (hk + 1) * group; h++)
        for (int q0 = i0; q0 < nq; q0 += BQ) {
            int nrow = min(BQ, nq - q0);
            size_t qoff = ((size_t)b * nq + q0) * qstride + (size_t)h * hd;
            __syncthreads();  /* the previous tile's readers are done */
            load_tile_bf16<BQ, HD>(sQ, LDH, sQt, LDQ, q + qoff, nrow, qstride, hd);
            load_tile_bf16<BQ, HD>(sO, LDH, sOt, LDQ, dout + qoff, nrow, qstride, hd);
            if (threadIdx.x < BQ) {
                int r = threadIdx.x;
                size_t li = ((size_t)b * nh + h) * nq + q0 + r;
                smr[r] = r < nrow ? visible_keys(kpos, nk, qpos[q0 + r]) : 0;
                slse[r] = r < nrow && smr[r] > 0 ? lse[li] * LOG2E_F : 0.f;
                sD[r] = r < nrow ? D[li] : 0.f;
            }
            __syncthreads();
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
            if (!dq) continue;
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
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                int r = rg * 16 + g + 8 * hr;
                if (r >= nrow) continue;
                float *qrow = dq + qoff + (size_t)r * qstride;
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

template <int HD>
static void tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                   const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    size_t smem = sizeof(bf16) * ((TC_BQ + TC_BK) * (HD + 8) + HD * (TC_BK + 8));
    if (attention_set_smem((const void *)attention_tc_fwd_kernel<HD>, smem, "attention_fwd")) return;
    dim3 grid(nh, B, (nq + TC_BQ - 1) / TC_BQ);
    attention_tc_fwd_kernel<HD><<<grid, TC_THREADS, smem>>>(out, lse, q, k, v, qpos, kpos, nq, nk, nh, nkv, hd,
                                                           LOG2E_F / sqrtf((float)hd));
    CUDA_LAUNCHED();
}

template <int HD, int BQ>
static void tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *D, const float *lse,
                   const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B, int nq,
                   int nk, int nh, int nkv, int hd) {
    size_t smem = sizeof(bf16) * (2 * TC_BK * (HD + 8) + HD * (TC_BK + 8) + 2 * BQ * (HD + 8) + 2 * HD * (BQ + 8) +
                                  BQ * (TC_BK + 8));
    if (attention_set_smem((const void *)attention_tc_bwd_kernel<HD, BQ>, smem, "attention_bwd")) return;
    dim3 grid(nkv, B, (nk + TC_BK - 1) / TC_BK);
    float scale = 1.f / sqrtf((float)hd);
    attention_tc_bwd_kernel<HD, BQ><<<grid, TC_THREADS, smem>>>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, nq,
                                                               nk, nh, nkv, hd, scale, scale * LOG2E_F);
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
void attention_tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *D, const float *lse,
                      const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                      int nq, int nk, int nh, int nkv, int hd) {
    if (hd <= 16) tc_bwd<16, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 32) tc_bwd<32, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 64) tc_bwd<64, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else tc_bwd<128, 32>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
}
