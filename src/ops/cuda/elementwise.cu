/* elementwise.cu - residual adds, gradient accumulation, SiLU and SwiGLU.
 * One grid-stride loop each; memory-bound, so one pass over each tensor. */
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define EW_THREADS 256
#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ void accumulate_kernel(float *dst, const float *src, float alpha, size_t n) {
    GRID_STRIDE(i, n) dst[i] += alpha * src[i];
}
__global__ void silu_fwd_kernel(float *out, const float *x, size_t n) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    GRID_STRIDE(i, n) out[i] = x[i] * sigmoidf_(x[i]);
}
/* the backward kernels overwrite (acc 0: the old contents are not read) or add (ops.h FH_ACC) */
__global__ void silu_bwd_kernel(float *dx, const float *dout, const float *x, size_t n, int acc) {
    GRID_STRIDE(i, n) {
        float s = sigmoidf_(x[i]);
        float d = dout[i] * s * (1.f + x[i] * (1.f - s));
        dx[i] = acc ? dx[i] + d : d;
    }
}
/* ob, bg, bu: NULL, or the outputs' bf16 shadows (linear.cu cuda_shadow_claim):
 * the rounding of each value stored, for the product that reads it next.
 * Bf16-only outputs (linear.cu, ops.h bf16_only): the forward kernels get out
 * NULL, the backward ones fg / fu 0, and store the rounding only. */
__global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up, size_t n, __nv_bfloat16 *ob) {
    GRID_STRIDE(i, n) {
        float o = gate[i] * sigmoidf_(gate[i]) * up[i];
        if (out) out[i] = o;
        if (ob) ob[i] = __float2bfloat16_rn(o);
    }
}
__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, size_t n, int acc, __nv_bfloat16 *bg, __nv_bfloat16 *bu, int fg,
                                  int fu) {
    GRID_STRIDE(i, n) {
        float g = gate[i], s = sigmoidf_(g);
        if (dup) {
            float d = dout[i] * g * s;
            d = acc ? dup[i] + d : d;
            if (fu) dup[i] = d;
            if (bu) bu[i] = __float2bfloat16_rn(d);
        }
        if (dgate) {
            float d = dout[i] * up[i] * s * (1.f + g * (1.f - s));
            d = acc ? dgate[i] + d : d;
            if (fg) dgate[i] = d;
            if (bg) bg[i] = __float2bfloat16_rn(d);
        }
    }
}

/* ---- float4 SwiGLU (perf-notes, elem-llama; FLOWHN_ELEM=old: the kernels above) ----
 * The kernels above keep one 4-byte load a tensor in flight a thread: at most
 * ~16-24 KB an SM, short of the ~30 KB that ~4 TB/s at HBM's latency needs,
 * so they ran at 1.4-1.65x their byte bound on the H200. Here a thread moves
 * float4s (8-byte bf16 stores), 2-3 x 16 bytes in flight; the same arithmetic
 * per element, so the same bits. The vector part covers [0, 4 n4), every
 * pointer 16-byte aligned (checked by the caller), the scalar tail the rest. */
int cuda_set_elem_old(int on) {
    static int elem_new = -1;   /* -1: FLOWHN_ELEM not read yet */
    return !cuda_env_switch(&elem_new, "FLOWHN_ELEM", "old", 1, on < 0 ? -1 : !on);
}

__device__ __forceinline__ void st_bf4(__nv_bfloat16 *p, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 u;
    u.x = *reinterpret_cast<unsigned int *>(&lo);
    u.y = *reinterpret_cast<unsigned int *>(&hi);
    *reinterpret_cast<uint2 *>(p) = u;
}
__device__ __forceinline__ float swiglu_one(float g, float u) { return g * sigmoidf_(g) * u; }

__global__ void swiglu_fwd4_kernel(float *out, const float *gate, const float *up, size_t n, __nv_bfloat16 *ob) {
    size_t n4 = n / 4;
    GRID_STRIDE(i, n4) {
        float4 g = reinterpret_cast<const float4 *>(gate)[i], u = reinterpret_cast<const float4 *>(up)[i];
        float4 o = make_float4(swiglu_one(g.x, u.x), swiglu_one(g.y, u.y), swiglu_one(g.z, u.z), swiglu_one(g.w, u.w));
        if (out) reinterpret_cast<float4 *>(out)[i] = o;
        if (ob) st_bf4(ob + 4 * i, o.x, o.y, o.z, o.w);
    }
    size_t t = 4 * n4 + blockIdx.x * (size_t)blockDim.x + threadIdx.x;   /* the tail: < 4 elements */
    if (t < n) {
        float o = swiglu_one(gate[t], up[t]);
        if (out) out[t] = o;
        if (ob) ob[t] = __float2bfloat16_rn(o);
    }
}

