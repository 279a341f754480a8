/* memory.cu - device memory: cudaMalloc'd, zero-filled like the CPU backend. */
#include "common.cuh"

void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        fh_error("cudaMalloc of %zu bytes failed (%s): reduce batch_size or the model size", bytes,
                 cudaGetErrorString(e));
        return NULL;
    }
    CUDA_CALL(cudaMemset(p, 0, bytes));
    return p;
}

void cuda_release(void *p) {
    if (p) CUDA_CALL(cudaFree(p));
}

void cuda_zero(void *p, size_t bytes) { CUDA_CALL(cudaMemset(p, 0, bytes)); }

/* Plain cudaMemcpy: synchronous with respect to the host, so a to_host result
 * is ready to read. */
void cuda_to_host(void *dst_host, const void *src, size_t bytes) {
    CUDA_CALL(cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost));
}

void cuda_from_host(void *dst, const void *src_host, size_t bytes) {
    CUDA_CALL(cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice));
}
