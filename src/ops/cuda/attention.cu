/* attention.cu - causal grouped-query attention over token subsets, tiled
 * (flash-attention style, fp32).
 *
 * Query i sees key j iff kpos[j] <= qpos[i]; head h reads kv head h/(nh/nkv);
 * scale 1/sqrt(hd). Both position arrays ascend, so query i sees the key
 * prefix [0, m_i) with m_i = #{j : kpos[j] <= qpos[i]} (a binary search), and
 * a tile of queries needs only the key tiles below the last row's m.
 *
 * Forward: one block per (query tile of BT rows, head, batch). Key and value
 * tiles of BT rows go through shared memory (rows loaded whole: coalesced);
 * an online softmax keeps each row's running max and sum, the output stays in
 * registers and is divided once at the end. lse[b,h,i] is saved; a query with
 * no visible key writes zeros and lse = -inf.
 *
 * Backward (FlashAttention-2 split), with p = exp(s - lse), D_i = dout_i.out_i:
 *   dv_j += p_ij dout_i;  ds_ij = p_ij (dout_i.v_j - D_i);
 *   dk_j += scale ds_ij q_i;  dq_i += scale ds_ij k_j.
 * 1. attention_rowdot_kernel: D per (b, h, query).
 * 2. attention_dkdv_kernel: one block owns a (key tile, kv head, batch) and
 *    loops over the query heads of its group and the query tiles that can see
 *    the tile, so dk/dv are written once, without atomics.
 * 3. attention_dq_kernel: one block per (query tile, head, batch) recomputes
 *    p and ds over its visible key tiles and adds dq once. Deterministic.
 *
 * Thread layout (256 threads = 16 x 16, tx = low 4 bits): a BT x BT tile of
 * scores is computed as RI x RI register micro-tiles, rows ty + 16 i and
 * columns tx + 16 j; a BT x HD accumulator as rows ty + 16 i, columns
 * tx + 16 j. The 16 threads of a row sit in one half-warp, so row max/sum are
 * four xor-shuffles. Shared tiles are [BT][HD + 1]: the odd row stride makes
 * both column-wise (16 rows, one d) and row-wise reads conflict-free. hd is
 * padded up to HD (16, 32, 64, 128, 256) with zeros.
 *
 * With the bf16 matmul precision, head sizes up to 128 take the tensor-core
 * kernels of attention_tc.cu instead (same contract, bf16 operands). */
#include <stdlib.h>

#include "attention.cuh"

#define ATT_THREADS 256