/* one element of swiglu_bwd_kernel: the same expressions */
__device__ __forceinline__ void swiglu_bwd_one(float dout, float g, float u, float pg, float pu, int acc, float &dg,
                                               float &du) {
    float s = sigmoidf_(g);
    float d = dout * g * s;
    du = acc ? pu + d : d;
    d = dout * u * s * (1.f + g * (1.f - s));
    dg = acc ? pg + d : d;
}
/* swiglu_bwd_one on each of four lanes (the float4 kernels) */
__device__ __forceinline__ void swiglu_bwd_four(float4 d, float4 g, float4 u, float4 pg, float4 pu, int acc,
                                                float4 &og, float4 &ou) {
    swiglu_bwd_one(d.x, g.x, u.x, pg.x, pu.x, acc, og.x, ou.x);
    swiglu_bwd_one(d.y, g.y, u.y, pg.y, pu.y, acc, og.y, ou.y);
    swiglu_bwd_one(d.z, g.z, u.z, pg.z, pu.z, acc, og.z, ou.z);
    swiglu_bwd_one(d.w, g.w, u.w, pg.w, pu.w, acc, og.w, ou.w);
}
__global__ void swiglu_bwd4_kernel(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                   size_t n, int acc, __nv_bfloat16 *bg, __nv_bfloat16 *bu, int fg, int fu) {
    size_t n4 = n / 4;
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    GRID_STRIDE(i, n4) {
        float4 d = reinterpret_cast<const float4 *>(dout)[i], g = reinterpret_cast<const float4 *>(gate)[i];
        float4 u = dgate ? reinterpret_cast<const float4 *>(up)[i] : z;
        float4 pg = acc && dgate ? reinterpret_cast<const float4 *>(dgate)[i] : z;
        float4 pu = acc && dup ? reinterpret_cast<const float4 *>(dup)[i] : z;
        float4 og, ou;
        swiglu_bwd_four(d, g, u, pg, pu, acc, og, ou);
        if (dup) {
            if (fu) reinterpret_cast<float4 *>(dup)[i] = ou;
            if (bu) st_bf4(bu + 4 * i, ou.x, ou.y, ou.z, ou.w);
        }
        if (dgate) {
            if (fg) reinterpret_cast<float4 *>(dgate)[i] = og;
            if (bg) st_bf4(bg + 4 * i, og.x, og.y, og.z, og.w);
        }
    }
    size_t t = 4 * n4 + blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t < n) {
        float og, ou;
        swiglu_bwd_one(dout[t], gate[t], dgate ? up[t] : 0.f, acc && dgate ? dgate[t] : 0.f, acc && dup ? dup[t] : 0.f,
                       acc, og, ou);
        if (dup) {
            if (fu) dup[t] = ou;
            if (bu) bu[t] = __float2bfloat16_rn(ou);
        }
        if (dgate) {
            if (fg) dgate[t] = og;
            if (bg) bg[t] = __float2bfloat16_rn(og);
        }
    }
}

/* the float4 kernels serve: not FLOWHN_ELEM=old, every fp32 pointer 16-byte
 * aligned and every bf16 one 8-byte (NULLs pass) */
static int ew4_ok(const void *const *p, int np) {
    if (cuda_set_elem_old(-1)) return 0;
    for (int i = 0; i < np; i++)
        if ((uintptr_t)p[i] & 15) return 0;
    return 1;
}
static int bf8_ok(const void *a, const void *b) { return !((uintptr_t)a & 7) && !((uintptr_t)b & 7); }
/* blocks for the float4 kernels: a thread a vector (grid-stride past the cap), at least one block for the tail */
static unsigned int grid4(size_t n) { return grid_for(n / 4 ? n / 4 : 1, EW_THREADS); }

#define LAUNCH_EW(kernel, n, ...)                                                  \
    do {                                                                           \
        if ((n) == 0) return;                                                      \
        kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(__VA_ARGS__);              \
        CUDA_LAUNCHED();                                                           \
    } while (0)

