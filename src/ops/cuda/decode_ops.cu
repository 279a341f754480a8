/* decode_ops.cu - the generator's per-token helpers on the GPU (ops.h,
 * "decoding helpers"): the strided row copy (KV-cache append), the rolling
 * conv window, and one query per sequence over the KV cache. */
#include <cooperative_groups.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "common.cuh"

namespace cg = cooperative_groups;

/* a 2-D device-to-device copy on the current stream (capturable, no host sync) */
/* copy_rows into a window of a declared pack (linear.cu cuda_pack_claim): the fp32 values and their bf16
 * rounding (round to nearest even, as to_bf16_kernel), one thread a value; dst NULL: the rounding only (the
 * pack's fp32 elided, linear.cu cuda_pack_claim_only) */
__global__ void copy_rows_pack_kernel(float *dst, __nv_bfloat16 *dstb, int ldd, const float *src, int lds, int rows,
                                      int cols) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    size_t r = i / cols, c = i % cols;
    float v = src[r * lds + c];
    if (dst) dst[r * ldd + c] = v;
    dstb[r * ldd + c] = __float2bfloat16_rn(v);
}

void cuda_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    cuda_weights_written(dst, sizeof(float) * ((size_t)(rows - 1) * ldd + cols));
    /* dst a window of a declared pack (Ops.pack_bf16: Mamba-2's ddt into its in_proj gradient) */
    int skip = 0;   /* the pack marked bf16-only (Ops.bf16_only once = 6): the rounding only, no fp32 */
    __nv_bfloat16 *db = (__nv_bfloat16 *)cuda_pack_claim_only(dst, rows, cols, ldd, 0, &skip);
    if (db) {
        size_t n = (size_t)rows * cols;
        copy_rows_pack_kernel<<<(unsigned)((n + 255) / 256), 256, 0, cuda_stream()>>>(skip ? nullptr : dst, db, ldd,
                                                                                     src, lds, rows, cols);
        CUDA_LAUNCHED();
        cuda_pack_done();
        return;
    }
    CUDA_CALL(cudaMemcpy2DAsync(dst, sizeof(float) * ldd, src, sizeof(float) * lds, sizeof(float) * cols, rows,
                                cudaMemcpyDeviceToDevice, cuda_stream()));
}

/* one thread per (sequence, channel): it alone reads and writes that
 * channel's K window entries, so the in-place shift has no race */
__global__ void conv1d_step_kernel(float *out, float *win, const float *x, const float *w, const float *b, int B,
                                   int C, int K) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)B * C) return;
    int c = (int)(i % C);
    size_t bi = i / C;
    float *wb = win + bi * K * C + c;
    float acc = b ? b[c] : 0.f;
    for (int k = 0; k < K; k++) {
        float v = k + 1 < K ? wb[(size_t)(k + 1) * C] : x[i];
        wb[(size_t)k * C] = v;
        acc += w[(size_t)c * K + k] * v;
    }
    out[i] = acc;
}

void cuda_conv1d_step(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K) {
    size_t n = (size_t)B * C;
    if (!n) return;
    cuda_launch(true, conv1d_step_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, out, win, x, w, b, B, C, K);
    fh_count_macs((uint64_t)B * C * K);
}

/* One block per (head, sequence), DEC_WARPS warps. Warp w takes keys w,
 * w + DEC_WARPS, ...; lane l holds output elements l, l + 32, ... (hd <= 32 *
 * DEC_MAXR). Each warp keeps an online softmax (running max m, sum s, the
 * weighted value sum acc scaled to m); the warps' partials are merged at the
 * end through shared memory. */
#define DEC_WARPS 4
#define DEC_MAXR 8
__global__ void attention_decode_kernel(float *out, const float *q, const float *k, const float *v, int nk,
                                        const int *pos, int ld, int nh, int nkv, int hd, float scale) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    if (pos) nk = pos[0] + 1;  /* the _at variant: the position from device memory */
    __shared__ float sm[DEC_WARPS], ss[DEC_WARPS], sacc[DEC_WARPS][32 * DEC_MAXR];
    int h = blockIdx.x, b = blockIdx.y, kh = h / (nh / nkv);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const float *qi = q + ((size_t)b * nh + h) * hd;
    float qr[DEC_MAXR], acc[DEC_MAXR];
