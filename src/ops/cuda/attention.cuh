/* attention.cuh - what the two attention implementations share: the fp32
 * CUDA-core kernels (attention.cu) and the bf16 tensor-core kernels
 * (attention_tc.cu, used when the matmul precision is bf16). */
#ifndef FLOWHN_CUDA_ATTENTION_CUH
#define FLOWHN_CUDA_ATTENTION_CUH

#include "common.cuh"

/* m = number of keys visible at position qp: the first j with kpos[j] > qp.
 * Both position arrays ascend, so query i sees the key prefix [0, m_i). */
__device__ __forceinline__ int visible_keys(const int *kpos, int nk, int qp) {
    int lo = 0, hi = nk;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (kpos[mid] <= qp) lo = mid + 1; else hi = mid;
    }
    return lo;
}
/* the first query i with qpos[i] >= p (the first that can see a key at p) */
__device__ __forceinline__ int first_query_at(const int *qpos, int nq, int p) {
    int lo = 0, hi = nq;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (qpos[mid] < p) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The backward's key tile that no query sees, when the op overwrites (ops.h
 * acc 0): its ncol rows of dk and dv (row stride kstride, hd wide, from koff)
 * get the zero gradient, by the block's threads. */
__device__ __forceinline__ void zero_kv_rows(float *dk, float *dv, size_t koff, size_t kstride, int ncol, int hd) {
    for (int i = threadIdx.x; i < ncol * hd; i += blockDim.x) {
        size_t o = koff + (size_t)(i / hd) * kstride + i % hd;
        if (dk) dk[o] = 0.f;
        if (dv) dv[o] = 0.f;
    }
}

/* Opts a kernel into `bytes` of dynamic shared memory (needed above 48 KB);
 * -1 (error recorded) if the GPU has less per block. */
int attention_set_smem(const void *kernel, size_t bytes, const char *what);

/* bf16 tensor-core path (attention_tc.cu): taken for head sizes up to 128
 * when the matmul precision is bf16. Same contract as the ops. */
int attention_tc_applies(int hd);
void attention_tc_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                      const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd);
void attention_tc_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                      const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                      int nq, int nk, int nh, int nkv, int hd, int acc);

/* RoPE inside the bf16 path (ops.h attention_rope_*): q and k unrotated, rotated
 * by qpos / kpos and theta (> 0) where they are rounded; dq, dk the gradients of
 * the unrotated q, k. Only where attention_tc_rope_applies(hd): hd 16, 32, 64, 128. */
int attention_tc_rope_applies(int hd);
void attention_tc_rope_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *qpos,
                           const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, float theta);
void attention_tc_rope_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *k, const float *v, const int *qpos, const int *kpos, int B,
                           int nq, int nk, int nh, int nkv, int hd, int acc, float theta);
/* cuDNN's fused flash attention (attention_cudnn.cu), for causal self-attention
 * over one token list (the callers check: bf16 precision, qpos == kpos, nq == nk;
 * pos is that array). theta > 0: RoPE inside (q, k unrotated, dq, dk the
 * unrotated inputs' gradients), else none. 0 done, or 1 having written nothing
 * to the outputs: the caller runs our kernels. Row strides ldq (q, dq), ldkv
 * (k, v, dk, dv) as ops.h attention_fwd's: read and written by the conversions. */
int attention_cudnn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *pos, int B,
                        int n, int nh, int nkv, int hd, float theta, int ldq, int ldkv);
int attention_cudnn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                        const float *q, const float *k, const float *v, const int *pos, int B, int n, int nh, int nkv,
                        int hd, int acc, float theta, int ldq, int ldkv);
/* rope.cu: the (cos, sin) table [n][hd/2] of positions pos (rope_fwd's, the same bits), launched on the stream */
void cuda_rope_table(float2 *cs, const int *pos, int n, int hd, float theta);

#endif
