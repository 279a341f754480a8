/* xent.cu - fused softmax + cross-entropy, one block per row. The forward
 * keeps only the log-sum-exp; the backward rebuilds the softmax from it. */
#include "common.cuh"

#define XENT_THREADS 512

__global__ void xent_fwd_kernel(float *loss, float *lse, const float *logits, const int *targets, int V) {
    __shared__ float sh[32];
    const float *row = logits + (size_t)blockIdx.x * V;
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
    mx = block_max(mx, sh);
    float s = 0.f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(row[v] - mx);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        float l = mx + logf(s);
        int t = targets[blockIdx.x];
        lse[blockIdx.x] = l;
        loss[blockIdx.x] = t >= 0 ? l - row[t] : 0.f;
    }
}

/* ignored rows (target < 0) get no gradient */
__global__ void xent_bwd_kernel(float *dlogits, const float *dloss, const float *logits, const float *lse,
                                const int *targets, int V) {
    int t = targets[blockIdx.x];
    if (t < 0) return;
    size_t off = (size_t)blockIdx.x * V;
    float g = dloss[blockIdx.x], l = lse[blockIdx.x];
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        dlogits[off + v] += g * (expf(logits[off + v] - l) - (v == t ? 1.f : 0.f));
}

void cuda_xent_fwd(real *loss, real *lse, const real *logits, const int *targets, int N, int V) {
    if (N <= 0) return;
    xent_fwd_kernel<<<N, XENT_THREADS>>>(loss, lse, logits, targets, V);
    CUDA_LAUNCHED();
}

void cuda_xent_bwd(real *dlogits, const real *dloss, const real *logits, const real *lse,
                   const int *targets, int N, int V) {
    if (N <= 0 || !dlogits) return;
    xent_bwd_kernel<<<N, XENT_THREADS>>>(dlogits, dloss, logits, lse, targets, V);
    CUDA_LAUNCHED();
}
