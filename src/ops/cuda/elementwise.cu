/* elementwise.cu - residual adds, gradient accumulation, SiLU and SwiGLU.
 * One grid-stride loop each; memory-bound, so one pass over each tensor. */
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
__global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up, size_t n) {
    GRID_STRIDE(i, n) out[i] = gate[i] * sigmoidf_(gate[i]) * up[i];
}
__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, size_t n, int acc) {
    GRID_STRIDE(i, n) {
        float g = gate[i], s = sigmoidf_(g);
        if (dup) {
            float d = dout[i] * g * s;
            dup[i] = acc ? dup[i] + d : d;
        }
        if (dgate) {
            float d = dout[i] * up[i] * s * (1.f + g * (1.f - s));
            dgate[i] = acc ? dgate[i] + d : d;
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
void cuda_silu_fwd(real *out, const real *x, size_t n) { LAUNCH_EW(silu_fwd_kernel, n, out, x, n); }
void cuda_silu_bwd(real *dx, const real *dout, const real *x, size_t n, int acc) {
    if (!dx) return;
    LAUNCH_EW(silu_bwd_kernel, n, dx, dout, x, n, acc);
}
void cuda_swiglu_fwd(real *out, const real *gate, const real *up, size_t n) {
    LAUNCH_EW(swiglu_fwd_kernel, n, out, gate, up, n);
}
void cuda_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n,
                     int acc) {
    if (!dgate && !dup) return;
    LAUNCH_EW(swiglu_bwd_kernel, n, dgate, dup, dout, gate, up, n, acc);
}
