/* classifier.cu - the fused training classifier (ops.h `classifier`): head
 * product, softmax cross-entropy and both gradients by chunks of R rows.
 *
 * Per chunk: logits_c = x_c w^T (cuBLASLt); one kernel per row makes the
 * log-sum-exp (one online pass), the loss, and the logit gradients
 * scale * (softmax - onehot), written as the next products' operand; then
 * dx_c += dlogits w and dw += dlogits^T x_c.
 *  - fp32/tf32 mode: fp32 logits, fp32 gradients in place.
 *  - bf16 mode: the product stores the logits in bf16 (fp32 accumulation,
 *    one rounding on the store) and the row kernel reads them in 16-byte
 *    loads, computes in fp32 and writes the bf16 gradients in place: 6 bytes
 *    a logit moved instead of 10 (the row kernel is bound by them: 1.05 ms of
 *    the 3.86 at gpt2small, session 8) and half the product's store, one
 *    256 MB scratch. The logits' bf16 rounding is an error of the same order as
 *    the bf16 operands' (docs/perf-notes.md, cls-bf16).
 *    FLOWHN_CLS_BF16=0: the earlier bf16 path, fp32 logits and bf16 gradients
 *    into a second scratch (for an A/B). The unfused path
 * stores fp32 logits and fp32 logit gradients for all N rows (3.2 GB at
 * N = 8K, V = 50K) and reads them four more times; here a chunk (at most
 * 2^27 logits) lives in scratch and L2 sees most of the re-reads.
 * In bf16 mode w and x are rounded once per call, not once per chunk; in
 * training w is not rounded at all but read from the weights' bf16 copy
 * (linear.cu, Ops.train_weights) where it has one. */
#include <stdlib.h>
#include <string.h>

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

/* bf16 mode's row kernel: bf16 logits in, bf16 gradients in place, fp32
 * arithmetic (the expressions of classifier_xent_kernel's bf16 path). 8
 * logits a 16-byte load and store when the row allows (V % 8 == 0, 16-byte
 * aligned: the padded vocabularies); else one at a time (odd V, tests).
 * STAGE (perf-notes, llamapass; vec rows only, the caller checks): the first
 * loop also stores each 16-byte load into dynamic shared memory (V x 2 B) and
 * the gradient loop reads the row from there. Without it the gradient loop
 * reads the row from global a second time, and at 4 blocks an SM (53 MB of rows
 * in flight at V 50304) that re-read misses the 50 MB L2: 3 passes over HBM
 * instead of 2. The same threads add the same values in the same order, so the
 * output is the same bits either way. */
template <bool STAGE>
__global__ void classifier_xent16_kernel(float *loss, __nv_bfloat16 *logits, const int *targets, float scale, int V) {
    __shared__ float sh[32];
    extern __shared__ uint4 srow[];   /* STAGE: the row, V / 8 words */
    __nv_bfloat16 *row = logits + (size_t)blockIdx.x * V;
    int t = targets[blockIdx.x];
    float xt = (t >= 0 && threadIdx.x == 0) ? __bfloat162float(row[t]) : 0.f;  /* before any overwrite */
    int vec = STAGE || ((V & 7) == 0 && ((uintptr_t)row & 15) == 0);
    float m = -INFINITY, s = 0.f;
    if (vec) {
        const uint4 *r8 = (const uint4 *)row;
        int nw = V / 8;
        if (STAGE) {   /* 4 loads in flight a thread, then the adds in the unstaged loop's order */
            for (int v0 = threadIdx.x; v0 < nw; v0 += 4 * blockDim.x) {
                uint4 u[4];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    int v = v0 + k * blockDim.x;
                    u[k] = v < nw ? r8[v] : make_uint4(0u, 0u, 0u, 0u);
                }
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    int v = v0 + k * blockDim.x;
                    if (v >= nw) break;
                    srow[v] = u[k];
                    float f[8];
                    bf16x8_unpack(u[k], f);
#pragma unroll
                    for (int j = 0; j < 8; j++) online_softmax_add(f[j], m, s);
                }
            }
        } else {
            for (int v = threadIdx.x; v < nw; v += blockDim.x) {
                float f[8];
                bf16x8_unpack(r8[v], f);
#pragma unroll
                for (int j = 0; j < 8; j++) online_softmax_add(f[j], m, s);
            }
        }
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x) online_softmax_add(__bfloat162float(row[v]), m, s);
    }
    float M = block_max(m, sh);
    s = (m == -INFINITY) ? 0.f : s * expf(m - M);  /* a thread that saw nothing adds nothing */
    float lse = M + logf(block_sum(s, sh));        /* its barriers order xt's read before the writes below */
    if (threadIdx.x == 0) loss[blockIdx.x] = t >= 0 ? lse - xt : 0.f;
    float g = t >= 0 ? scale : 0.f;
    if (vec) {
        uint4 *r8 = (uint4 *)row;
        /* STAGE: a thread reads back only the words it stored itself (same v), so no barrier is needed beyond
         * the reductions' */
        for (int v = threadIdx.x; v < V / 8; v += blockDim.x) {
            float f[8];
            bf16x8_unpack(STAGE ? srow[v] : r8[v], f);
            int b = 8 * v;
            uint4 o;
            __nv_bfloat162 *h = (__nv_bfloat162 *)&o;
#pragma unroll
            for (int j = 0; j < 4; j++)
                h[j] = __float22bfloat162_rn(make_float2(g * (expf(f[2 * j] - lse) - (b + 2 * j == t)),
                                                         g * (expf(f[2 * j + 1] - lse) - (b + 2 * j + 1 == t))));
            r8[v] = o;
        }
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            row[v] = __float2bfloat16_rn(g * (expf(__bfloat162float(row[v]) - lse) - (v == t)));
    }
}