void cuda_add(real *out, const real *a, const real *b, size_t n) { LAUNCH_EW(add_kernel, n, out, a, b, n); }
void cuda_accumulate(real *dst, const real *src, real alpha, size_t n) {
    LAUNCH_EW(accumulate_kernel, n, dst, src, alpha, n);
}
void cuda_silu_fwd(real *out, const real *x, size_t n) {
    if (n == 0) return;
    cuda_launch(cuda_weights_frozen(), silu_fwd_kernel, dim3(grid_for(n, EW_THREADS)), dim3(EW_THREADS), 0, out, x, n);
}
void cuda_silu_bwd(real *dx, const real *dout, const real *x, size_t n, int acc) {
    if (!dx) return;
    LAUNCH_EW(silu_bwd_kernel, n, dx, dout, x, n, acc);
}
/* SwiGLU's output is what the down projection reads next, its gradients
 * the douts of gate and up: with bf16 products their roundings are written
 * here too (common.cuh cuda_shadow_claim). */
void cuda_swiglu_fwd(real *out, const real *gate, const real *up, size_t n) {
    if (n == 0) return;
    int skip;   /* a bf16-only output with a home for its rounding (linear.cu): no fp32 stores */
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim_only(out, n, &skip);
    float *fo = skip ? NULL : out;
    unsigned long before = cuda_epoch;
    const void *p[3] = {out, gate, up};   /* out decides the kernel either way */
    if (ew4_ok(p, 3) && bf8_ok(ob, NULL))
        swiglu_fwd4_kernel<<<grid4(n), EW_THREADS, 0, cuda_stream()>>>(fo, gate, up, n, ob);
    else
        swiglu_fwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(fo, gate, up, n, ob);
    CUDA_LAUNCHED();
    CudaRange wr[2] = {{out, n * sizeof(float)}, {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 2);
}
void cuda_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n,
                     int acc) {
    if ((!dgate && !dup) || n == 0) return;
    /* bf16-only outputs only when overwriting (acc reads the fp32 values) two distinct buffers */
    int sg = 0, su = 0, only = !acc && dgate != dup;
    __nv_bfloat16 *bg = (__nv_bfloat16 *)cuda_shadow_claim_only(dgate, n, only ? &sg : NULL);
    __nv_bfloat16 *bu = dup != dgate ? (__nv_bfloat16 *)cuda_shadow_claim_only(dup, n, only ? &su : NULL) : NULL;
    unsigned long before = cuda_epoch;
    const void *p[5] = {dgate, dup, dout, gate, up};
    if (dgate != dup && ew4_ok(p, 5) && bf8_ok(bg, bu))
        swiglu_bwd4_kernel<<<grid4(n), EW_THREADS, 0, cuda_stream()>>>(dgate, dup, dout, gate, up, n, acc, bg, bu, !sg,
                                                                        !su);
    else   /* also dgate == dup (the old kernel's order of the two writes decides what such a call leaves) */
        swiglu_bwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(dgate, dup, dout, gate, up, n,
                                                                                       acc, bg, bu, !sg, !su);
    CUDA_LAUNCHED();
    CudaRange wr[4] = {{dgate, dgate ? n * sizeof(float) : 0}, {dup, dup ? n * sizeof(float) : 0},
                       {bg, bg ? n * 2 : 0}, {bu, bu ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 4);
}

/* ---- SwiGLU on gate | up side by side (ops.h swiglu_packed_*, perf-notes fuse-proj) ----
 * gu [N, 2C], one product's output: row r's gate at gu[r*2C + c], its up C further.
 * Element i of the [N, C] output is (r, c) = (i / C, i % C). The per-element
 * arithmetic is swiglu_one / swiglu_bwd_one: the same bits as the separate
 * buffers' kernels. V = 4: float4 along a row (C % 4 == 0, pointers 16-byte
 * aligned: checked by the caller), else V = 1. The shadows: act's [N, C] as
 * swiglu_fwd's; dgu's [N, 2C] whole (the dout of the one gate|up product). */
/* gu's values: fp32, or bf16 (GI = __nv_bfloat16: the gate|up product's bf16 D, ops.h bf16_only once = 2;
 * 4 values an 8-byte load, aligned as the fp32 ones are 16-byte aligned) */
__device__ __forceinline__ float4 ld_gu4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ float4 ld_gu4(const __nv_bfloat16 *p) {
    uint2 r = *reinterpret_cast<const uint2 *>(p);
    float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.x));
    float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.y));
    return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ float ld_gu(const float *p) { return *p; }