__device__ __forceinline__ float half_warp_max(float v) {
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* rows [0, nrows) of a [BT][HD+1] tile from src (row r at src + r*stride),
 * zeros past nrows and past hd. Consecutive threads read consecutive d. */
template <int HD, int BT>
__device__ __forceinline__ void load_tile(float *dst, const float *src, int nrows, size_t stride, int hd) {
    for (int idx = threadIdx.x; idx < BT * HD; idx += ATT_THREADS) {
        int r = idx / HD, d = idx % HD;
        dst[r * (HD + 1) + d] = (r < nrows && d < hd) ? src[(size_t)r * stride + d] : 0.f;
    }
}

template <int HD, int BT>
__global__ void __launch_bounds__(ATT_THREADS)
attention_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                     const int *kpos, int nq, int nk, int nh, int nkv, int hd, float scale) {
    constexpr int LD = HD + 1, PLD = BT + 16, RI = BT / 16, RD = HD / 16;
    extern __shared__ float sm[];
    float *sQ = sm, *sK = sQ + BT * LD, *sV = sK + BT * LD, *sP = sV + BT * LD;
    __shared__ int smr[BT];
    int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BT;  /* long tiles first */
    int hk = h / (nh / nkv), tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    int nrow = min(BT, nq - q0);
    size_t qstride = (size_t)nh * hd, kstride = (size_t)nkv * hd;
    const float *qb = q + ((size_t)b * nq + q0) * qstride + (size_t)h * hd;
    const float *kb = k + (size_t)b * nk * kstride + (size_t)hk * hd;
    const float *vb = v + (size_t)b * nk * kstride + (size_t)hk * hd;
    if (threadIdx.x < BT) smr[threadIdx.x] = threadIdx.x < nrow ? visible_keys(kpos, nk, qpos[q0 + threadIdx.x]) : 0;
    load_tile<HD, BT>(sQ, qb, nrow, qstride, hd);
    __syncthreads();
    int mlast = smr[nrow - 1];  /* the largest m of the tile */
    int mr[RI];
    float mrun[RI], l[RI], o[RI][RD];
#pragma unroll
    for (int i = 0; i < RI; i++) {
        mr[i] = smr[ty + 16 * i];
        mrun[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int j = 0; j < RD; j++) o[i][j] = 0.f;
    }
    for (int c0 = 0; c0 < mlast; c0 += BT) {
        int ncol = min(BT, mlast - c0);
        __syncthreads();  /* the previous tile's readers are done */
        load_tile<HD, BT>(sK, kb + (size_t)c0 * kstride, ncol, kstride, hd);
        load_tile<HD, BT>(sV, vb + (size_t)c0 * kstride, ncol, kstride, hd);
        __syncthreads();
        float s[RI][RI];
#pragma unroll
        for (int i = 0; i < RI; i++)
#pragma unroll
            for (int j = 0; j < RI; j++) s[i][j] = 0.f;
        for (int d = 0; d < hd; d++) {
            float qv[RI], kv[RI];
#pragma unroll
            for (int i = 0; i < RI; i++) qv[i] = sQ[(ty + 16 * i) * LD + d];
#pragma unroll
            for (int j = 0; j < RI; j++) kv[j] = sK[(tx + 16 * j) * LD + d];
#pragma unroll
            for (int i = 0; i < RI; i++)
#pragma unroll
                for (int j = 0; j < RI; j++) s[i][j] += qv[i] * kv[j];
        }
#pragma unroll
        for (int i = 0; i < RI; i++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int j = 0; j < RI; j++) {
                s[i][j] = c0 + tx + 16 * j < mr[i] ? s[i][j] * scale : -INFINITY;
                tmax = fmaxf(tmax, s[i][j]);
            }
            float mn = fmaxf(mrun[i], half_warp_max(tmax));
            float alpha = 1.f, rs = 0.f;
            if (mn != -INFINITY) {  /* else: nothing visible to this row yet */
                alpha = expf(mrun[i] - mn);  /* 0 on the first visible tile */
#pragma unroll
                for (int j = 0; j < RI; j++) {
                    s[i][j] = expf(s[i][j] - mn);  /* masked: exp(-inf) = 0 */
                    rs += s[i][j];
                }
            } else {
#pragma unroll
                for (int j = 0; j < RI; j++) s[i][j] = 0.f;
            }
#pragma unroll
            for (int j = 0; j < RI; j++) sP[(ty + 16 * i) * PLD + tx + 16 * j] = s[i][j];
            l[i] = l[i] * alpha + half_warp_sum(rs);
            mrun[i] = mn;
#pragma unroll
            for (int j = 0; j < RD; j++) o[i][j] *= alpha;
        }
        __syncthreads();
        for (int c = 0; c < ncol; c++) {
            float vv[RD];
#pragma unroll
            for (int j = 0; j < RD; j++) vv[j] = sV[c * LD + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < RI; i++) {
                float p = sP[(ty + 16 * i) * PLD + c];
#pragma unroll
                for (int j = 0; j < RD; j++) o[i][j] += p * vv[j];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RI; i++) {
        int r = ty + 16 * i;
        if (r >= nrow) continue;
        float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;  /* no visible key: zeros */
        float *orow = out + ((size_t)b * nq + q0 + r) * qstride + (size_t)h * hd;
#pragma unroll
        for (int j = 0; j < RD; j++)
            if (tx + 16 * j < hd) orow[tx + 16 * j] = o[i][j] * inv;
        if (tx == 0) lse[((size_t)b * nh + h) * nq + q0 + r] = l[i] > 0.f ? mrun[i] + logf(l[i]) : -INFINITY;
    }
}

/* D[b,h,i] = dout.out over the head's hd values: one warp per row */
__global__ void attention_rowdot_kernel(float *D, const float *dout, const float *out, int B, int nq, int nh,
                                        int hd) {
    size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;  /* (b, i, h) */
    int lane = threadIdx.x & 31;
    if (row >= (size_t)B * nq * nh) return;
    const float *a = dout + row * hd, *c = out + row * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s += a[d] * c[d];
    s = warp_sum(s);
    int h = (int)(row % nh);
    size_t bi = row / nh;  /* b * nq + i */
    int i = (int)(bi % nq), b = (int)(bi / nq);
    if (lane == 0) D[((size_t)b * nh + h) * nq + i] = s;
}

/* Loads a query tile's rows for the backward: q and dout tiles, and per row
 * m (visible keys), lse and D; rows past nrow get m = 0 (never visible). */
template <int HD, int BT>
__device__ __forceinline__ void load_query_side(float *sQ, float *sO, int *smr, float *slse, float *sD,
                                                const float *q, const float *dout, const float *lse,
                                                const float *D, const int *qpos, const int *kpos, int b, int h,
                                                int q0, int nrow, int nq, int nk, int nh, int hd) {
    size_t qstride = (size_t)nh * hd, off = ((size_t)b * nq + q0) * qstride + (size_t)h * hd;
    load_tile<HD, BT>(sQ, q + off, nrow, qstride, hd);
    load_tile<HD, BT>(sO, dout + off, nrow, qstride, hd);
    if (threadIdx.x < BT) {
        int r = threadIdx.x;
        size_t li = ((size_t)b * nh + h) * nq + q0 + r;
        smr[r] = r < nrow ? visible_keys(kpos, nk, qpos[q0 + r]) : 0;
        slse[r] = r < nrow && smr[r] > 0 ? lse[li] : 0.f;
        sD[r] = r < nrow ? D[li] : 0.f;
    }
}

template <int HD, int BT>
__global__ void __launch_bounds__(ATT_THREADS)
attention_dkdv_kernel(float *dk, float *dv, const float *dout, const float *D, const float *lse, const float *q,
                      const float *k, const float *v, const int *qpos, const int *kpos, int nq, int nk, int nh,
                      int nkv, int hd, float scale, int acc) {
    constexpr int LD = HD + 1, PLD = BT + 16, RI = BT / 16, RD = HD / 16;
    extern __shared__ float sm[];
    float *sK = sm, *sV = sK + BT * LD, *sQ = sV + BT * LD, *sO = sQ + BT * LD, *sP = sO + BT * LD,
          *sS = sP + BT * PLD;
    __shared__ int smr[BT];
    __shared__ float slse[BT], sD[BT];
    int hk = blockIdx.x, b = blockIdx.y, c0 = blockIdx.z * BT;  /* low key tiles (the most queries) first */
    int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, group = nh / nkv;
    int ncol = min(BT, nk - c0);
    int i0 = first_query_at(qpos, nq, kpos[c0]);  /* earlier queries see none of these keys */
    size_t kstride = (size_t)nkv * hd, koff = (size_t)b * nk * kstride + (size_t)c0 * kstride + (size_t)hk * hd;
    if (i0 >= nq) {  /* nothing to add; an overwrite (acc 0) stores the zero gradient */
        if (!acc) zero_kv_rows(dk, dv, koff, kstride, ncol, hd);
        return;
    }
    load_tile<HD, BT>(sK, k + koff, ncol, kstride, hd);
    load_tile<HD, BT>(sV, v + koff, ncol, kstride, hd);
    float adk[RI][RD], adv[RI][RD];
#pragma unroll
    for (int i = 0; i < RI; i++)
#pragma unroll
        for (int j = 0; j < RD; j++) adk[i][j] = adv[i][j] = 0.f;
    for (int h = hk * group; h < (hk + 1) * group; h++)
        for (int q0 = i0; q0 < nq; q0 += BT) {
            int nrow = min(BT, nq - q0);
            __syncthreads();  /* the previous tile's readers are done */
            load_query_side<HD, BT>(sQ, sO, smr, slse, sD, q, dout, lse, D, qpos, kpos, b, h, q0, nrow, nq, nk,
                                    nh, hd);
            __syncthreads();
            /* transposed scores: rows = keys (ty + 16 i), columns = queries (tx + 16 j) */
            float s[RI][RI], dp[RI][RI];
#pragma unroll
            for (int i = 0; i < RI; i++)
#pragma unroll
                for (int j = 0; j < RI; j++) s[i][j] = dp[i][j] = 0.f;
            for (int d = 0; d < hd; d++) {
                float kv[RI], vv[RI], qv[RI], ov[RI];
#pragma unroll
                for (int i = 0; i < RI; i++) {
                    kv[i] = sK[(ty + 16 * i) * LD + d];
                    vv[i] = sV[(ty + 16 * i) * LD + d];
                }
#pragma unroll
                for (int j = 0; j < RI; j++) {
                    qv[j] = sQ[(tx + 16 * j) * LD + d];
                    ov[j] = sO[(tx + 16 * j) * LD + d];
                }
#pragma unroll
                for (int i = 0; i < RI; i++)
#pragma unroll
                    for (int j = 0; j < RI; j++) {
                        s[i][j] += kv[i] * qv[j];
                        dp[i][j] += vv[i] * ov[j];
                    }
            }
#pragma unroll
            for (int i = 0; i < RI; i++)
#pragma unroll
                for (int j = 0; j < RI; j++) {
                    int r = tx + 16 * j;
                    float p = c0 + ty + 16 * i < smr[r] ? expf(s[i][j] * scale - slse[r]) : 0.f;
                    sP[(ty + 16 * i) * PLD + r] = p;
                    sS[(ty + 16 * i) * PLD + r] = p * (dp[i][j] - sD[r]);
                }
            __syncthreads();
            for (int r = 0; r < nrow; r++) {
                float ov[RD], qv[RD];
#pragma unroll
                for (int j = 0; j < RD; j++) {
                    ov[j] = sO[r * LD + tx + 16 * j];
                    qv[j] = sQ[r * LD + tx + 16 * j];
                }
#pragma unroll
                for (int i = 0; i < RI; i++) {
                    float p = sP[(ty + 16 * i) * PLD + r], ds = sS[(ty + 16 * i) * PLD + r];
#pragma unroll
                    for (int j = 0; j < RD; j++) {
                        adv[i][j] += p * ov[j];
                        adk[i][j] += ds * qv[j];
                    }
                }
            }
        }
#pragma unroll
    for (int i = 0; i < RI; i++) {
        if (ty + 16 * i >= ncol) continue;
        size_t row = koff + (size_t)(ty + 16 * i) * kstride;
#pragma unroll
        for (int j = 0; j < RD; j++) {
            int d = tx + 16 * j;
            if (d >= hd) continue;
            float gk = scale * adk[i][j], gv = adv[i][j];   /* this block's rows alone: acc 0 overwrites */
            if (dk) dk[row + d] = acc ? dk[row + d] + gk : gk;
            if (dv) dv[row + d] = acc ? dv[row + d] + gv : gv;
        }
    }
}

template <int HD, int BT>
__global__ void __launch_bounds__(ATT_THREADS)
attention_dq_kernel(float *dq, const float *dout, const float *D, const float *lse, const float *q,
                    const float *k, const float *v, const int *qpos, const int *kpos, int nq, int nk, int nh,
                    int nkv, int hd, float scale, int accumulate) {
    constexpr int LD = HD + 1, PLD = BT + 16, RI = BT / 16, RD = HD / 16;
    extern __shared__ float sm[];
    float *sQ = sm, *sO = sQ + BT * LD, *sK = sO + BT * LD, *sV = sK + BT * LD, *sS = sV + BT * LD;
    __shared__ int smr[BT];
    __shared__ float slse[BT], sD[BT];
    int h = blockIdx.x, b = blockIdx.y, q0 = (gridDim.z - 1 - blockIdx.z) * BT;  /* long tiles first */
    int hk = h / (nh / nkv), tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    int nrow = min(BT, nq - q0);
    load_query_side<HD, BT>(sQ, sO, smr, slse, sD, q, dout, lse, D, qpos, kpos, b, h, q0, nrow, nq, nk, nh, hd);
    __syncthreads();
    int mlast = smr[nrow - 1];
    int mr[RI];
    float lr[RI], Dr[RI], acc[RI][RD];
#pragma unroll
    for (int i = 0; i < RI; i++) {
        mr[i] = smr[ty + 16 * i];
        lr[i] = slse[ty + 16 * i];
        Dr[i] = sD[ty + 16 * i];
#pragma unroll
        for (int j = 0; j < RD; j++) acc[i][j] = 0.f;
    }
    size_t kstride = (size_t)nkv * hd, kbase = (size_t)b * nk * kstride + (size_t)hk * hd;
    for (int c0 = 0; c0 < mlast; c0 += BT) {
        int ncol = min(BT, mlast - c0);
        __syncthreads();
        load_tile<HD, BT>(sK, k + kbase + (size_t)c0 * kstride, ncol, kstride, hd);
        load_tile<HD, BT>(sV, v + kbase + (size_t)c0 * kstride, ncol, kstride, hd);
        __syncthreads();
        float s[RI][RI], dp[RI][RI];
#pragma unroll
        for (int i = 0; i < RI; i++)
#pragma unroll
            for (int j = 0; j < RI; j++) s[i][j] = dp[i][j] = 0.f;
        for (int d = 0; d < hd; d++) {
            float qv[RI], ov[RI], kv[RI], vv[RI];
#pragma unroll
            for (int i = 0; i < RI; i++) {
                qv[i] = sQ[(ty + 16 * i) * LD + d];
                ov[i] = sO[(ty + 16 * i) * LD + d];
            }
#pragma unroll
            for (int j = 0; j < RI; j++) {
                kv[j] = sK[(tx + 16 * j) * LD + d];
                vv[j] = sV[(tx + 16 * j) * LD + d];
            }
#pragma unroll
            for (int i = 0; i < RI; i++)
#pragma unroll
                for (int j = 0; j < RI; j++) {
                    s[i][j] += qv[i] * kv[j];
                    dp[i][j] += ov[i] * vv[j];
                }
        }
#pragma unroll
        for (int i = 0; i < RI; i++)
#pragma unroll
            for (int j = 0; j < RI; j++) {
                float p = c0 + tx + 16 * j < mr[i] ? expf(s[i][j] * scale - lr[i]) : 0.f;
                sS[(ty + 16 * i) * PLD + tx + 16 * j] = p * (dp[i][j] - Dr[i]);
            }
        __syncthreads();
        for (int c = 0; c < ncol; c++) {
            float kv[RD];
#pragma unroll
            for (int j = 0; j < RD; j++) kv[j] = sK[c * LD + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < RI; i++) {
                float ds = sS[(ty + 16 * i) * PLD + c];
#pragma unroll
                for (int j = 0; j < RD; j++) acc[i][j] += ds * kv[j];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RI; i++) {
        int r = ty + 16 * i;
        if (r >= nrow) continue;
        float *row = dq + ((size_t)b * nq + q0 + r) * nh * hd + (size_t)h * hd;
#pragma unroll
        for (int j = 0; j < RD; j++)
            if (tx + 16 * j < hd) {   /* every row of the tile, visible keys or not: accumulate 0 overwrites */
                float g = scale * acc[i][j];
                row[tx + 16 * j] = accumulate ? row[tx + 16 * j] + g : g;
            }
    }
}

/* Dynamic shared memory above the default 48 KB needs an opt-in per kernel. */
int attention_set_smem(const void *kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 0;
    static int maxb;  /* the device's opt-in limit, asked once (not while a graph is recorded) */
    if (!maxb) {
        int dev = 0;
        CUDA_CALL(cudaGetDevice(&dev));
        CUDA_CALL(cudaDeviceGetAttribute(&maxb, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    if (bytes > (size_t)maxb) {
        cuda_record_error(what, "attention tiles need more shared memory than this GPU has per block",
                          __FILE__, __LINE__);
        return -1;
    }
    cuda_func_smem(kernel, bytes);
    return 0;
}

/* 2*hd MACs per visible key: the positions live on the device, so they are
 * copied back here (a small synchronous copy). */
static void count_attention_macs(const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int hd) {
    /* not while a graph is recorded (a host copy there is not allowed; the
     * replays do not run host code, so they count nothing either) */
    if (cuda_capturing()) return;
    int *hq = (int *)malloc(sizeof(int) * (nq + nk));
    if (!hq) return;
    int *hk = hq + nq;
    CUDA_CALL(cudaMemcpy(hq, qpos, sizeof(int) * nq, cudaMemcpyDeviceToHost));
    CUDA_CALL(cudaMemcpy(hk, kpos, sizeof(int) * nk, cudaMemcpyDeviceToHost));
    uint64_t vis = 0;
    for (int i = 0, j = 0; i < nq; i++) {  /* both ascending: the visible keys are a growing prefix */
        while (j < nk && hk[j] <= hq[i]) j++;
        vis += j;
    }
    free(hq);
    fh_count_macs(vis * 2 * hd * nh * B);
}

template <int HD, int BT>
static void fwd_launch(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                       const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    size_t smem = sizeof(float) * (3 * BT * (HD + 1) + BT * (BT + 16));
    if (attention_set_smem((const void *)attention_fwd_kernel<HD, BT>, smem, "attention_fwd")) return;
    dim3 grid(nh, B, (nq + BT - 1) / BT);
    attention_fwd_kernel<HD, BT><<<grid, ATT_THREADS, smem, cuda_stream()>>>(out, lse, q, k, v, qpos, kpos, nq, nk,
                                                                             nh, nkv, hd, 1.f / sqrtf((float)hd));
    CUDA_LAUNCHED();
}

template <int HD, int BT>
static void bwd_launch(float *dq, float *dk, float *dv, const float *dout, const float *D, const float *lse,
                       const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                       int nq, int nk, int nh, int nkv, int hd, int acc) {
    float scale = 1.f / sqrtf((float)hd);
    if (dk || dv) {
        size_t smem = sizeof(float) * (4 * BT * (HD + 1) + 2 * BT * (BT + 16));
        if (attention_set_smem((const void *)attention_dkdv_kernel<HD, BT>, smem, "attention_bwd")) return;
        dim3 grid(nkv, B, (nk + BT - 1) / BT);
        attention_dkdv_kernel<HD, BT><<<grid, ATT_THREADS, smem, cuda_stream()>>>(dk, dv, dout, D, lse, q, k, v, qpos,
                                                                                  kpos, nq, nk, nh, nkv, hd, scale, acc);
        CUDA_LAUNCHED();
    }
    if (dq) {
        size_t smem = sizeof(float) * (4 * BT * (HD + 1) + BT * (BT + 16));
        if (attention_set_smem((const void *)attention_dq_kernel<HD, BT>, smem, "attention_bwd")) return;
        dim3 grid(nh, B, (nq + BT - 1) / BT);
        attention_dq_kernel<HD, BT><<<grid, ATT_THREADS, smem, cuda_stream()>>>(dq, dout, D, lse, q, k, v, qpos, kpos,
                                                                                nq, nk, nh, nkv, hd, scale, acc);
        CUDA_LAUNCHED();
    }
}

/* causal self-attention over one token list (the isolated context, LLaMA):
 * the same position array for queries and keys. Its positions are distinct
 * and ascending, so key j is visible to query i iff j <= i: cuDNN's causal
 * mask on indices (attention_cudnn.cu). The prefix context (kpos = 0..T-1, a
 * query subset) is not that mask. */
static int self_causal(const int *qpos, const int *kpos, int nq, int nk) { return qpos == kpos && nq == nk; }

static int hd_supported(int hd, const char *what) {
    if (hd >= 1 && hd <= 256) return 1;
    cuda_record_error(what, "head_dim must be 1..256 for the CUDA attention kernels", __FILE__, __LINE__);
    return 0;
}

/* ---- row strides (ops.h: q, k, v as column windows of the packed q/k/v product's output, perf-notes
 * fuse-proj). cuDNN's conversions read and write the strided rows themselves; our kernels (the fp32 ones,
 * the bf16 tiles) run on dense copies made here (and their gradients added back): the same values, for a
 * copy of q, k, v (and dq, dk, dv) per call on those paths, which the bf16 training of the configs with
 * cuDNN head sizes (a multiple of 8) does not take. */
__global__ void attn_rows_kernel(float *dst, int ldd, const float *src, int lds, size_t rows, int cols, int acc) {
    size_t total = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i - r * cols;
        float x = src ? src[r * lds + c] : 0.f;
        dst[r * ldd + c] = acc ? dst[r * ldd + c] + x : x;
    }
}
/* dst rows (ldd apart) = src rows (lds apart; NULL: zeros), or += with acc */
static void rows_copy(float *dst, int ldd, const float *src, int lds, size_t rows, int cols, int acc) {
    if (!dst || !rows || cols <= 0) return;
    attn_rows_kernel<<<grid_for(rows * cols, 256), 256, 0, cuda_stream()>>>(dst, ldd, src, lds, rows, cols, acc);
    CUDA_LAUNCHED();
}
static int is_dense(int nh, int nkv, int hd, int ldq, int ldkv) { return ldq == nh * hd && ldkv == nkv * hd; }
static size_t up64(size_t n) { return (n + 63) / 64 * 64; }   /* 256-byte aligned sub-buffers */
/* dense copies of q, k, v [and room for dq, dk, dv when grads]: per branch, grown on demand and kept */
static float *dense_scratch(size_t nqd, size_t nkd, int grads) {
    static BranchScratch s;
    size_t n = (up64(nqd) + 2 * up64(nkd)) * (grads ? 2 : 1);
    return (float *)cuda_branch_scratch(&s, sizeof(float) * (n ? n : 1), "the attention's dense q, k, v");
}
/* q, k, v into dense copies at sc (q, k, v then point there) */
static void densify(float *sc, const float **q, const float **k, const float **v, int B, int nq, int nk, int nh,
                    int nkv, int hd, int ldq, int ldkv) {
    int qd = nh * hd, kvd = nkv * hd;
    size_t nqd = (size_t)B * nq * qd, nkd = (size_t)B * nk * kvd;
    float *Q = sc, *K = sc + up64(nqd), *V = K + up64(nkd);
    rows_copy(Q, qd, *q, ldq, (size_t)B * nq, qd, 0);
    rows_copy(K, kvd, *k, ldkv, (size_t)B * nk, kvd, 0);
    rows_copy(V, kvd, *v, ldkv, (size_t)B * nk, kvd, 0);
    *q = Q; *k = K; *v = V;
}

void cuda_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                        const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv) {
    if (B <= 0 || nq <= 0 || !hd_supported(hd, "attention_fwd")) return;
    /* counted first: its host copies of the positions are CUDA calls, which after the kernel would retire the
     * output's bf16 shadow (linear.cu) before the o product reads it */
    count_attention_macs(qpos, kpos, B, nq, nk, nh, hd);
    if (attention_tc_applies(hd) && self_causal(qpos, kpos, nq, nk) &&
        attention_cudnn_fwd(out, lse, q, k, v, qpos, B, nq, nh, nkv, hd, 0.f, ldq, ldkv) == 0)
        return;
    if (!is_dense(nh, nkv, hd, ldq, ldkv)) {
        float *sc = dense_scratch((size_t)B * nq * nh * hd, (size_t)B * nk * nkv * hd, 0);
        if (!sc) return;
        densify(sc, &q, &k, &v, B, nq, nk, nh, nkv, hd, ldq, ldkv);
    }
    if (attention_tc_applies(hd)) attention_tc_fwd(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 16) fwd_launch<16, 64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 32) fwd_launch<32, 64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 64) fwd_launch<64, 64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else if (hd <= 128) fwd_launch<128, 64>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
    else fwd_launch<256, 32>(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd);
}

/* D scratch [B, nh, nq], one per branch stream (both branches of a parallel
 * block may run at once), grown on demand and kept (the same shapes recur every step) */
static float *rowdot_scratch(size_t n) {
    static BranchScratch s;
    return (float *)cuda_branch_scratch(&s, sizeof(float) * n, "the attention backward scratch");
}

/* the strided backward on dense copies: dq, dk, dv computed dense (overwritten) and added back (acc) or
 * copied into their rows; rope: theta > 0 (the tc rope kernels), else attention_bwd's */
static void bwd_strided(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                        const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                        int nq, int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv, float theta) {
    int qd = nh * hd, kvd = nkv * hd;
    size_t nqd = (size_t)B * nq * qd, nkd = (size_t)B * nk * kvd;
    float *sc = dense_scratch(nqd, nkd, 1);
    if (!sc) return;
    densify(sc, &q, &k, &v, B, nq, nk, nh, nkv, hd, ldq, ldkv);
    float *g = sc + up64(nqd) + 2 * up64(nkd);
    float *dQ = dq ? g : NULL, *dK = dk ? g + up64(nqd) : NULL, *dV = dv ? g + up64(nqd) + up64(nkd) : NULL;
    if (theta > 0.f)
        attention_tc_rope_bwd(dQ, dK, dV, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, FH_OVERWRITE,
                              theta);
    else cuda_attention_bwd(dQ, dK, dV, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, FH_OVERWRITE,
                            qd, kvd);
    rows_copy(dq, ldq, dQ, qd, (size_t)B * nq, qd, acc);
    rows_copy(dk, ldkv, dK, kvd, (size_t)B * nk, kvd, acc);
    rows_copy(dv, ldkv, dV, kvd, (size_t)B * nk, kvd, acc);
}

void cuda_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                        const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                        int nq, int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv) {
    if (B <= 0 || nq <= 0 || (!dq && !dk && !dv) || !hd_supported(hd, "attention_bwd")) return;
    if (nk <= 0) {  /* no key: dq is 0 (and dk, dv are empty) */
        if (!acc && dq) rows_copy(dq, ldq, NULL, 0, (size_t)B * nq, nh * hd, 0);
        return;
    }
    if (attention_tc_applies(hd) && self_causal(qpos, kpos, nq, nk) &&
        attention_cudnn_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, B, nq, nh, nkv, hd, acc, 0.f, ldq, ldkv) == 0)
        return;
    if (!is_dense(nh, nkv, hd, ldq, ldkv)) {
        bwd_strided(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, ldq, ldkv, 0.f);
        return;
    }
    if (attention_tc_applies(hd)) {  /* computes D itself */
        attention_tc_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
        return;
    }
    size_t rows = (size_t)B * nq * nh;
    float *D = rowdot_scratch(rows);
    if (!D) return;
    attention_rowdot_kernel<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(D, dout, out, B, nq, nh, hd);
    CUDA_LAUNCHED();
    if (hd <= 16) bwd_launch<16, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
    else if (hd <= 32) bwd_launch<32, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
    else if (hd <= 64) bwd_launch<64, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
    else if (hd <= 128) bwd_launch<128, 64>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
    else bwd_launch<256, 32>(dq, dk, dv, dout, D, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc);
}

