/* rmsnorm.cu - RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
 * One block per row; dw is a deterministic column reduction. */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define NORM_THREADS 256

/* The split's gather fused into a norm (ops.h rmsnorm_gather_*): row `row` of
 * the [B, nsel, C] tensors is row (b, idx[j]) of the [B, T, C] ones. idx NULL:
 * no map (the row itself). */
__device__ __forceinline__ size_t sel_row(int row, const int *idx, int T, int nsel) {
    if (!idx) return (size_t)row;
    int b = row / nsel, j = row - b * nsel;
    return (size_t)b * T + idx[j];
}

/* ob: NULL, or out's bf16 shadow (linear.cu), the rounding of each value stored; out NULL: the
 * rounding only (a bf16-only output, linear.cu; the same for every forward norm kernel here) */
/* idx != NULL: x's row through the map (sel_row), copied to xsel's row blockIdx.x */
__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w, int C, float eps,
                                   __nv_bfloat16 *ob, float *xsel, const int *idx, int T, int nsel) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    __shared__ float sh[32];
    const float *xi = x + sel_row(blockIdx.x, idx, T, nsel) * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += xi[c] * xi[c];
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    size_t off = (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = xi[c], o = v * r * w[c];
        if (xsel) xsel[off + c] = v;
        if (out) out[off + c] = o;
        if (ob) ob[off + c] = __float2bfloat16_rn(o);
    }
}

/* r = a + b and the norm of r in one pass over HBM: reads a, b, w, writes r,
 * out (5 row passes with add + rmsnorm_fwd, 4 here). The second loop reads r
 * back from the same thread's own writes (the same addresses; L1/L2 hits).
 * r may alias a or b: each element is read before the same thread writes it. */
__global__ void add_rmsnorm_fwd_kernel(float *r, float *out, float *rstd, const float *a, const float *b,
                                       const float *w, int C, float eps, __nv_bfloat16 *ob) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = a[off + c] + b[off + c];
        r[off + c] = v;
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float rs = rsqrtf(ss / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float o = r[off + c] * rs * w[c];
        if (out) out[off + c] = o;
        if (ob) ob[off + c] = __float2bfloat16_rn(o);
    }
}

/* dx = r (dout w - xhat mean(dout w xhat)), xhat = x r; ob: NULL, or dx's bf16 shadow.
 * dfull != NULL (rmsnorm_gather_bwd): dx is only read (acc: the residual's share,
 * dres), and dfull's mapped row += (acc ? dx + d : d); ob is NULL then. */
__global__ void rmsnorm_bwd_dx_kernel(float *dx, const float *dout, const float *x, const float *w,
                                      const float *rstd, int C, int acc, __nv_bfloat16 *ob, float *dfull,
                                      const int *idx, int T, int nsel) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C, moff = dfull ? sel_row(blockIdx.x, idx, T, nsel) * C : 0;
    float r = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dout[off + c] * w[c] * x[off + c];
    float m = block_sum(dot, sh) * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float d = r * (dout[off + c] * w[c] - x[off + c] * r * m);
        d = acc ? dx[off + c] + d : d;   /* acc 0: overwrite (ops.h) */
        if (dfull) {
            dfull[moff + c] += d;
            continue;
        }
        dx[off + c] = d;
        if (ob) ob[off + c] = __float2bfloat16_rn(d);
    }
}

/* ---- the row-per-warp kernels (perf-notes, elem-llama; FLOWHN_ELEM=old: the kernels above) ----
 * The kernels above give a row to a 256-thread block: at C = 768 three scalar
 * loads a thread, two block barriers a row, and ~16 KB in flight an SM, so
 * they wait on latency (1.3-1.5x their byte bound on the H200). Here a warp
 * owns a row and holds it in registers, NV vectors of VW floats a lane
 * (VW = 4: float4 loads, C % 4 == 0 and 16-byte aligned rows; VW = 1 for
 * short rows that are not): one read of each input, the row's sum by warp
 * shuffles, no block barrier. Lane l's vector k holds columns
 * (32 k + l) VW .. + VW - 1 (coalesced); lanes past C hold zeros. The
 * per-element arithmetic is the kernels' above, term for term; only the order
 * of the row sums differs (fp32, ~1e-7 relative). */