__device__ __forceinline__ float ld_gu(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

/* V = 8 (GI bf16 only; perf-notes, llamapass): 16-byte loads of gate and up and a 16-byte store of act's
 * rounding, half the threads (and row divisions) of V = 4, whose 8-byte accesses left the kernel at ~3.1 TB/s
 * (32.1 us for 101 MB at gpt2small). The same swiglu_one per value: the same bits. */
template <int V, typename GI>
__global__ void swiglu_packed_fwd_kernel(float *out, const GI *gu, size_t n, int C, __nv_bfloat16 *ob) {
    size_t nv = n / V, cv = (size_t)C / V;
    GRID_STRIDE(i, nv) {
        size_t r = i / cv, c = i - r * cv;
        const GI *g = gu + r * 2 * C + c * V, *u = g + C;
        if constexpr (V == 8) {
            float gf[8], uf[8], o[8];
            bf16x8_unpack(*reinterpret_cast<const uint4 *>(g), gf);
            bf16x8_unpack(*reinterpret_cast<const uint4 *>(u), uf);
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = swiglu_one(gf[j], uf[j]);
            if (out) {
                reinterpret_cast<float4 *>(out)[2 * i] = make_float4(o[0], o[1], o[2], o[3]);
                reinterpret_cast<float4 *>(out)[2 * i + 1] = make_float4(o[4], o[5], o[6], o[7]);
            }
            if (ob) {
                uint4 w;
                __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&w);
#pragma unroll
                for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(o[2 * j], o[2 * j + 1]);
                reinterpret_cast<uint4 *>(ob)[i] = w;
            }
        } else if (V == 4) {
            float4 g4 = ld_gu4(g), u4 = ld_gu4(u);
            float4 o = make_float4(swiglu_one(g4.x, u4.x), swiglu_one(g4.y, u4.y), swiglu_one(g4.z, u4.z),
                                   swiglu_one(g4.w, u4.w));
            if (out) reinterpret_cast<float4 *>(out)[i] = o;
            if (ob) st_bf4(ob + 4 * i, o.x, o.y, o.z, o.w);
        } else {
            float o = swiglu_one(ld_gu(g), ld_gu(u));
            if (out) out[i] = o;
            if (ob) ob[i] = __float2bfloat16_rn(o);
        }
    }
}
/* dout's values: fp32, or bf16 (DI = __nv_bfloat16: the down product's bf16 D, ops.h bf16_only once = 7,
 * linear.cu dact_d16; loaded as gu's are) */
template <int V, typename GI, typename DI>
__global__ void swiglu_packed_bwd_kernel(float *dgu, const DI *dout, const GI *gu, size_t n, int C, int acc,
                                         __nv_bfloat16 *b, int f32) {
    size_t nv = n / V, cv = (size_t)C / V;
    GRID_STRIDE(i, nv) {
        size_t r = i / cv, c = i - r * cv, go = r * 2 * C + c * V, uo = go + C;
        if (V == 4) {
            const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
            float4 d = ld_gu4(dout + 4 * i), g = ld_gu4(gu + go), u = ld_gu4(gu + uo);
            float4 pg = acc ? *reinterpret_cast<const float4 *>(dgu + go) : z;
            float4 pu = acc ? *reinterpret_cast<const float4 *>(dgu + uo) : z;
            float4 og, ou;
            swiglu_bwd_four(d, g, u, pg, pu, acc, og, ou);
            if (f32) {
                *reinterpret_cast<float4 *>(dgu + go) = og;
                *reinterpret_cast<float4 *>(dgu + uo) = ou;
            }
            if (b) {
                st_bf4(b + go, og.x, og.y, og.z, og.w);
                st_bf4(b + uo, ou.x, ou.y, ou.z, ou.w);
            }
        } else {
            float og, ou;
            swiglu_bwd_one(ld_gu(dout + i), ld_gu(gu + go), ld_gu(gu + uo), acc ? dgu[go] : 0.f, acc ? dgu[uo] : 0.f,
                           acc, og, ou);
            if (f32) {
                dgu[go] = og;
                dgu[uo] = ou;
            }
            if (b) {
                b[go] = __float2bfloat16_rn(og);
                b[uo] = __float2bfloat16_rn(ou);
            }
        }
    }
}

/* gu's bf16 D (linear.cu cuda_gu_bf16: the gate|up product wrote only that), NULL: read gu's fp32; *bad: gu's
 * fp32 was not written and no bf16 D serves this read (the error is recorded: the op does nothing) */
