/* linear.cu - out[N,OC] = in[N,IC] @ w[OC,IC]^T (+ b) through cuBLASLt.
 *
 * cuBLASLt is column-major; a row-major [R, C] matrix is the column-major
 * [C, R] one, so every product below is written for the transposes:
 *   forward  out^T[OC,N] = w'^T in^T          (w' = w seen column-major [IC,OC])
 *   din^T[IC,N]  += w' dout^T                 (beta = 1: backward accumulates)
 *   dw'[IC,OC]   += in^T dout                 (dw' = dw seen column-major)
 * Compute type CUBLAS_COMPUTE_32F: true fp32, no TF32, so results stay within
 * the 1e-5 relative bound of the CPU oracle. The bias rides the BIAS epilogue
 * when an algorithm supports it; otherwise a small kernel adds it. */
#include <cublasLt.h>

#include "common.cuh"

#define LT_WORKSPACE_BYTES (32u << 20)

static cublasLtHandle_t lt_handle;
static void *lt_workspace;

static int lt_init(void) {
    if (lt_handle) return 0;
    if (cublasLtCreate(&lt_handle) != CUBLAS_STATUS_SUCCESS) {
        lt_handle = NULL;
        cuda_record_error("cublasLtCreate", "cannot create a cuBLASLt handle", __FILE__, __LINE__);
        return -1;
    }
    if (cudaMalloc(&lt_workspace, LT_WORKSPACE_BYTES) != cudaSuccess) {
        lt_workspace = NULL;
        cuda_record_error("cudaMalloc", "cannot allocate the cuBLASLt workspace", __FILE__, __LINE__);
        return -1;
    }
    return 0;
}

/* the largest power of two (<= 256) dividing the address: heuristics must only
 * offer algorithms that accept the pointers we pass (views into larger
 * buffers are not 256-byte aligned) */
static uint32_t alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 4 && (a % al)) al >>= 1;
    return al;
}

/* C[m,n] = op(A) op(B) + beta C (+ bias[m] per row), column-major, fp32.
 * Returns 0, or -1 if no algorithm fits (nothing was written). */
static int lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                     const float *B, int ldb, float *C, int ldc, float beta, const float *bias) {
    if (lt_init()) return -1;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0, rc = -1;
    uint64_t ws = LT_WORKSPACE_BYTES;
    uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_c = alignment_of(C);
    float alpha = 1.f;

    if (cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) goto done;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    }
    if (cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda) ||
        cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb) ||
        cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc))
        goto done;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) goto done;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    if (cublasLtMatmulAlgoGetHeuristic(lt_handle, desc, la, lb, lc, lc, pref, 1, &heur, &found) !=
            CUBLAS_STATUS_SUCCESS || found == 0)
        goto done;
    if (cublasLtMatmul(lt_handle, desc, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &heur.algo, lt_workspace,
                       LT_WORKSPACE_BYTES, 0) == CUBLAS_STATUS_SUCCESS)
        rc = 0;
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return rc;
}

__global__ void add_bias_kernel(float *out, const float *b, size_t total, int OC) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += b[i % OC];
}

struct ColOf {
    const float *m;
    int C;
    __device__ float operator()(int i, int c) const { return m[(size_t)i * C + c]; }
};

static void matmul_or_fail(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A,
                           int lda, const float *B, int ldb, float *C, int ldc, float beta, const char *what) {
    if (lt_matmul(ta, tb, m, n, k, A, lda, B, ldb, C, ldc, beta, NULL))
        cuda_record_error(what, "cuBLASLt found no fp32 algorithm or the matmul failed", __FILE__, __LINE__);
}

void cuda_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC) {
    if (N <= 0) return;
    if (!b || lt_matmul(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, IC, in, IC, out, OC, 0.f, b)) {
        matmul_or_fail(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, IC, in, IC, out, OC, 0.f, "linear_fwd");
        if (b) {
            size_t total = (size_t)N * OC;
            add_bias_kernel<<<grid_for(total, 256), 256>>>(out, b, total, OC);
            CUDA_LAUNCHED();
        }
    }
    fh_count_macs((uint64_t)N * IC * OC);
}

void cuda_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in, const real *w,
                     int N, int IC, int OC) {
    if (N <= 0) return;
    if (din) matmul_or_fail(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, IC, dout, OC, din, IC, 1.f, "linear_bwd din");
    if (dw) matmul_or_fail(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, in, IC, dout, OC, dw, IC, 1.f, "linear_bwd dw");
    if (db) colsum(db, 1, N, OC, ColOf{dout, OC});
}