#define ROW_WARPS 8   /* warps (rows at a time) a 256-thread block */

template <int VW>
__device__ __forceinline__ void ld_v(float (&v)[VW], const float *p) {
    if constexpr (VW == 4) {
        float4 t = *reinterpret_cast<const float4 *>(p);
        v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
    } else {
        v[0] = *p;
    }
}
/* VW bf16 values (the gate|up product's bf16 D as rmsnorm_bwd's dout, linear.cu dnorm_d16): 8-byte loads for
 * VW = 4 (D is cudaMalloc'd and C % 4 == 0 then: 8-byte aligned) */
template <int VW>
__device__ __forceinline__ void ld_v(float (&v)[VW], const __nv_bfloat16 *p) {
    if constexpr (VW == 4) {
        uint2 r = *reinterpret_cast<const uint2 *>(p);
        float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.x));
        float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.y));
        v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
    } else {
        v[0] = __bfloat162float(*p);
    }
}
template <int VW>
__device__ __forceinline__ void st_v(float *p, const float (&v)[VW]) {
    if constexpr (VW == 4) *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else *p = v[0];
}
/* the bf16 rounding (round to nearest even, as __float2bfloat16_rn) of VW values: 8-byte stores for VW = 4
 * where p allows (shadow and kept buffers are cudaMalloc'd, 256-byte aligned; any other takes 2-byte stores) */
template <int VW>
__device__ __forceinline__ void st_bf(__nv_bfloat16 *p, const float (&v)[VW]) {
    if constexpr (VW == 4) {
        if ((uintptr_t)p & 7) {
#pragma unroll
            for (int j = 0; j < 4; j++) p[j] = __float2bfloat16_rn(v[j]);
            return;
        }
        __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
        uint2 u;
        u.x = *reinterpret_cast<unsigned int *>(&lo);
        u.y = *reinterpret_cast<unsigned int *>(&hi);
        *reinterpret_cast<uint2 *>(p) = u;
    } else {
        *p = __float2bfloat16_rn(v[0]);
    }
}

/* out = norm(a [+ b]); ADD also writes r = a + b (r may alias a or b: a lane
 * loads all of its elements before it stores any). idx != NULL (not with ADD):
 * a's row through the map (sel_row), copied to r when r != NULL.
 * BT: b's type, float or __nv_bfloat16 (a residual branch's bf16 D, ops.h
 * bf16_only once = 10, linear.cu resid_d16: 8-byte loads for VW 4). */
template <int VW, int NV, bool ADD, typename BT = float>
__global__ void __launch_bounds__(ROW_WARPS * 32) norm_rows_fwd_kernel(float *r, float *out, float *rstd,
                                                                      const float *a, const BT *b,
                                                                      const float *w, int N, int C, float eps,
                                                                      __nv_bfloat16 *ob, const int *idx, int T,
                                                                      int nsel) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    int row = blockIdx.x * ROW_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;   /* the whole warp: no block barrier below */
    size_t off = (size_t)row * C, aoff = sel_row(row, idx, T, nsel) * C;   /* idx: a's row through the map */
    float v[NV][VW];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = (k * 32 + lane) * VW;
        if (c < C) {
            ld_v<VW>(v[k], a + aoff + c);
            if (ADD) {
                float t[VW];
                ld_v<VW>(t, b + off + c);
#pragma unroll
                for (int j = 0; j < VW; j++) v[k][j] += t[j];
            }
        } else {
#pragma unroll
            for (int j = 0; j < VW; j++) v[k][j] = 0.f;
        }
#pragma unroll
        for (int j = 0; j < VW; j++) ss += v[k][j] * v[k][j];
    }
    ss = warp_sum(ss);
    float rs = rsqrtf(ss / C + eps);
    if (lane == 0) rstd[row] = rs;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = (k * 32 + lane) * VW;
        if (c >= C) continue;
        if (r) st_v<VW>(r + off + c, v[k]);   /* ADD: r = a + b; idx: the gathered copy of a's row */
        float wv[VW], o[VW];
        ld_v<VW>(wv, w + c);
