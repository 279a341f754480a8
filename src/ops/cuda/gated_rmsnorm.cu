/* gated_rmsnorm.cu - Mamba-2's norm after gate: g = y * silu(z),
 * out = g * rstd * w, rstd = 1/sqrt(mean(g^2) + eps). One block per row. */
#include "common.cuh"

#define NORM_THREADS 256

/* y * silu(z), rounded in the CPU oracle's order */
__device__ __forceinline__ float gate_of(float y, float z) { return y * (z * sigmoidf_(z)); }

__global__ void gated_rmsnorm_fwd_kernel(float *out, float *rstd, const float *y, const float *z,
                                         const float *w, int C, float eps) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float g = gate_of(y[off + c], z[off + c]);
        ss += g * g;
    }
    float r = rsqrtf(block_sum(ss, sh) / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[off + c] = gate_of(y[off + c], z[off + c]) * r * w[c];
}

/* dg = r (dout w - ghat mean(dout w ghat)); dy = dg silu(z); dz = dg y silu'(z) */
__global__ void gated_rmsnorm_bwd_kernel(float *dy, float *dz, const float *dout, const float *y,
                                         const float *z, const float *w, const float *rstd, int C, int acc) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dot += dout[off + c] * w[c] * gate_of(y[off + c], z[off + c]);
    float m = block_sum(dot, sh) * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float yv = y[off + c], zv = z[off + c], s = sigmoidf_(zv);
        float g = yv * (zv * s);
        float dg = r * (dout[off + c] * w[c] - g * r * m);
        float gy = dg * zv * s, gz = dg * yv * s * (1.f + zv * (1.f - s));
        if (dy) dy[off + c] = acc ? dy[off + c] + gy : gy;   /* acc 0: overwrite (ops.h) */
        if (dz) dz[off + c] = acc ? dz[off + c] + gz : gz;
    }
}

struct GatedDw {
    const float *dout, *y, *z, *rstd;
    int C;
    __device__ float operator()(int i, int c) const {
        size_t k = (size_t)i * C + c;
        return dout[k] * gate_of(y[k], z[k]) * rstd[i];
    }
};

void cuda_gated_rmsnorm_fwd(real *out, real *rstd, const real *y, const real *z, const real *w,
                            int N, int C, real eps) {
    if (N <= 0) return;
    gated_rmsnorm_fwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(out, rstd, y, z, w, C, eps);
    CUDA_LAUNCHED();
}

void cuda_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y,
                            const real *z, const real *w, const real *rstd, int N, int C, int acc) {
    if (N <= 0) return;
    if (dy || dz) {
        gated_rmsnorm_bwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dy, dz, dout, y, z, w, rstd, C, acc);
        CUDA_LAUNCHED();
    }
    if (dw) colsum(dw, 1, N, C, GatedDw{dout, y, z, rstd, C});
}