static const __nv_bfloat16 *gu_bf16(const float *gu, size_t n2, int *bad) {
    return (const __nv_bfloat16 *)cuda_gu_bf16(gu, n2, bad);
}
/* FLOWHN_SWIGLU_V8=0: swiglu_packed_fwd's V 4 kernel on the bf16 D too (the old path); default V 8 there */
static int swiglu_v8 = -1;
int cuda_set_swiglu_v8(int on) { return cuda_env_switch(&swiglu_v8, "FLOWHN_SWIGLU_V8", "0", 1, on); }

void cuda_swiglu_packed_fwd(real *out, const real *gu, int N, int C) {
    size_t n = (size_t)N * C;
    if (n == 0) return;
    int bad;
    const __nv_bfloat16 *gb = gu_bf16(gu, 2 * n, &bad);
    if (bad) return;
    int skip;   /* as swiglu_fwd */
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim_only(out, n, &skip);
    float *fo = skip ? NULL : out;
    unsigned long before = cuda_epoch;
    const void *p[2] = {out, gu};
    /* V 8: gu's bf16 D, rows of whole 16-byte words (C % 8), D and act's rounding 16-byte aligned */
    if (gb && C % 8 == 0 && !((uintptr_t)gb & 15) && (!ob || !((uintptr_t)ob & 15)) && ew4_ok(p, 1) &&
        cuda_set_swiglu_v8(-1))
        swiglu_packed_fwd_kernel<8><<<grid_for(n / 8, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(fo, gb, n, C, ob);
    else if (C % 4 == 0 && ew4_ok(p, 2) && bf8_ok(ob, gb)) {
        if (gb) swiglu_packed_fwd_kernel<4><<<grid4(n), EW_THREADS, 0, cuda_stream()>>>(fo, gb, n, C, ob);
        else swiglu_packed_fwd_kernel<4><<<grid4(n), EW_THREADS, 0, cuda_stream()>>>(fo, gu, n, C, ob);
    } else if (gb)
        swiglu_packed_fwd_kernel<1><<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(fo, gb, n, C, ob);
    else
        swiglu_packed_fwd_kernel<1><<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(fo, gu, n, C, ob);
    CUDA_LAUNCHED();
    CudaRange wr[2] = {{out, n * sizeof(float)}, {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 2);
}
template <typename GI, typename DI>
static void swiglu_packed_bwd_launch(int v4, float *dgu, const DI *dout, const GI *gu, size_t n, int C, int acc,
                                     __nv_bfloat16 *b, int f32) {
    if (v4) swiglu_packed_bwd_kernel<4><<<grid4(n), EW_THREADS, 0, cuda_stream()>>>(dgu, dout, gu, n, C, acc, b, f32);
    else
        swiglu_packed_bwd_kernel<1><<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(dgu, dout, gu, n, C,
                                                                                                acc, b, f32);
}
void cuda_swiglu_packed_bwd(real *dgu, const real *dout, const real *gu, int N, int C, int acc) {
    size_t n = (size_t)N * C;
    if (!dgu || n == 0) return;
    int bad;
    const __nv_bfloat16 *gb = gu_bf16(gu, 2 * n, &bad);
    if (bad) return;
    /* dout as the down product's bf16 D (once = 7): read once, here; else dout's fp32, which must exist */
    const __nv_bfloat16 *db = (const __nv_bfloat16 *)cuda_dact_d16(dout, n, &bad);
    if (bad || (!db && cuda_bf16_missing(dout, n, "swiglu_packed_bwd (its dout)"))) return;
    int skip = 0;   /* bf16-only dgu (as swiglu_bwd): only when overwriting */
    __nv_bfloat16 *b = (__nv_bfloat16 *)cuda_shadow_claim_only(dgu, 2 * n, acc ? NULL : &skip);
    unsigned long before = cuda_epoch;
    const void *p[3] = {dgu, db ? (const void *)dgu : (const void *)dout, gu};
    int v4 = C % 4 == 0 && ew4_ok(p, 3) && bf8_ok(b, gb) && bf8_ok(db, NULL);
    if (gb && db) swiglu_packed_bwd_launch(v4, dgu, db, gb, n, C, acc, b, !skip);
    else if (gb) swiglu_packed_bwd_launch(v4, dgu, dout, gb, n, C, acc, b, !skip);
    else if (db) swiglu_packed_bwd_launch(v4, dgu, db, gu, n, C, acc, b, !skip);
    else swiglu_packed_bwd_launch(v4, dgu, dout, gu, n, C, acc, b, !skip);
    CUDA_LAUNCHED();
    CudaRange wr[2] = {{dgu, 2 * n * sizeof(float)}, {b, b ? 2 * n * 2 : 0}};
    cuda_shadow_done(before, wr, 2);
}