#pragma unroll
        for (int j = 0; j < VW; j++) o[j] = v[k][j] * rs * wv[j];
        if (out) st_v<VW>(out + off + c, o);
        if (ob) st_bf<VW>(ob + off + c, o);
    }
}

/* rmsnorm's whole backward in one pass: dx (dx != NULL) as rmsnorm_bwd_dx_kernel,
 * and (part != NULL) the block's share of dw, its rows' dout x rstd summed
 * per column into part[block][C] (each warp's running sums in its own shared
 * row, then the 8 rows added in order); rmsnorm_dw_finish adds the blocks'
 * parts in order: deterministic. Warps take rows w, w + 8 G, ... (G blocks). */
/* DI: dout's type, float or __nv_bfloat16 (the product's bf16 D, ops.h bf16_only once = 8 or 9) */
template <int VW, int NV, typename DI>
__global__ void __launch_bounds__(ROW_WARPS * 32, 2)
    rmsnorm_bwd_rows_kernel(float *dx, float *part, const DI *dout, const float *x, const float *w,
                            const float *rstd, int N, int C, int acc, __nv_bfloat16 *ob, float *dfull,
                            const int *idx, int T, int nsel) {
    extern __shared__ float sdw[];   /* [ROW_WARPS][C] when part */
    int wid = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *mine = sdw + (size_t)wid * C;
    if (part) {   /* zeroed in the layout each lane reads back: its own elements, no barrier */
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int c = (k * 32 + lane) * VW;
            if (c < C) {
#pragma unroll
                for (int j = 0; j < VW; j++) mine[c + j] = 0.f;
            }
        }
    }
    for (int row = blockIdx.x * ROW_WARPS + wid; row < N; row += gridDim.x * ROW_WARPS) {
        size_t off = (size_t)row * C;
        float r = rstd[row];
        float dv[NV][VW], xv[NV][VW], pv[NV][VW];
#pragma unroll
        for (int k = 0; k < NV; k++) {   /* every load of the row first: 2-3 x NV vectors in flight a lane */
            int c = (k * 32 + lane) * VW;
            if (c < C) {
                ld_v<VW>(dv[k], dout + off + c);
                ld_v<VW>(xv[k], x + off + c);
                if (dx && acc) ld_v<VW>(pv[k], dx + off + c);
                else {
#pragma unroll
                    for (int j = 0; j < VW; j++) pv[k][j] = 0.f;
                }
            } else {
#pragma unroll
                for (int j = 0; j < VW; j++) dv[k][j] = xv[k][j] = pv[k][j] = 0.f;
            }
        }
        if (dx || dfull) {
            float dot = 0.f;
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int c = (k * 32 + lane) * VW;
                if (c >= C) continue;
                float wv[VW];
                ld_v<VW>(wv, w + c);
#pragma unroll
                for (int j = 0; j < VW; j++) dot += dv[k][j] * wv[j] * xv[k][j];
            }
            float m = warp_sum(dot) * r / C;
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int c = (k * 32 + lane) * VW;
                if (c >= C) continue;
                float wv[VW], d[VW];
                ld_v<VW>(wv, w + c);
#pragma unroll
                for (int j = 0; j < VW; j++) {
                    d[j] = r * (dv[k][j] * wv[j] - xv[k][j] * r * m);
                    d[j] = acc ? pv[k][j] + d[j] : d[j];   /* acc 0: overwrite (ops.h) */
                }
                if (dfull) {   /* rmsnorm_gather_bwd: dx (dres) read only, the mapped row of dfull += d */
                    float *q = dfull + sel_row(row, idx, T, nsel) * C + c;
                    float t[VW];
                    ld_v<VW>(t, q);
#pragma unroll
                    for (int j = 0; j < VW; j++) t[j] += d[j];
                    st_v<VW>(q, t);
                    continue;
                }
                st_v<VW>(dx + off + c, d);
                if (ob) st_bf<VW>(ob + off + c, d);
            }
        }
        if (part) {
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int c = (k * 32 + lane) * VW;
                if (c < C) {
#pragma unroll
                    for (int j = 0; j < VW; j++) mine[c + j] += dv[k][j] * xv[k][j] * r;
                }
            }
        }
    }
    if (!part) return;
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float t = 0.f;
#pragma unroll
        for (int k = 0; k < ROW_WARPS; k++) t += sdw[(size_t)k * C + c];
        part[(size_t)blockIdx.x * C + c] = t;
    }
}