/* FLOWHN_CLS_SMEM: "1" the staged kernel where two blocks fit an SM (V <= 56K); "big" also where a row takes
 * more than half an SM's shared memory (1 block an SM: V 65536); default (unset, "0", anything else) the
 * unstaged kernel everywhere. Off by default: session 12 call 4's op profile at llama-gpt2small (V 50304) gave
 * the classifier 3.416 ms staged against 3.371 unstaged (call 3's llama-135m step: "big" 11.709 ms against
 * 11.570), so the third HBM pass the staging saves was not what held the kernel (perf-notes llamapass).
 * Read once (cuda_ops.h cuda_set_cls_smem) */
static int cls_smem = -1;
int cuda_set_cls_smem(int mode) {
    if (cls_smem < 0) {
        const char *e = getenv("FLOWHN_CLS_SMEM");
        cls_smem = !e || !*e ? 0 : !strcmp(e, "1") ? 1 : !strcmp(e, "big") ? 2 : 0;
    }
    int was = cls_smem;
    if (mode >= 0) cls_smem = mode > 2 ? 2 : mode;
    return was;
}

/* launches the row kernel on n rows of bf16 logits at l16 (stream order); the staged kernel when the switch,
 * V and the row's alignment allow it and the shared memory could be granted */
static void xent16_rows(float *loss, __nv_bfloat16 *l16, const int *targets, float scale, int n, int V) {
    static size_t granted;   /* the staged kernel's dynamic shared memory limit set so far */
    int mode = cuda_set_cls_smem(-1);
    size_t bytes = (size_t)V * sizeof(__nv_bfloat16);
    static int optin = -1;   /* the device's opt-in limit a block (227 KB on the H200) */
    if (optin < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
            optin = 0;   /* unknown: the unstaged kernel */
            cudaGetLastError();   /* our query's error only (it failed just now) */
        }
    }
    /* two blocks an SM need 2 (bytes + the reductions' 128 B + the runtime's 1 KB a block) of ~228 KB */
    size_t cap = optin < 4096 ? 0 : mode == 2 ? (size_t)optin - 256 : ((size_t)optin - 2048) / 2;
    int stage = mode > 0 && V % 8 == 0 && !((uintptr_t)l16 & 15) && bytes <= cap;
    if (stage && bytes > granted) {
        /* not inside a recording (train_step's first step at a shape is eager, so the limit is raised there):
         * a recording made before any eager call gets the unstaged kernel, rather than a function attribute
         * changed in the middle of a capture */
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        cudaError_t e = cudaStreamIsCapturing(cuda_stream(), &cs);
        if (e == cudaSuccess && cs == cudaStreamCaptureStatusNone)
            e = cudaFuncSetAttribute(classifier_xent16_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)bytes);
        else stage = 0;
        if (e != cudaSuccess) {
            cudaGetLastError();   /* the failed call's error (just now): not granted, the unstaged kernel */
            stage = 0;
        } else if (stage)
            granted = bytes;
    }
    if (stage)
        classifier_xent16_kernel<true><<<n, CLS_THREADS, bytes, cuda_stream()>>>(loss, l16, targets, scale, V);
    else
        classifier_xent16_kernel<false><<<n, CLS_THREADS, 0, cuda_stream()>>>(loss, l16, targets, scale, V);
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
void cuda_classifier_rows16(real *loss, void *logits16, const int *targets, real scale, int n, int V) {
    if (n <= 0) return;
    xent16_rows(loss, (__nv_bfloat16 *)logits16, targets, scale, n, V);
    CUDA_LAUNCHED();
}