/* attention_rope_fwd / _bwd (ops.h): RoPE inside the bf16 tensor-core path
 * (attention_tc.cu: q and k rotated where they are rounded to bf16, dq and dk
 * rotated back where they are produced), so the fp32 rotated copies and their
 * gradients are never written or read. Elsewhere (fp32 precision, a head size
 * that is not a tile width) 1: the model composes rope and attention. */
int cuda_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                            const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                            int ldkv) {
    /* the q|k|v product's bf16 D (ops.h bf16_only once = 3, linear.cu qkv_d16): only the cuDNN forward reads it;
     * every other outcome (declined here, or by cuDNN) writes q | k | v's fp32 back from it first, so the model's
     * fallback and our kernels read defined values (the rounded ones) */
    if (!(theta > 0)) { cuda_qkv_d16_restore(q); return 1; }
    /* cuDNN takes any multiple of 8 up to 128; our kernels only the tile widths */
    int dnn = attention_tc_applies(hd) && self_causal(qpos, kpos, nq, nk) && hd % 8 == 0 && hd <= 128;
    if (!attention_tc_rope_applies(hd) && !dnn) { cuda_qkv_d16_restore(q); return 1; }
    if (B <= 0 || nq <= 0) { cuda_qkv_d16_restore(q); return 0; }
    count_attention_macs(qpos, kpos, B, nq, nk, nh, hd);   /* first, as in cuda_attention_fwd */
    if (dnn && attention_cudnn_fwd(out, lse, q, k, v, qpos, B, nq, nh, nkv, hd, theta, ldq, ldkv) == 0) return 0;
    cuda_qkv_d16_restore(q);   /* cuDNN declined (before or after reading D: D is still there) */
    if (!attention_tc_rope_applies(hd)) return 1;   /* cuDNN declined a head size only it takes */
    if (!is_dense(nh, nkv, hd, ldq, ldkv)) {
        float *sc = dense_scratch((size_t)B * nq * nh * hd, (size_t)B * nk * nkv * hd, 0);
        if (!sc) return 0;   /* the error is recorded: as the kernels' own scratch failures */
        densify(sc, &q, &k, &v, B, nq, nk, nh, nkv, hd, ldq, ldkv);
    }
    attention_tc_rope_fwd(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta);
    return 0;
}

