/* xent.cu - fused softmax + cross-entropy, one block per row. The forward
 * keeps only the log-sum-exp; the backward rebuilds the softmax from it.
 *
 * Both kernels are bound by reading the logits (at a 49K vocabulary and 8K
 * tokens that is 1.6 GB per pass), so the forward makes ONE pass (online
 * softmax, row_logsumexp in common.cuh). Rows are read as float4 when the row
 * length and base allow it. */
#include "common.cuh"

#define XENT_THREADS 512

__global__ void xent_fwd_kernel(float *loss, float *lse, const float *logits, const int *targets, int V) {
    __shared__ float sh[32];
    const float *row = logits + (size_t)blockIdx.x * V;
    float l = row_logsumexp(row, V, sh);
    if (threadIdx.x == 0) {
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
    if ((V & 3) == 0 && ((uintptr_t)logits & 15) == 0 && ((uintptr_t)dlogits & 15) == 0) {
        const float4 *x4 = (const float4 *)(logits + off);
        float4 *d4 = (float4 *)(dlogits + off);
        for (int v = threadIdx.x; v < V / 4; v += blockDim.x) {
            float4 x = x4[v], d = d4[v];
            d.x += g * expf(x.x - l); d.y += g * expf(x.y - l); d.z += g * expf(x.z - l); d.w += g * expf(x.w - l);
            d4[v] = d;
        }
        __syncthreads();  /* the target's one-hot term after every thread's float4 store */
        if (threadIdx.x == 0) dlogits[off + t] -= g;
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            dlogits[off + v] += g * (expf(logits[off + v] - l) - (v == t ? 1.f : 0.f));
    }
}

void cuda_xent_fwd(real *loss, real *lse, const real *logits, const int *targets, int N, int V) {
    if (N <= 0) return;
    xent_fwd_kernel<<<N, XENT_THREADS, 0, cuda_stream()>>>(loss, lse, logits, targets, V);
    CUDA_LAUNCHED();
}

void cuda_xent_bwd(real *dlogits, const real *dloss, const real *logits, const real *lse,
                   const int *targets, int N, int V) {
    if (N <= 0 || !dlogits) return;
    xent_bwd_kernel<<<N, XENT_THREADS, 0, cuda_stream()>>>(dlogits, dloss, logits, lse, targets, V);
    CUDA_LAUNCHED();
}