/* dw[c] += the G blocks' parts in block order: 32 columns x 8 lanes a block,
 * lane y adding blocks y, y + 8, ...; then the 8 lanes in order */
__global__ void rmsnorm_dw_finish_kernel(float *dw, const float *part, int G, int C) {
    __shared__ float sh[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float t = 0.f;
    if (c < C) {
#pragma unroll 4
        for (int g = threadIdx.y; g < G; g += 8) t += part[(size_t)g * C + c];
    }
    sh[threadIdx.y][threadIdx.x] = t;
    __syncthreads();
    if (threadIdx.y || c >= C) return;
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) s += sh[k][threadIdx.x];
    dw[c] += s;
}

/* The same sum with 32 lanes a column (perf-notes, llamapass): the old finish
 * gives 24 blocks (C 768) 33 loads a thread, issued 4 at a time, so it waits
 * ~9 L2 round trips (6.8 us a call for 0.8 MB). Here lane y of a 32 x 32
 * block adds parts y, y + 32, ... with 8 loads in flight (264 parts: one or two
 * rounds), then lane 0 adds the 32 sums in order: deterministic, but another
 * order than the old finish (fp32 rounding, ~1e-7 relative). */
#define DWF_LANES 32
__global__ void __launch_bounds__(32 * DWF_LANES) rmsnorm_dw_finish_wide_kernel(float *dw, const float *part, int G,
                                                                               int C) {
    __shared__ float sh[DWF_LANES][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float t = 0.f;
    if (c < C) {
        for (int g0 = threadIdx.y; g0 < G; g0 += 8 * DWF_LANES) {
            float v[8];
#pragma unroll
            for (int k = 0; k < 8; k++) {   /* every load first, then the adds in order */
                int g = g0 + k * DWF_LANES;
                v[k] = g < G ? part[(size_t)g * C + c] : 0.f;
            }
#pragma unroll
            for (int k = 0; k < 8; k++) t += v[k];
        }
    }
    sh[threadIdx.y][threadIdx.x] = t;
    __syncthreads();
    if (threadIdx.y || c >= C) return;
    float s = 0.f;
#pragma unroll 8
    for (int k = 0; k < DWF_LANES; k++) s += sh[k][threadIdx.x];
    dw[c] += s;
}

/* FLOWHN_DW_FINISH=0: the old finish (8 lanes a column); default the wide one. -1: not read yet */
static int dw_finish_wide = -1;
int cuda_set_dw_finish_wide(int on) { return cuda_env_switch(&dw_finish_wide, "FLOWHN_DW_FINISH", "0", 1, on); }

#define RMS_BWD_BLOCKS 264   /* 2 a SM on the H200's 132: the parts' count is fixed, so the sums' order is too */

static int aligned16(const void *p) { return !((uintptr_t)p & 15); }

/* the row kernels' shape for C: VW 4 when C % 4 == 0, C <= 1024 and every fp32 row
 * pointer 16-byte aligned, else VW 1 for C <= 256; NV the vectors a lane
 * needs, rounded up to 1, 2, 4, 6, 8. 0: the kernels above (also for
 * FLOWHN_ELEM=old). C > 1024 (llama-1b's 2048) would need > 8 vectors a lane
 * of 2-3 tensors: more registers than 2 blocks an SM allow; left to them. */
static int rows_plan(int C, const float *const *p, int np, int *vw, int *nv) {
    if (cuda_set_elem_old(-1) || C <= 0) return 0;
    int ok4 = C % 4 == 0 && C <= 1024;
    for (int i = 0; i < np; i++) ok4 = ok4 && aligned16(p[i]);
    int need;
    if (ok4) *vw = 4, need = (C + 127) / 128;
    else if (C <= 256) *vw = 1, need = (C + 31) / 32;
    else return 0;
    *nv = need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : need <= 6 ? 6 : 8;
    return 1;
}

/* calls F(VW, NV) with the pair as template arguments */
#define ROWS_DISPATCH(vw, nv, LAUNCH)                                             \
    do {                                                                          \
        if (vw == 4) {                                                            \
            switch (nv) {                                                         \
            case 1: LAUNCH(4, 1); break;                                          \
            case 2: LAUNCH(4, 2); break;                                          \
            case 4: LAUNCH(4, 4); break;                                          \
            case 6: LAUNCH(4, 6); break;                                          \
            default: LAUNCH(4, 8); break;                                         \
            }                                                                     \
        } else {                                                                  \
            switch (nv) {                                                         \
            case 1: LAUNCH(1, 1); break;                                          \
            case 2: LAUNCH(1, 2); break;                                          \
            case 4: LAUNCH(1, 4); break;                                          \
            case 6: LAUNCH(1, 6); break;                                          \
            default: LAUNCH(1, 8); break;                                         \
            }                                                                     \
        }                                                                         \
    } while (0)

/* launches the row-per-warp forward; 0: not applicable (the caller runs the block kernels) */
/* f32 false: out's fp32 values are not stored (a bf16-only output); out still decides the plan, so the
 * kernel, and the sums' order, are the ones the fp32-writing call gets: the same bits */
/* b16 != NULL (with ADD): b's values are read from it, its bf16 D (b's fp32 pointer is not read, so not checked:
 * D is 256-byte aligned, its rows 8-byte aligned when C % 4 == 0, as VW 4 needs); add_rows_apply says beforehand
 * whether this applies */
static int norm_rows_fwd(float *r, float *out, float *rstd, const float *a, const float *b, const float *w, int N,
                         int C, float eps, __nv_bfloat16 *ob, const int *idx = NULL, int T = 0, int nsel = 1,
                         bool f32 = true, const __nv_bfloat16 *b16 = NULL) {
    const float *p[5] = {out, a, b && !b16 ? b : a, r ? r : a, w};   /* w too: the kernel reads it by float4s */
    if (!f32) out = NULL;
    int vw, nv;
    if (!rows_plan(C, p, 5, &vw, &nv)) return 0;
    unsigned int blocks = (unsigned int)((N + ROW_WARPS - 1) / ROW_WARPS);
    /* PDL-launched in the decode graph (weights frozen), as the block kernels are there */
    bool pdl = cuda_weights_frozen();
#define NORM_FWD_LAUNCH(V, K)                                                                                    \
    if (b16)                                                                                                     \
        cuda_launch(pdl, norm_rows_fwd_kernel<V, K, true, __nv_bfloat16>, dim3(blocks), dim3(ROW_WARPS * 32), 0, r, \
                    out, rstd, a, b16, w, N, C, eps, ob, idx, T, nsel);                                          \
    else if (b)                                                                                                  \
        cuda_launch(pdl, norm_rows_fwd_kernel<V, K, true>, dim3(blocks), dim3(ROW_WARPS * 32), 0, r, out, rstd, a, \
                    b, w, N, C, eps, ob, idx, T, nsel);                                                          \
    else                                                                                                         \
        cuda_launch(pdl, norm_rows_fwd_kernel<V, K, false>, dim3(blocks), dim3(ROW_WARPS * 32), 0, r, out, rstd, \
                    a, b, w, N, C, eps, ob, idx, T, nsel)
    ROWS_DISPATCH(vw, nv, NORM_FWD_LAUNCH);
#undef NORM_FWD_LAUNCH
    return 1;
}

struct RmsnormDw {
    const float *dout, *x, *rstd;
    int C;
    __device__ float operator()(int i, int c) const {
        size_t k = (size_t)i * C + c;
        return dout[k] * x[k] * rstd[i];
    }
};

/* The norm's output is what q, k, v (or gate, up) read next: with bf16
 * products its rounding is written here too (cuda_shadow_claim). */
void cuda_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps) {
    if (N <= 0) return;
    size_t n = (size_t)N * C;
    int skip;   /* a bf16-only output with a home for its rounding: out's fp32 left unwritten (linear.cu) */
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim_only(out, n, &skip);
    float *fo = skip ? NULL : out;
    unsigned long before = cuda_epoch;
    /* the row kernels wherever they apply, frozen (decode) or not: the two kernel sets sum a row
     * in different orders, so mixing them by mode made frozen and per-product bf16 logits differ
     * (test_cuda_decode, hymba, session 8 call 3) */
    if (!norm_rows_fwd(NULL, out, rstd, x, NULL, w, N, C, eps, ob, NULL, 0, 1, !skip))
        cuda_launch(cuda_weights_frozen(), rmsnorm_fwd_kernel, dim3(N), dim3(NORM_THREADS), 0, fo, rstd, x, w, C, eps, ob,
                    (float *)NULL, (const int *)NULL, 0, 1);
    CudaRange wr[3] = {{out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)}, {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 3);
}

