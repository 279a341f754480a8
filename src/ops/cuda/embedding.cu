/* embedding.cu - token embedding lookup. The backward adds rows with atomics:
 * two tokens may share a vocabulary row (fp32 atomics: order-dependent only in
 * the last bits). */
#include "common.cuh"

__global__ void embedding_fwd_kernel(float *out, const int *tok, const float *wte, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / C, c = i % C;
        out[i] = wte[(size_t)tok[row] * C + c];
    }
}

__global__ void embedding_bwd_kernel(float *dwte, const float *dout, const int *tok, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / C, c = i % C;
        atomicAdd(&dwte[(size_t)tok[row] * C + c], dout[i]);
    }
}

void cuda_embedding_fwd(real *out, const int *tok, const real *wte, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n) return;
    embedding_fwd_kernel<<<grid_for(n, 256), 256, 0, cuda_stream()>>>(out, tok, wte, N, C);
    CUDA_LAUNCHED();
}

void cuda_embedding_bwd(real *dwte, const real *dout, const int *tok, int N, int C) {
    size_t n = (size_t)N * C;
    if (!n || !dwte) return;
    embedding_bwd_kernel<<<grid_for(n, 256), 256, 0, cuda_stream()>>>(dwte, dout, tok, N, C);
    CUDA_LAUNCHED();
}