#pragma unroll
    for (int r = 0; r < DEC_MAXR; r++) {
        int x = lane + 32 * r;
        qr[r] = x < hd ? qi[x] : 0.f;
        acc[r] = 0.f;
    }
    float m = -INFINITY, s = 0.f;
    for (int j = wid; j < nk; j += DEC_WARPS) {
        size_t off = (((size_t)b * ld + j) * nkv + kh) * hd;
        float d = 0.f;
#pragma unroll
        for (int r = 0; r < DEC_MAXR; r++) {
            int x = lane + 32 * r;
            if (x < hd) d += qr[r] * k[off + x];
        }
        float sc = warp_sum(d) * scale, mn = fmaxf(m, sc);
        float corr = expf(m - mn), p = expf(sc - mn);   /* corr = 0 on the first key (m = -inf) */
        s = s * corr + p;
#pragma unroll
        for (int r = 0; r < DEC_MAXR; r++) {
            int x = lane + 32 * r;
            acc[r] = acc[r] * corr + (x < hd ? p * v[off + x] : 0.f);
        }
        m = mn;
    }
    if (lane == 0) { sm[wid] = m; ss[wid] = s; }
#pragma unroll
    for (int r = 0; r < DEC_MAXR; r++) sacc[wid][lane + 32 * r] = acc[r];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm[w]);
    float Z = 0.f;
    for (int w = 0; w < DEC_WARPS; w++) Z += sm[w] == -INFINITY ? 0.f : ss[w] * expf(sm[w] - M);
    float *oi = out + ((size_t)b * nh + h) * hd;
    for (int x = threadIdx.x; x < hd; x += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm[w] != -INFINITY) o += sacc[w][x] * expf(sm[w] - M);
        oi[x] = nk > 0 ? o / Z : 0.f;
    }
}

/* The split kernel (the default; FLOWHN_DECODE_ATTN=old selects the one
 * above for A/B timing). The old kernel is a serial chain per warp: each key
 * waits for its k load, a warp sum and two expf before its v loads and the
 * next key's loads are issued (~1 us a key; 46 us a call for llama-1b's 192
 * keys at B1, H200, session 6), and only B*nh blocks run (32 on 132 SMs).
 *
 * Here one cluster of DEC2_SPLIT blocks serves one (kv head, sequence, chunk
 * of up to GM query heads sharing that kv head):
 *   - block rank r of the cluster takes the r-th contiguous slice of the nk
 *     keys (nk from device memory for the _at variant, so the grid does not
 *     depend on it and a recorded graph serves every count);
 *   - inside the block, warp w takes U consecutive keys at a time: the k and
 *     v elements of all U keys are loaded before any arithmetic, so U*R*2
 *     loads per lane are in flight together instead of R;
 *   - each loaded k row serves the GM query heads of the group (GQA: the
 *     heads sharing a kv head share its loads); the U*GM warp sums are
 *     independent, so their shuffles interleave;
 *   - the online softmax (running max m, sum s, acc scaled to m) is updated
 *     once per U keys;
 *   - the warps' partials merge in shared memory, then the cluster's blocks'
 *     partials merge through distributed shared memory (no global workspace,
 *     no second launch, nothing to reset between graph replays).
 * Lane l holds elements l, l + 32, ... (R = ceil(hd / 32) of them), as in the
 * old kernel: the loads of one key row are coalesced for every hd. */