/* -1: not decided yet, FLOWHN_ADD_NORM is read on first use (cuda_ops.h) */
static int add_norm_fused = -1;

/* on by default: passed test_cuda / test_cuda_model on the H200, session 6 */
int cuda_set_add_norm_fused(int on) { return cuda_env_switch(&add_norm_fused, "FLOWHN_ADD_NORM", "0", 1, on); }

/* whether norm_rows_fwd applies to an add whose b is read as bf16 D (its pointer list then) */
static int add_rows_apply(const float *r, const float *out, const float *a, const float *w, int C) {
    const float *p[5] = {out, a, a, r ? r : a, w};
    int vw, nv;
    return rows_plan(C, p, 5, &vw, &nv);
}

void cuda_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N, int C,
                          real eps) {
    if (N <= 0) return;
    size_t n = (size_t)N * C;
    /* a or b as a residual branch's bf16 D (once = 10; linear.cu resid_d16): the row kernel reads it as its b
     * (a + b = b + a in fp32: the fp32 operand goes first); any other path gets x16's fp32 written back first */
    int bad;
    const real *x16 = b;
    const __nv_bfloat16 *b16 = (const __nv_bfloat16 *)cuda_resid_d16(b, n, &bad);
    if (bad) return;
    if (!b16 && a != b) {
        x16 = a;
        b16 = (const __nv_bfloat16 *)cuda_resid_d16(a, n, &bad);
        if (bad) return;
    }
    const real *fa = x16 == a ? b : a;   /* the fp32 operand, when one is D */
    if (b16 && (!cuda_set_add_norm_fused(-1) || !add_rows_apply(r, out, fa, w, C))) {
        cuda_resid_d16_restore(x16);   /* before the claims below: an ordinary launch */
        b16 = NULL;
    }
    /* fp32 that no one wrote (a bf16-only output this add cannot be served) is an error, never read */
    if (b16 ? cuda_bf16_missing(fa, n, "add_rmsnorm_fwd (its fp32 operand)")
            : cuda_bf16_missing(a, n, "add_rmsnorm_fwd (its a)") || cuda_bf16_missing(b, n, "add_rmsnorm_fwd (its b)"))
        return;
    if (!cuda_set_add_norm_fused(-1)) {   /* the unfused path, as before the op existed */
        unsigned long before = cuda_epoch;
        cuda_add(r, a, b, n);
        CudaRange wr = {r, n * sizeof(float)};   /* the add writes r only */
        cuda_shadow_done(before, &wr, 1);
        cuda_rmsnorm_fwd(out, rstd, r, w, N, C, eps);
        return;
    }
    int skip;   /* as rmsnorm_fwd */
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim_only(out, n, &skip);
    float *fo = skip ? NULL : out;
    unsigned long before = cuda_epoch;
    if (b16) {   /* add_rows_apply said yes: the row kernel, x16's D as its b */
        norm_rows_fwd(r, out, rstd, fa, x16, w, N, C, eps, ob, NULL, 0, 1, !skip, b16);
        cuda_resid_d16_done(x16);
    } else if (!norm_rows_fwd(r, out, rstd, a, b, w, N, C, eps, ob, NULL, 0, 1, !skip)) {
        add_rmsnorm_fwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(r, fo, rstd, a, b, w, C, eps, ob);
        CUDA_LAUNCHED();
    }
    CudaRange wr[4] = {{r, n * sizeof(float)}, {out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)},
                       {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 4);
}

