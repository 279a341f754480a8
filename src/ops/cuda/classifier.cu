/* classifier.cu - the fused training classifier (ops.h `classifier`): head
 * product, softmax cross-entropy and both gradients by chunks of R rows.
 *
 * Per chunk: logits_c = x_c w^T (fp32, cuBLASLt); one kernel per row makes
 * the log-sum-exp (one online pass), the loss, and the logit gradients
 * scale * (softmax - onehot), written as the next products' operand: bf16 in
 * bf16 mode (half the bytes, and no separate rounding pass), fp32 in place
 * otherwise; then dx_c += dlogits w and dw += dlogits^T x_c. The unfused path
 * stores fp32 logits and fp32 logit gradients for all N rows (3.2 GB at
 * N = 8K, V = 50K) and reads them four more times; here a chunk (at most
 * 2^27 logits) lives in scratch and L2 sees most of the re-reads.
 * In bf16 mode w and x are rounded once per call, not once per chunk; in
 * training w is not rounded at all but read from the weights' bf16 copy
 * (linear.cu, Ops.train_weights) where it has one. */
#include "common.cuh"
#include "matmul.cuh"

#define CLS_THREADS 512
#define CLS_CHUNK_ELEMS (1u << 27)

/* one block per row of the chunk; dl16 == NULL: fp32 gradients in place */
__global__ void classifier_xent_kernel(float *loss, float *logits, __nv_bfloat16 *dl16, const int *targets,
                                       float scale, int V) {
    __shared__ float sh[32];
    float *row = logits + (size_t)blockIdx.x * V;
    int t = targets[blockIdx.x];
    float xt = (t >= 0 && threadIdx.x == 0) ? row[t] : 0.f;  /* read before any thread overwrites the row */
    int vec = (V & 3) == 0;
    float lse = row_logsumexp(row, V, sh);  /* its barriers also order xt's read before the writes below */
    if (threadIdx.x == 0) loss[blockIdx.x] = t >= 0 ? lse - xt : 0.f;
    float g = t >= 0 ? scale : 0.f;
    if (dl16) {
        __nv_bfloat16 *d = dl16 + (size_t)blockIdx.x * V;
        if (vec) {
            const float4 *r4 = (const float4 *)row;
            for (int v = threadIdx.x; v < V / 4; v += blockDim.x) {
                float4 x = r4[v];
                int b = 4 * v;
                float d0 = g * (expf(x.x - lse) - (b == t)), d1 = g * (expf(x.y - lse) - (b + 1 == t));
                float d2 = g * (expf(x.z - lse) - (b + 2 == t)), d3 = g * (expf(x.w - lse) - (b + 3 == t));
                *(__nv_bfloat162 *)(d + b) = __float22bfloat162_rn(make_float2(d0, d1));
                *(__nv_bfloat162 *)(d + b + 2) = __float22bfloat162_rn(make_float2(d2, d3));
            }
        } else {
            for (int v = threadIdx.x; v < V; v += blockDim.x)
                d[v] = __float2bfloat16_rn(g * (expf(row[v] - lse) - (v == t)));
        }
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x) row[v] = g * (expf(row[v] - lse) - (v == t));
    }
}

/* For tests (cuda_ops.h): the row kernel alone on n rows of logits already on
 * the device, as cuda_classifier launches it per chunk. Racecheck cannot
 * follow cuBLASLt's bf16 Hopper kernels (the sanitizer stops with an internal
 * error, session 6), so the bf16-gradient path is checked through this entry
 * with logits made on the host, no product run. */
void cuda_classifier_rows(real *loss, real *logits, void *dl16, const int *targets, real scale, int n, int V) {
    if (n <= 0) return;
    classifier_xent_kernel<<<n, CLS_THREADS, 0, cuda_stream()>>>(loss, logits, (__nv_bfloat16 *)dl16, targets, scale,
                                                                 V);
    CUDA_LAUNCHED();
}

/* scratch per branch: the chunk's logits, its bf16 gradients, bf16 w and x */
typedef struct {
    void *p;
    size_t bytes;
} Buf;
static Buf bufs[CUDA_BRANCHES][4];

static void *scratch(int k, size_t bytes) {
    Buf *b = &bufs[cuda_branch()][k];
    if (b->bytes < bytes) {
        cuda_scratch_free(b->p);
        b->p = NULL;
        b->bytes = 0;
        if (cudaMalloc(&b->p, bytes) != cudaSuccess) {
            cuda_record_error("cudaMalloc", "cannot allocate the classifier's chunk scratch", __FILE__, __LINE__);
            return NULL;
        }
        b->bytes = bytes;
    }
    return b->p;
}

void cuda_classifier(real *loss, real *dx, real *dw, const real *x, const real *w, const int *targets, real scale,
                     int N, int H, int V) {
    if (N <= 0) return;
    size_t R = CLS_CHUNK_ELEMS / (size_t)V;
    if (R < 64) R = 64;
    if (R > (size_t)N) R = N;
    int bf16 = cuda_matmul_bf16();
    size_t esz = bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    float *logits = (float *)scratch(0, R * V * sizeof(float));
    __nv_bfloat16 *dl16 = bf16 ? (__nv_bfloat16 *)scratch(1, R * V * esz) : NULL;
    const void *wo = w, *xo = x;
    if (bf16) {
        const void *wc = cuda_weight_bf16(w, (size_t)V * H);
        __nv_bfloat16 *wb = wc ? NULL : (__nv_bfloat16 *)scratch(2, (size_t)V * H * esz);
        /* x is the final norm's output: its shadow, if that norm wrote one (looked up after the scratch above,
         * whose growth would retire it); else rounded here */
        const void *xs = cuda_shadow_bf16(x, (size_t)N * H);
        __nv_bfloat16 *xb = xs ? NULL : (__nv_bfloat16 *)scratch(3, (size_t)N * H * esz);
        if ((!wc && !wb) || (!xs && !xb)) return;
        if (!wc) cuda_round_bf16(wb, w, (size_t)V * H);
        if (!xs) cuda_round_bf16(xb, x, (size_t)N * H);
        wo = wc ? wc : wb;
        xo = xs ? xs : xb;
    }
    if (!logits || (bf16 && !dl16)) return;
    const void *go = bf16 ? (const void *)dl16 : (const void *)logits;  /* the logit gradients' operand */
    for (size_t r0 = 0; r0 < (size_t)N; r0 += R) {
        int n = (int)((size_t)N - r0 < R ? (size_t)N - r0 : R);
        const char *xc = (const char *)xo + r0 * H * esz;
        /* logits^T[V, n] = w'^T x_c^T (see linear.cu for the column-major reading) */
        if (cuda_matmul(CUBLAS_OP_T, CUBLAS_OP_N, V, n, H, wo, H, xc, H, logits, V, 0.f)) goto fail;
        classifier_xent_kernel<<<n, CLS_THREADS, 0, cuda_stream()>>>(loss + r0, logits, dl16, targets + r0, scale, V);
        CUDA_LAUNCHED();
        if (dx && cuda_matmul(CUBLAS_OP_N, CUBLAS_OP_N, H, n, V, wo, H, go, V, dx + r0 * H, H, 1.f)) goto fail;
        if (dw && cuda_matmul(CUBLAS_OP_N, CUBLAS_OP_T, H, V, n, xc, H, go, V, dw, H, 1.f)) goto fail;
    }
    fh_count_macs((uint64_t)N * H * V);
    return;
fail:
    cuda_record_error("classifier", "cuBLASLt found no algorithm or the matmul failed", __FILE__, __LINE__);
}
