/* elementwise.cu - residual adds, gradient accumulation, SiLU and SwiGLU.
 * One grid-stride loop each; memory-bound, so one pass over each tensor. */
#include <cuda_bf16.h>

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
 * the rounding of each value stored, for the product that reads it next */
__global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up, size_t n, __nv_bfloat16 *ob) {
    GRID_STRIDE(i, n) {
        float o = gate[i] * sigmoidf_(gate[i]) * up[i];
        out[i] = o;
        if (ob) ob[i] = __float2bfloat16_rn(o);
    }
}
__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, size_t n, int acc, __nv_bfloat16 *bg, __nv_bfloat16 *bu) {
    GRID_STRIDE(i, n) {
        float g = gate[i], s = sigmoidf_(g);
        if (dup) {
            float d = dout[i] * g * s;
            d = acc ? dup[i] + d : d;
            dup[i] = d;
            if (bu) bu[i] = __float2bfloat16_rn(d);
        }
        if (dgate) {
            float d = dout[i] * up[i] * s * (1.f + g * (1.f - s));
            d = acc ? dgate[i] + d : d;
            dgate[i] = d;
            if (bg) bg[i] = __float2bfloat16_rn(d);
        }
    }
}

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
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim(out, n);
    unsigned long before = cuda_epoch;
    swiglu_fwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(out, gate, up, n, ob);
    CUDA_LAUNCHED();
    CudaRange wr[2] = {{out, n * sizeof(float)}, {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 2);
}
void cuda_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n,
                     int acc) {
    if ((!dgate && !dup) || n == 0) return;
    __nv_bfloat16 *bg = (__nv_bfloat16 *)cuda_shadow_claim(dgate, n);
    __nv_bfloat16 *bu = dup != dgate ? (__nv_bfloat16 *)cuda_shadow_claim(dup, n) : NULL;
    unsigned long before = cuda_epoch;
    swiglu_bwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, cuda_stream()>>>(dgate, dup, dout, gate, up, n,
                                                                                   acc, bg, bu);
    CUDA_LAUNCHED();
    CudaRange wr[4] = {{dgate, dgate ? n * sizeof(float) : 0}, {dup, dup ? n * sizeof(float) : 0},
                       {bg, bg ? n * 2 : 0}, {bu, bu ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 4);
}