/* the one-pass backward (rmsnorm_bwd_rows_kernel, then the dw finish); 0: not
 * applicable (the caller runs colsum and the block kernel). dx's shadow is
 * claimed before and declared after both launches, with every range they
 * write (dx, the shadow, the parts, dw), so it stays current for the next product. */
static int rmsnorm_bwd_rows(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int N, int C, int acc, float *dfull = NULL, const int *idx = NULL,
                            int T = 0, int nsel = 1, const __nv_bfloat16 *db = NULL) {
    if (!dx && !dw && !dfull) return 1;
    size_t n = (size_t)N * C;
    /* db (dout's bf16 D) is 256-byte aligned: its rows are 8-byte aligned when C % 4 == 0, as VW 4 needs; so
     * dout's fp32 pointer (never read then) is not checked */
    const float *p[5] = {db ? x : dout, x, dx ? dx : x, w, dfull ? dfull : x};   /* w too: the kernel reads it by float4s */
    int vw, nv;
    if (!rows_plan(C, p, 5, &vw, &nv)) return 0;
    unsigned int rows_blocks = (unsigned int)((N + ROW_WARPS - 1) / ROW_WARPS);
    unsigned int G = dw ? (rows_blocks < RMS_BWD_BLOCKS ? rows_blocks : RMS_BWD_BLOCKS) : rows_blocks;
    float *part = NULL;
    if (dw && !(part = cuda_colsum_scratch((size_t)G * C))) return 1;   /* error recorded */
    __nv_bfloat16 *ob = dx && !dfull ? (__nv_bfloat16 *)cuda_shadow_claim(dx, n) : NULL;
    size_t smem = dw ? sizeof(float) * ROW_WARPS * C : 0;
    unsigned long before = cuda_epoch;
#define RMS_BWD_LAUNCH(V, K)                                                                                   \
    rmsnorm_bwd_rows_kernel<V, K><<<G, ROW_WARPS * 32, smem, cuda_stream()>>>(dx, part, dout, x, w, rstd, N, C, \
                                                                              acc, ob, dfull, idx, T, nsel)
#define RMS_BWD_LAUNCH16(V, K)                                                                                 \
    rmsnorm_bwd_rows_kernel<V, K><<<G, ROW_WARPS * 32, smem, cuda_stream()>>>(dx, part, db, x, w, rstd, N, C,   \
                                                                              acc, ob, dfull, idx, T, nsel)
    if (db) ROWS_DISPATCH(vw, nv, RMS_BWD_LAUNCH16);
    else ROWS_DISPATCH(vw, nv, RMS_BWD_LAUNCH);
#undef RMS_BWD_LAUNCH
#undef RMS_BWD_LAUNCH16
    CUDA_LAUNCHED();
    if (dw) {
        if (cuda_set_dw_finish_wide(-1))
            rmsnorm_dw_finish_wide_kernel<<<(C + 31) / 32, dim3(32, DWF_LANES), 0, cuda_stream()>>>(dw, part, (int)G,
                                                                                                  C);
        else
            rmsnorm_dw_finish_kernel<<<(C + 31) / 32, dim3(32, 8), 0, cuda_stream()>>>(dw, part, (int)G, C);
        CUDA_LAUNCHED();
    }
    /* dfull: every row of it declared (B T rows; N = B nsel of them written) */
    size_t nfull = dfull ? (size_t)(N / nsel) * T * C : 0;
    CudaRange wr[5] = {{dx, dx && !dfull ? n * sizeof(float) : 0}, {ob, ob ? n * 2 : 0},
                       {part, part ? (size_t)G * C * sizeof(float) : 0}, {dw, dw ? (size_t)C * sizeof(float) : 0},
                       {dfull, nfull * sizeof(float)}};
    cuda_shadow_done(before, wr, 5);
    return 1;
}