/* FLOWHN_CLS_BF16 ("0" off, default on; cuda_ops.h) */
static int cls16_on = -1;
int cuda_set_cls_bf16(int on) { return cuda_env_switch(&cls16_on, "FLOWHN_CLS_BF16", "0", 1, on); }

/* scratch per branch: the chunk's fp32 logits, its bf16 gradients (bf16 mode: also its bf16 logits), bf16 w
 * and x */
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
                     int N, int H, int V, int acc) {
    if (N <= 0) return;
    size_t R = CLS_CHUNK_ELEMS / (size_t)V;
    if (R < 64) R = 64;
    if (R > (size_t)N) R = N;
    int bf16 = cuda_matmul_bf16();
    /* bf16 logits, gradients in place over them; V % 8: rows of whole 16-byte words, as the padded vocabularies
     * (50304, 65536, 128256); another V keeps the fp32 logits rather than ask cuBLASLt for a bf16 store with
     * an odd leading dimension */
    int l16 = bf16 && V % 8 == 0 && cuda_set_cls_bf16(-1);
    size_t esz = bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    float *logits = l16 ? NULL : (float *)scratch(0, R * V * sizeof(float));
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
    if ((!l16 && !logits) || (bf16 && !dl16)) return;
    const void *go = bf16 ? (const void *)dl16 : (const void *)logits;  /* the logit gradients' operand */
    for (size_t r0 = 0; r0 < (size_t)N; r0 += R) {
        int n = (int)((size_t)N - r0 < R ? (size_t)N - r0 : R);
        const char *xc = (const char *)xo + r0 * H * esz;
        /* logits^T[V, n] = w'^T x_c^T (see linear.cu for the column-major reading) */
        if (l16) {
            if (cuda_matmul_c16(CUBLAS_OP_T, CUBLAS_OP_N, V, n, H, wo, H, xc, H, dl16, V)) goto fail;
            xent16_rows(loss + r0, dl16, targets + r0, scale, n, V);
        } else {
            if (cuda_matmul(CUBLAS_OP_T, CUBLAS_OP_N, V, n, H, wo, H, xc, H, logits, V, 0.f)) goto fail;
            classifier_xent_kernel<<<n, CLS_THREADS, 0, cuda_stream()>>>(loss + r0, logits, dl16, targets + r0, scale,
                                                                         V);
        }
        CUDA_LAUNCHED();
        /* dx's rows: this chunk's own, added or (FH_OVERWRITE) overwritten (ops.h acc) */
        if (dx && cuda_matmul(CUBLAS_OP_N, CUBLAS_OP_N, H, n, V, wo, H, go, V, dx + r0 * H, H, (acc & FH_ACC) ? 1.f : 0.f))
            goto fail;
        /* FH_DW_OVERWRITE (ops.h): the first chunk's dw product with beta 0 (dw not read: the lazy head gradient
         * holds anything before it), the rest add */
        float dw_beta = r0 == 0 && (acc & FH_DW_OVERWRITE) ? 0.f : 1.f;
        if (dw && cuda_matmul(CUBLAS_OP_N, CUBLAS_OP_T, H, V, n, xc, H, go, V, dw, H, dw_beta)) goto fail;
    }
    fh_count_macs((uint64_t)N * H * V);
    return;
fail:
    cuda_record_error("classifier", "cuBLASLt found no algorithm or the matmul failed", __FILE__, __LINE__);
}