int cuda_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                            const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                            int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv) {
    /* d out as the o product's bf16 D only (ops.h bf16_only once = 5, linear.cu datt_d16): only the cuDNN
     * backward reads it; every other outcome writes d out's fp32 back from it first (as the forward's q|k|v D) */
    if (!(theta > 0)) { cuda_datt_d16_restore(dout); return 1; }
    int dnn = attention_tc_applies(hd) && self_causal(qpos, kpos, nq, nk) && hd % 8 == 0 && hd <= 128;
    if (!attention_tc_rope_applies(hd) && !dnn) { cuda_datt_d16_restore(dout); return 1; }
    if (B <= 0 || nq <= 0 || (!dq && !dk && !dv)) { cuda_datt_d16_restore(dout); return 0; }
    if (nk <= 0) {  /* no key: dq is 0 (and dk, dv are empty) */
        cuda_datt_d16_restore(dout);
        if (!acc && dq) rows_copy(dq, ldq, NULL, 0, (size_t)B * nq, nh * hd, 0);
        return 0;
    }
    if (dnn &&
        attention_cudnn_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, B, nq, nh, nkv, hd, acc, theta, ldq, ldkv) == 0)
        return 0;
    cuda_datt_d16_restore(dout);   /* cuDNN declined (before or after reading D: D is still there) */
    /* out's fp32 never written (ops.h bf16_only once = 4): only cuDNN's read of its kept rounding could serve.
     * Loud, as for q, k, v below */
    if (cuda_bf16_missing(out, (size_t)B * nq * nh * hd, "the attention backward (its out)")) return 0;
    /* q, k, v's fp32 never written (ops.h bf16_only once = 3): only cuDNN's kept Q | K | V could serve. Loud (the
     * error is recorded, cuda_ops_check fails the step), not a read of unwritten memory here or in the model's
     * dense fallback */
    if (cuda_bf16_missing(q, (size_t)(B * nq - 1) * ldq + (size_t)nh * hd, "the attention backward")) return 0;
    if (!attention_tc_rope_applies(hd)) return 1;   /* cuDNN declined a head size only it takes */
    if (!is_dense(nh, nkv, hd, ldq, ldkv)) {
        bwd_strided(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, ldq, ldkv, theta);
        return 0;
    }
    attention_tc_rope_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, theta);
    return 0;
}