void cuda_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w,
                      const real *rstd, int N, int C, int acc) {
    if (N <= 0) return;
    /* dout as the gate|up product's bf16 D (once = 8) or the q|k|v product's (once = 9, the attention norm's):
     * the row kernel reads it; any other path gets the fp32 written back from it first */
    int bad;
    const __nv_bfloat16 *db = (const __nv_bfloat16 *)cuda_dnorm_d16(dout, (size_t)N * C, &bad);
    if (bad) return;
    if (rmsnorm_bwd_rows(dx, dw, dout, x, w, rstd, N, C, acc, NULL, NULL, 0, 1, db)) {
        if (db) cuda_dnorm_d16_done(dout);
        return;
    }
    if (db) cuda_dnorm_d16_restore(dout);
    if (cuda_bf16_missing(dout, (size_t)N * C, "rmsnorm_bwd (its dout)")) return;
    /* dw first: dx is the residual gradient, which the next product (the o or down projection's backward)
     * reads as its dout, so its bf16 rounding is written too and must be the last launch here (colsum's
     * launches are not declared: they would retire it). The order is free: colsum writes only dw (and its
     * scratch), the dx kernel only dx, and neither reads what the other writes. */
    if (dw) colsum(dw, 1, N, C, RmsnormDw{dout, x, rstd, C});
    if (dx) {
        size_t n = (size_t)N * C;
        __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim(dx, n);
        unsigned long before = cuda_epoch;
        rmsnorm_bwd_dx_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dx, dout, x, w, rstd, C, acc, ob, NULL, NULL, 0,
                                                                     1);
        CUDA_LAUNCHED();
        CudaRange wr[2] = {{dx, n * sizeof(float)}, {ob, ob ? n * 2 : 0}};
        cuda_shadow_done(before, wr, 2);
    }
}

