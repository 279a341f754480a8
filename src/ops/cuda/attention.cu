/* attention.cu - causal grouped-query attention over token subsets.
 *
 * FIRST VERSION, to be replaced by a tiled (flash-style) kernel: one thread
 * block per (batch, head, query). The block keeps the query's scores for all
 * nk keys in shared memory, so nk is bounded by the shared-memory limit
 * (~56k keys on an H100); key loads are not coalesced. It is here to be
 * correct and simple, and is checked against the CPU oracle.
 *
 * Query i sees key j iff kpos[j] <= qpos[i]; head h reads kv head h/(nh/nkv);
 * scale 1/sqrt(hd). lse[b,h,i] is saved for the backward; a query with no
 * visible key writes zeros and lse = -inf.
 * Backward, with p_j = exp(s_j - lse), D = dout.out:
 *   dv_j += p_j dout;  ds_j = p_j (dout.v_j - D);  dq += scale sum_j ds_j k_j;
 *   dk_j += scale ds_j q.  dk/dv are shared by queries and heads: atomics. */
#include <stdlib.h>

#include "common.cuh"

#define ATT_THREADS 128

__global__ void attention_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                     const int *qpos, const int *kpos, int nq, int nk, int nh, int nkv, int hd) {
    extern __shared__ float smem[];
    float *sq = smem, *sp = smem + hd;
    __shared__ float red[32];
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (nh / nkv);
    float scale = 1.f / sqrtf((float)hd);
    size_t qoff = (((size_t)b * nq + i) * nh + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) sq[d] = q[qoff + d];
    __syncthreads();

    int qp = qpos[i];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float s = -INFINITY;
        if (kpos[j] <= qp) {
            const float *kj = k + (((size_t)b * nk + j) * nkv + hk) * hd;
            float dot = 0.f;
            for (int d = 0; d < hd; d++) dot += sq[d] * kj[d];
            s = dot * scale;
        }
        sp[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    size_t lidx = ((size_t)b * nh + h) * nq + i;
    if (mx == -INFINITY) {  /* no visible key */
        for (int d = threadIdx.x; d < hd; d += blockDim.x) out[qoff + d] = 0.f;
        if (threadIdx.x == 0) lse[lidx] = -INFINITY;
        return;
    }
    float sum = 0.f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float e = sp[j] == -INFINITY ? 0.f : expf(sp[j] - mx);
        sp[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);  /* its barriers also publish sp */
    float inv = 1.f / sum;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < nk; j++)
            if (sp[j] != 0.f) acc += sp[j] * v[(((size_t)b * nk + j) * nkv + hk) * hd + d];
        out[qoff + d] = acc * inv;
    }
    if (threadIdx.x == 0) lse[lidx] = mx + logf(sum);
}

__global__ void attention_bwd_kernel(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                     const float *lse, const float *q, const float *k, const float *v,
                                     const int *qpos, const int *kpos, int nq, int nk, int nh, int nkv, int hd) {
    extern __shared__ float smem[];
    float *sq = smem, *sdo = smem + hd, *sds = smem + 2 * hd;
    __shared__ float red[32];
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (nh / nkv);
    float scale = 1.f / sqrtf((float)hd);
    size_t qoff = (((size_t)b * nq + i) * nh + h) * hd;
    float Dpart = 0.f;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        sq[d] = q[qoff + d];
        sdo[d] = dout[qoff + d];
        Dpart += dout[qoff + d] * out[qoff + d];
    }
    float D = block_sum(Dpart, red);  /* barriers publish sq, sdo */
    float l = lse[((size_t)b * nh + h) * nq + i];
    int qp = qpos[i];
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float ds = 0.f;
        if (kpos[j] <= qp) {
            size_t koff = (((size_t)b * nk + j) * nkv + hk) * hd;
            float s = 0.f, dp = 0.f;
            for (int d = 0; d < hd; d++) {
                s += sq[d] * k[koff + d];
                dp += sdo[d] * v[koff + d];
            }
            float p = expf(s * scale - l);
            ds = p * (dp - D);
            if (dv)
                for (int d = 0; d < hd; d++) atomicAdd(&dv[koff + d], p * sdo[d]);
            if (dk)
                for (int d = 0; d < hd; d++) atomicAdd(&dk[koff + d], scale * ds * sq[d]);
        }
        sds[j] = ds;
    }
    if (!dq) return;
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < nk; j++)
            if (sds[j] != 0.f) acc += sds[j] * k[(((size_t)b * nk + j) * nkv + hk) * hd + d];
        dq[qoff + d] += scale * acc;
    }
}

/* Raises the kernel's dynamic shared-memory limit when the scores need more
 * than the default 48 KB; 0 if it fits the device. */
static int set_smem(const void *kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 0;
    int dev = 0, maxb = 0;
    CUDA_CALL(cudaGetDevice(&dev));
    CUDA_CALL(cudaDeviceGetAttribute(&maxb, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (bytes > (size_t)maxb) {
        cuda_record_error(what, "too many keys for the first-version attention kernel (scores live in shared memory)",
                          __FILE__, __LINE__);
        return -1;
    }
    CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}

/* 2*hd MACs per visible key: the positions live on the device, so they are
 * copied back here (a small synchronous copy; the fast kernel will count
 * from the positions it already has on the host side). */
static void count_attention_macs(const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int hd) {
    int *hq = (int *)malloc(sizeof(int) * (nq + nk));
    if (!hq) return;
    int *hk = hq + nq;
    CUDA_CALL(cudaMemcpy(hq, qpos, sizeof(int) * nq, cudaMemcpyDeviceToHost));
    CUDA_CALL(cudaMemcpy(hk, kpos, sizeof(int) * nk, cudaMemcpyDeviceToHost));
    uint64_t vis = 0;
    for (int i = 0, j = 0; i < nq; i++) {  /* both ascending: the visible keys are a growing prefix */
        while (j < nk && hk[j] <= hq[i]) j++;
        vis += j;
    }
    free(hq);
    fh_count_macs(vis * 2 * hd * nh * B);
}

void cuda_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                        const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd) {
    if (B <= 0 || nq <= 0) return;
    /* +4 floats: compute-sanitizer saw the compiled dot loop read sq with a
     * 12-byte vector load past the end when hd + nk is tiny (hd = nk = 1) */
    size_t smem = sizeof(float) * ((size_t)hd + nk + 4);
    if (set_smem((const void *)attention_fwd_kernel, smem, "attention_fwd")) return;
    attention_fwd_kernel<<<dim3(nq, nh, B), ATT_THREADS, smem>>>(out, lse, q, k, v, qpos, kpos, nq, nk, nh, nkv, hd);
    CUDA_LAUNCHED();
    count_attention_macs(qpos, kpos, B, nq, nk, nh, hd);
}

void cuda_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                        const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                        int nq, int nk, int nh, int nkv, int hd) {
    if (B <= 0 || nq <= 0 || (!dq && !dk && !dv)) return;
    size_t smem = sizeof(float) * (2 * (size_t)hd + nk + 4);   /* padded as in the forward */
    if (set_smem((const void *)attention_bwd_kernel, smem, "attention_bwd")) return;
    attention_bwd_kernel<<<dim3(nq, nh, B), ATT_THREADS, smem>>>(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos,
                                                                 nq, nk, nh, nkv, hd);
    CUDA_LAUNCHED();
}