#define DEC2_SPLIT 8
#define DEC2_WARPS 8
template <int R, int GM>
__global__ void __cluster_dims__(DEC2_SPLIT, 1, 1) __launch_bounds__(32 * DEC2_WARPS)
attention_decode_split_kernel(float *out, const float *q, const float *k, const float *v, int nk, const int *pos,
                              int ld, int nh, int nkv, int hd, int chunks, float scale) {
    constexpr int U = R >= 8 ? 2 : R >= 4 ? 4 : 8;   /* U * R <= 16: k and v of U keys in 32 registers */
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    if (pos) nk = pos[0] + 1;
    __shared__ float wm[DEC2_WARPS][GM], ws[DEC2_WARPS][GM], wacc[DEC2_WARPS][GM][32 * R];
    __shared__ float pm[GM], ps[GM], pacc[GM][32 * R];
    cg::cluster_group cluster = cg::this_cluster();
    int rank = (int)cluster.block_rank();
    int group = nh / nkv, kh = blockIdx.y / chunks, h0 = kh * group + (blockIdx.y % chunks) * GM;
    int gh = min(GM, kh * group + group - h0);   /* query heads this block serves */
    int b = blockIdx.z, lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float qr[GM][R], acc[GM][R], m[GM], s[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        const float *qi = q + ((size_t)b * nh + h0 + g) * hd;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int x = lane + 32 * r;
            qr[g][r] = g < gh && x < hd ? qi[x] : 0.f;
            acc[g][r] = 0.f;
        }
        m[g] = -INFINITY;
        s[g] = 0.f;
    }
    int per = (nk + DEC2_SPLIT - 1) / DEC2_SPLIT, start = rank * per, end = min(nk, start + per);
    size_t kstride = (size_t)nkv * hd;
    const float *kb = k + ((size_t)b * ld * nkv + kh) * hd, *vb = v + ((size_t)b * ld * nkv + kh) * hd;
    for (int j0 = start + wid * U; j0 < end; j0 += DEC2_WARPS * U) {
        float kr[U][R], vr[U][R];
#pragma unroll
        for (int u = 0; u < U; u++) {
            bool ok = j0 + u < end;   /* warp-uniform */
            const float *kj = kb + (size_t)(j0 + u) * kstride, *vj = vb + (size_t)(j0 + u) * kstride;
#pragma unroll
            for (int r = 0; r < R; r++) {
                int x = lane + 32 * r;
                kr[u][r] = ok && x < hd ? kj[x] : 0.f;
                vr[u][r] = ok && x < hd ? vj[x] : 0.f;
            }
        }
#pragma unroll
        for (int g = 0; g < GM; g++) {
            float sc[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                float d = 0.f;
#pragma unroll
                for (int r = 0; r < R; r++) d += qr[g][r] * kr[u][r];
                sc[u] = d;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int u = 0; u < U; u++) sc[u] += __shfl_xor_sync(0xffffffffu, sc[u], o);
            float mx = -INFINITY;
#pragma unroll
            for (int u = 0; u < U; u++) {
                sc[u] = j0 + u < end ? sc[u] * scale : -INFINITY;
                mx = fmaxf(mx, sc[u]);
            }
            /* key j0 < end, so mx and mn are finite; corr = 0 on the first group (m = -inf),
             * p = 0 for the keys past end */
            float mn = fmaxf(m[g], mx), corr = expf(m[g] - mn), psum = 0.f;
#pragma unroll
            for (int r = 0; r < R; r++) acc[g][r] *= corr;
#pragma unroll
            for (int u = 0; u < U; u++) {
                float p = expf(sc[u] - mn);
                psum += p;
#pragma unroll
                for (int r = 0; r < R; r++) acc[g][r] += p * vr[u][r];
            }
            s[g] = s[g] * corr + psum;
            m[g] = mn;
        }
    }
#pragma unroll
    for (int g = 0; g < GM; g++) {
        if (lane == 0) { wm[wid][g] = m[g]; ws[wid][g] = s[g]; }
#pragma unroll
        for (int r = 0; r < R; r++) wacc[wid][g][lane + 32 * r] = acc[g][r];
    }
    __syncthreads();
    /* the block's partial per head: M = -inf, Z = 0, acc 0 when its slice is empty */
    for (int i = threadIdx.x; i < GM * 32 * R; i += blockDim.x) {
        int g = i / (32 * R), x = i % (32 * R);
        float M = -INFINITY;
        for (int w = 0; w < DEC2_WARPS; w++) M = fmaxf(M, wm[w][g]);
        float o = 0.f, Z = 0.f;
        if (M != -INFINITY)
            for (int w = 0; w < DEC2_WARPS; w++)
                if (wm[w][g] != -INFINITY) {
                    float c = expf(wm[w][g] - M);
                    o += wacc[w][g][x] * c;
                    Z += ws[w][g] * c;
                }
        pacc[g][x] = o;
        if (x == 0) { pm[g] = M; ps[g] = Z; }
    }
    cluster.sync();   /* every block's partial written (and visible to the cluster) */
    /* the cluster's merge, its outputs spread over all blocks' threads */
    for (int i = rank * blockDim.x + threadIdx.x; i < gh * hd; i += DEC2_SPLIT * blockDim.x) {
        int g = i / hd, x = i % hd;
        float M = -INFINITY;
        for (int c = 0; c < DEC2_SPLIT; c++) M = fmaxf(M, cluster.map_shared_rank(&pm[0], c)[g]);
        float o = 0.f, Z = 0.f;
        if (M != -INFINITY)
            for (int c = 0; c < DEC2_SPLIT; c++) {
                float mc = cluster.map_shared_rank(&pm[0], c)[g];
                if (mc == -INFINITY) continue;
                float e = expf(mc - M);
                o += cluster.map_shared_rank(&pacc[0][0], c)[g * 32 * R + x] * e;
                Z += cluster.map_shared_rank(&ps[0], c)[g] * e;
            }
        out[((size_t)b * nh + h0 + g) * hd + x] = nk > 0 && Z > 0.f ? o / Z : 0.f;
    }
    cluster.sync();   /* no block leaves while others may still read its shared memory */
}

