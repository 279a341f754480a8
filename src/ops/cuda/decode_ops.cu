/* decode_ops.cu - the generator's per-token helpers on the GPU (ops.h,
 * "decoding helpers"): the strided row copy (KV-cache append), the rolling
 * conv window, and one query per sequence over the KV cache. */
#include "common.cuh"

/* a 2-D device-to-device copy on the current stream (capturable, no host sync) */
void cuda_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    cuda_weights_written(dst, sizeof(float) * ((size_t)(rows - 1) * ldd + cols));
    CUDA_CALL(cudaMemcpy2DAsync(dst, sizeof(float) * ldd, src, sizeof(float) * lds, sizeof(float) * cols, rows,
                                cudaMemcpyDeviceToDevice, cuda_stream()));
}

/* one thread per (sequence, channel): it alone reads and writes that
 * channel's K window entries, so the in-place shift has no race */
__global__ void conv1d_step_kernel(float *out, float *win, const float *x, const float *w, const float *b, int B,
                                   int C, int K) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)B * C) return;
    int c = (int)(i % C);
    size_t bi = i / C;
    float *wb = win + bi * K * C + c;
    float acc = b ? b[c] : 0.f;
    for (int k = 0; k < K; k++) {
        float v = k + 1 < K ? wb[(size_t)(k + 1) * C] : x[i];
        wb[(size_t)k * C] = v;
        acc += w[(size_t)c * K + k] * v;
    }
    out[i] = acc;
}

void cuda_conv1d_step(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K) {
    size_t n = (size_t)B * C;
    if (!n) return;
    conv1d_step_kernel<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(out, win, x, w, b, B, C, K);
    CUDA_LAUNCHED();
    fh_count_macs((uint64_t)B * C * K);
}

/* One block per (head, sequence), DEC_WARPS warps. Warp w takes keys w,
 * w + DEC_WARPS, ...; lane l holds output elements l, l + 32, ... (hd <= 32 *
 * DEC_MAXR). Each warp keeps an online softmax (running max m, sum s, the
 * weighted value sum acc scaled to m); the warps' partials are merged at the
 * end through shared memory. */
#define DEC_WARPS 4
#define DEC_MAXR 8
__global__ void attention_decode_kernel(float *out, const float *q, const float *k, const float *v, int nk,
                                        const int *pos, int ld, int nh, int nkv, int hd, float scale) {
    if (pos) nk = pos[0] + 1;  /* the _at variant: the position from device memory */
    __shared__ float sm[DEC_WARPS], ss[DEC_WARPS], sacc[DEC_WARPS][32 * DEC_MAXR];
    int h = blockIdx.x, b = blockIdx.y, kh = h / (nh / nkv);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const float *qi = q + ((size_t)b * nh + h) * hd;
    float qr[DEC_MAXR], acc[DEC_MAXR];
#pragma unroll
    for (int r = 0; r < DEC_MAXR; r++) {
        int x = lane + 32 * r;
        qr[r] = x < hd ? qi[x] : 0.f;
        acc[r] = 0.f;
    }
    float m = -INFINITY, s = 0.f;
    for (int j = wid; j < nk; j += DEC_WARPS) {
        size_t off = (((size_t)b * ld + j) * nkv + kh) * hd;
        float d = 0.f;
#pragma unroll
        for (int r = 0; r < DEC_MAXR; r++) {
            int x = lane + 32 * r;
            if (x < hd) d += qr[r] * k[off + x];
        }
        float sc = warp_sum(d) * scale, mn = fmaxf(m, sc);
        float corr = expf(m - mn), p = expf(sc - mn);   /* corr = 0 on the first key (m = -inf) */
        s = s * corr + p;
#pragma unroll
        for (int r = 0; r < DEC_MAXR; r++) {
            int x = lane + 32 * r;
            acc[r] = acc[r] * corr + (x < hd ? p * v[off + x] : 0.f);
        }
        m = mn;
    }
    if (lane == 0) { sm[wid] = m; ss[wid] = s; }
#pragma unroll
    for (int r = 0; r < DEC_MAXR; r++) sacc[wid][lane + 32 * r] = acc[r];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm[w]);
    float Z = 0.f;
    for (int w = 0; w < DEC_WARPS; w++) Z += sm[w] == -INFINITY ? 0.f : ss[w] * expf(sm[w] - M);
    float *oi = out + ((size_t)b * nh + h) * hd;
    for (int x = threadIdx.x; x < hd; x += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm[w] != -INFINITY) o += sacc[w][x] * expf(sm[w] - M);
        oi[x] = nk > 0 ? o / Z : 0.f;
    }
}

static void attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, const int *pos,
                             int ld, int nh, int nkv, int hd) {
    if (B <= 0 || nh <= 0) return;
    if (hd > 32 * DEC_MAXR) {
        cuda_record_error("attention_decode", "head_dim above 256 is not supported by the decode kernel", __FILE__,
                          __LINE__);
        return;
    }
    attention_decode_kernel<<<dim3(nh, B), 32 * DEC_WARPS, 0, cuda_stream()>>>(out, q, k, v, nk, pos, ld, nh, nkv,
                                                                               hd, 1.f / sqrtf((float)hd));
    CUDA_LAUNCHED();
}

void cuda_attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh,
                           int nkv, int hd) {
    attention_decode(out, q, k, v, B, nk, NULL, ld, nh, nkv, hd);
    fh_count_macs(2ull * hd * nk * B * nh);
}

/* nk is on the device: not counted (the host does not know it) */
void cuda_attention_decode_at(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                              int nh, int nkv, int hd) {
    attention_decode(out, q, k, v, B, 0, pos, ld, nh, nkv, hd);
}

__global__ void copy_rows_at_kernel(float *dst, int ldd, const float *src, int rows, int cols, const int *pos) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    size_t r = i / cols, c = i % cols;
    dst[r * ldd + (size_t)pos[0] * cols + c] = src[i];
}

void cuda_copy_rows_at(real *dst, int ldd, const real *src, int rows, int cols, const int *pos) {
    size_t n = (size_t)rows * cols;
    if (!n) return;
    copy_rows_at_kernel<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(dst, ldd, src, rows, cols, pos);
    CUDA_LAUNCHED();
}
