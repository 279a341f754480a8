/* memory.cu - device memory: cudaMalloc'd, zero-filled like the CPU backend.
 * A host-side table remembers each block's size so the bytes held and their
 * high-water mark can be reported (flowhn bench); allocation happens outside
 * the training step's hot path (activations are kept between steps). */
#include <mutex>
#include <unordered_map>

#include "common.cuh"

static std::unordered_map<void *, size_t> block_bytes;
static size_t live_bytes, peak_bytes;
static std::mutex table_lock;

unsigned long cuda_host_writes;

void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    cuda_host_writes++;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        fh_error("cudaMalloc of %zu bytes failed (%s): reduce batch_size or the model size", bytes,
                 cudaGetErrorString(e));
        return NULL;
    }
    CUDA_CALL(cudaMemset(p, 0, bytes));
    std::lock_guard<std::mutex> g(table_lock);
    block_bytes[p] = bytes;
    live_bytes += bytes;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    return p;
}

void cuda_release(void *p) {
    if (!p) return;
    cuda_host_writes++;
    size_t bytes = 0;
    {
        std::lock_guard<std::mutex> g(table_lock);
        auto it = block_bytes.find(p);
        if (it != block_bytes.end()) {
            bytes = it->second;
            live_bytes -= it->second;
            block_bytes.erase(it);
        }
    }
    cuda_weights_released(p, bytes);   /* the trained parameters' bf16 copy goes with them */
    cuda_keep_released(p, bytes);      /* and the kept bf16 roundings of activations inside */
    cuda_scratch_free(p);   /* counts the free: a recorded graph may have used p */
}

/* memory the backend holds for the model outside cuda_alloc's blocks, counted
 * with them (training's bf16 weight copy, linear.cu): the figures then match
 * the estimate (memory_add_backend) */
void cuda_memory_account(size_t bytes, int add) {
    std::lock_guard<std::mutex> g(table_lock);
    if (add) {
        live_bytes += bytes;
        if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    } else {
        live_bytes -= bytes;
    }
}

void cuda_memory_stats(size_t *live, size_t *peak) {
    std::lock_guard<std::mutex> g(table_lock);
    if (live) *live = live_bytes;
    if (peak) *peak = peak_bytes;
}

/* on the current branch's stream (stream.cu), so zeroing inside a branch does not serialize */
void cuda_zero(void *p, size_t bytes) {
    cuda_host_writes++;
    cuda_weights_written(p, bytes);
    CUDA_CALL(cudaMemsetAsync(p, 0, bytes, cuda_stream()));
}

/* ops.h zero_runs: every run of the table in one launch (model_zero_grad's ~26 memsets at
 * llama-gpt2small: one 154 MB embedding gradient and 25 norm weights of 3 KB, which cost a
 * memset node each; perf-notes, zeroruns). A fixed grid; every thread walks the table (a
 * few dozen entries, the same addresses for all: cached broadcasts) and takes its share of
 * each run by a grid stride: the floats before the run's first 16-byte boundary and after
 * its last one singly, the rest by 16-byte stores. */
__global__ void zero_runs_kernel(real *base, const size_t *runs, int n) {
    size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    for (int r = 0; r < n; r++) {
        size_t cnt = runs[2 * r + 1];
        real *p = base + runs[2 * r];
        size_t head = ((16 - ((uintptr_t)p & 15)) & 15) / sizeof(real);   /* floats up to the boundary */
        if (head > cnt) head = cnt;
        size_t nv = (cnt - head) / 4;
        if (tid < head) p[tid] = 0.f;   /* head < 4 <= the grid */
        float4 *q = (float4 *)(p + head);
        for (size_t i = tid; i < nv; i += stride) q[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        for (size_t i = head + 4 * nv + tid; i < cnt; i += stride) p[i] = 0.f;
    }
}

void cuda_zero_runs(real *base, size_t span, const size_t *runs, int n) {
    static int grid;   /* 8 blocks an SM: enough stores in flight for HBM; read once (the same on every device) */
    cuda_host_writes++;   /* as cuda_zero, for the span the runs lie in */
    cuda_weights_written(base, sizeof(real) * span);
    if (n <= 0) return;
    if (!grid) {
        int dev = 0, sms = 0;
        CUDA_CALL(cudaGetDevice(&dev));
        CUDA_CALL(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        grid = 8 * (sms > 0 ? sms : 132);
    }
    zero_runs_kernel<<<grid, 256, 0, cuda_stream()>>>(base, runs, n);
    CUDA_LAUNCHED();
}

/* Plain cudaMemcpy: synchronous with respect to the host, so a to_host result
 * is ready to read. */
void cuda_to_host(void *dst_host, const void *src, size_t bytes) {
    CUDA_CALL(cudaMemcpy(dst_host, src, bytes, cudaMemcpyDeviceToHost));
}

void cuda_from_host(void *dst, const void *src_host, size_t bytes) {
    cuda_host_writes++;
    cuda_weights_written(dst, bytes);   /* an upload of parameters (init, checkpoint load) makes their bf16 copy stale */
    CUDA_CALL(cudaMemcpy(dst, src_host, bytes, cudaMemcpyHostToDevice));
}

void *cuda_branch_scratch(BranchScratch *s, size_t bytes, const char *what) {
    int br = cuda_branch();
    if (s->cap[br] >= bytes) return s->buf[br];
    cuda_scratch_free(s->buf[br]);   /* counts the free: a recorded graph may have used it */
    s->buf[br] = NULL;
    s->cap[br] = 0;
    if (cudaMalloc(&s->buf[br], bytes) != cudaSuccess) {
        s->buf[br] = NULL;
        char msg[128];
        snprintf(msg, sizeof msg, "cannot allocate %s (%zu bytes)", what, bytes);
        cuda_record_error("cudaMalloc", msg, __FILE__, __LINE__);
        return NULL;
    }
    s->cap[br] = bytes;
    return s->buf[br];
}

/* scratch of the column reductions (common.cuh colsum) */
float *cuda_colsum_scratch(size_t n) {
    static BranchScratch s;
    return (float *)cuda_branch_scratch(&s, sizeof(float) * n, "the column-reduction scratch");
}