/* ---- the split's gather fused into the branch's first norm (ops.h rmsnorm_gather_*) ----
 * The same kernels as rmsnorm_fwd / rmsnorm_bwd (the row-per-warp ones where
 * they apply, else the block ones: the same choice, so the same sums as the
 * unfused ops), reading x's rows (forward) or adding into dfull's rows
 * (backward) through the map. Forward: one read of x's row, writes of the
 * copy (the branch residual), out and out's bf16 rounding: the gather pass
 * (read + write) and the norm's read of the copy become one read. Backward:
 * dres read, the mapped row of dfull read and written: no dx row written and
 * read back by a gather. */
void cuda_rmsnorm_gather_fwd(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w, int B,
                             int T, int n_sel, int C, real eps) {
    int N = B * n_sel;
    if (N <= 0 || C <= 0) return;
    size_t n = (size_t)N * C;
    int skip;   /* as rmsnorm_fwd */
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim_only(out, n, &skip);
    float *fo = skip ? NULL : out;
    unsigned long before = cuda_epoch;
    if (!norm_rows_fwd(xsel, out, rstd, x, NULL, w, N, C, eps, ob, idx, T, n_sel, !skip))
        cuda_launch(cuda_weights_frozen(), rmsnorm_fwd_kernel, dim3(N), dim3(NORM_THREADS), 0, fo, rstd, x, w, C, eps,
                    ob, xsel, idx, T, n_sel);
    CudaRange wr[4] = {{out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)}, {ob, ob ? n * 2 : 0},
                       {xsel, n * sizeof(float)}};
    cuda_shadow_done(before, wr, 4);
}

void cuda_rmsnorm_gather_bwd(real *dfull, real *dw, const real *dres, const real *dout, const real *x, const real *w,
                             const real *rstd, const int *idx, int B, int T, int n_sel, int C) {
    int N = B * n_sel;
    if (N <= 0 || C <= 0) return;
    int acc = dres != NULL;   /* the kernels read dx (here dres) only when acc */
    float *dr = (float *)dres;   /* read only with dfull set */
    /* no norm d out is served here (model.c never marks the fused split's du, ops.h bf16_only once = 9): a dout
     * whose fp32 a product left unwritten is the contract broken, loud rather than read */
    if (cuda_bf16_missing(dout, (size_t)N * C, "rmsnorm_gather_bwd (its dout)")) return;
    if (rmsnorm_bwd_rows(dr, dw, dout, x, w, rstd, N, C, acc, dfull, idx, T, n_sel)) return;
    if (dw) colsum(dw, 1, N, C, RmsnormDw{dout, x, rstd, C});
    if (dfull) {
        unsigned long before = cuda_epoch;
        rmsnorm_bwd_dx_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dr, dout, x, w, rstd, C, acc, NULL, dfull, idx, T,
                                                                     n_sel);
        CUDA_LAUNCHED();
        CudaRange wr = {dfull, (size_t)B * T * C * sizeof(float)};
        cuda_shadow_done(before, &wr, 1);
    }
}