/* FLOWHN_DECODE_ATTN=old: the serial kernel, for A/B timing (read per call,
 * ~0.1 us of host time; a recorded graph keeps the kernel it was recorded with) */
static int decode_attn_old(void) {
    const char *e = getenv("FLOWHN_DECODE_ATTN");
    return e && !strcmp(e, "old");
}

template <int R, int GM>
static void launch_split(real *out, const real *q, const real *k, const real *v, int B, int nk, const int *pos, int ld,
                         int nh, int nkv, int hd) {
    int chunks = (nh / nkv + GM - 1) / GM;
    dim3 grid(DEC2_SPLIT, nkv * chunks, B);
    /* the cluster dimensions are the kernel's (__cluster_dims__); PDL combines with them */
    cuda_launch(true, attention_decode_split_kernel<R, GM>, grid, dim3(32 * DEC2_WARPS), 0, out, q, k, v, nk, pos, ld, nh,
                nkv, hd, chunks, 1.f / sqrtf((float)hd));
}

template <int R>
static void launch_split_r(real *out, const real *q, const real *k, const real *v, int B, int nk, const int *pos,
                           int ld, int nh, int nkv, int hd) {
    int group = nh / nkv;
    if (group == 1) launch_split<R, 1>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    else if (group == 2) launch_split<R, 2>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    else launch_split<R, 4>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
}

static void attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, const int *pos,
                             int ld, int nh, int nkv, int hd) {
    if (B <= 0 || nh <= 0) return;
    if (hd > 32 * DEC_MAXR) {
        cuda_record_error("attention_decode", "head_dim above 256 is not supported by the decode kernel", __FILE__,
                          __LINE__);
        return;
    }
    if (B > 65535) {
        cuda_record_error("attention_decode", "batch above 65535 is not supported by the decode kernel", __FILE__,
                          __LINE__);
        return;
    }
    if (decode_attn_old()) {
        cuda_launch(true, attention_decode_kernel, dim3(nh, B), dim3(32 * DEC_WARPS), 0, out, q, k, v, nk, pos, ld, nh,
                    nkv, hd, 1.f / sqrtf((float)hd));
    } else if (hd <= 32) {
        launch_split_r<1>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    } else if (hd <= 64) {
        launch_split_r<2>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    } else if (hd <= 128) {
        launch_split_r<4>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    } else {
        launch_split_r<8>(out, q, k, v, B, nk, pos, ld, nh, nkv, hd);
    }
}

void cuda_attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh,
                           int nkv, int hd) {
    attention_decode(out, q, k, v, B, nk, NULL, ld, nh, nkv, hd);
    fh_count_macs(2ull * hd * nk * B * nh);
}

/* nk is on the device: not counted (the host does not know it) */
void cuda_attention_decode_at(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                              int nh, int nkv, int hd) {
    attention_decode(out, q, k, v, B, 0, pos, ld, nh, nkv, hd);
}

__global__ void copy_rows_at_kernel(float *dst, int ldd, const float *src, int rows, int cols, const int *pos) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    size_t r = i / cols, c = i % cols;
    dst[r * ldd + (size_t)pos[0] * cols + c] = src[i];
}

void cuda_copy_rows_at(real *dst, int ldd, const real *src, int rows, int cols, const int *pos) {
    size_t n = (size_t)rows * cols;
    if (!n) return;
    cuda_launch(true, copy_rows_at_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, dst, ldd, src, rows, cols, pos);
}
