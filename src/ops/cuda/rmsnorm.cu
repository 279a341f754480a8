/* rmsnorm.cu - RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
 * One block per row; dw is a deterministic column reduction. */
#include "common.cuh"

#define NORM_THREADS 256

__global__ void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w, int C, float eps) {
    __shared__ float sh[32];
    const float *xi = x + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += xi[c] * xi[c];
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    float *oi = out + (size_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) oi[c] = xi[c] * r * w[c];
}

/* dx = r (dout w - xhat mean(dout w xhat)), xhat = x r */
__global__ void rmsnorm_bwd_dx_kernel(float *dx, const float *dout, const float *x, const float *w,
                                      const float *rstd, int C, int acc) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dout[off + c] * w[c] * x[off + c];
    float m = block_sum(dot, sh) * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float d = r * (dout[off + c] * w[c] - x[off + c] * r * m);
        dx[off + c] = acc ? dx[off + c] + d : d;   /* acc 0: overwrite (ops.h) */
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

void cuda_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps) {
    if (N <= 0) return;
    rmsnorm_fwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(out, rstd, x, w, C, eps);
    CUDA_LAUNCHED();
}

void cuda_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w,
                      const real *rstd, int N, int C, int acc) {
    if (N <= 0) return;
    if (dx) {
        rmsnorm_bwd_dx_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dx, dout, x, w, rstd, C, acc);
        CUDA_LAUNCHED();
    }
    if (dw) colsum(dw, 1, N, C, RmsnormDw{dout, x, rstd, C});
}
