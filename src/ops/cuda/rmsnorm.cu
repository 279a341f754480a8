/* rmsnorm.cu - RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
 * One block per row; dw is a deterministic column reduction. */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define NORM_THREADS 256

/* ob: NULL, or out's bf16 shadow (linear.cu), the rounding of each value stored */
__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w, int C, float eps,
                                   __nv_bfloat16 *ob) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    __shared__ float sh[32];
    const float *xi = x + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += xi[c] * xi[c];
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    size_t off = (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float o = xi[c] * r * w[c];
        out[off + c] = o;
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
        out[off + c] = o;
        if (ob) ob[off + c] = __float2bfloat16_rn(o);
    }
}

/* dx = r (dout w - xhat mean(dout w xhat)), xhat = x r; ob: NULL, or dx's bf16 shadow */
__global__ void rmsnorm_bwd_dx_kernel(float *dx, const float *dout, const float *x, const float *w,
                                      const float *rstd, int C, int acc, __nv_bfloat16 *ob) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dout[off + c] * w[c] * x[off + c];
    float m = block_sum(dot, sh) * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float d = r * (dout[off + c] * w[c] - x[off + c] * r * m);
        d = acc ? dx[off + c] + d : d;   /* acc 0: overwrite (ops.h) */
        dx[off + c] = d;
        if (ob) ob[off + c] = __float2bfloat16_rn(d);
    }
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
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim(out, n);
    unsigned long before = cuda_epoch;
    cuda_launch(cuda_weights_frozen(), rmsnorm_fwd_kernel, dim3(N), dim3(NORM_THREADS), 0, out, rstd, x, w, C, eps, ob);
    CudaRange wr[3] = {{out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)}, {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 3);
}

/* -1: not decided yet, FLOWHN_ADD_NORM is read on first use (cuda_ops.h) */
static int add_norm_fused = -1;

int cuda_set_add_norm_fused(int on) {
    if (add_norm_fused < 0) {
        const char *e = getenv("FLOWHN_ADD_NORM");
        add_norm_fused = !(e && !strcmp(e, "0"));   /* on: passed test_cuda / test_cuda_model on the H200, session 6 */
    }
    int was = add_norm_fused;
    if (on >= 0) add_norm_fused = on != 0;
    return was;
}

void cuda_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N, int C,
                          real eps) {
    if (N <= 0) return;
    size_t n = (size_t)N * C;
    if (!cuda_set_add_norm_fused(-1)) {   /* the unfused path, as before the op existed */
        unsigned long before = cuda_epoch;
        cuda_add(r, a, b, n);
        CudaRange wr = {r, n * sizeof(float)};   /* the add writes r only */
        cuda_shadow_done(before, &wr, 1);
        cuda_rmsnorm_fwd(out, rstd, r, w, N, C, eps);
        return;
    }
    __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim(out, n);
    unsigned long before = cuda_epoch;
    add_rmsnorm_fwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(r, out, rstd, a, b, w, C, eps, ob);
    CUDA_LAUNCHED();
    CudaRange wr[4] = {{r, n * sizeof(float)}, {out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)},
                       {ob, ob ? n * 2 : 0}};
    cuda_shadow_done(before, wr, 4);
}

void cuda_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w,
                      const real *rstd, int N, int C, int acc) {
    if (N <= 0) return;
    /* dw first: dx is the residual gradient, which the next product (the o or down projection's backward)
     * reads as its dout, so its bf16 rounding is written too and must be the last launch here (colsum's
     * launches are not declared: they would retire it). The order is free: colsum writes only dw (and its
     * scratch), the dx kernel only dx, and neither reads what the other writes. */
    if (dw) colsum(dw, 1, N, C, RmsnormDw{dout, x, rstd, C});
    if (dx) {
        size_t n = (size_t)N * C;
        __nv_bfloat16 *ob = (__nv_bfloat16 *)cuda_shadow_claim(dx, n);
        unsigned long before = cuda_epoch;
        rmsnorm_bwd_dx_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dx, dout, x, w, rstd, C, acc, ob);
        CUDA_LAUNCHED();
        CudaRange wr[2] = {{dx, n * sizeof(float)}, {ob, ob ? n * 2 : 0}};
        cuda_shadow_done(before, wr, 2);
    }
}
