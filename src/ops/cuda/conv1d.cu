/* conv1d.cu - causal depthwise conv1d (Mamba's short conv), channel-last:
 *   out[t,c] = b[c] + sum_k w[c,k] x[t-(K-1)+k, c]   (x[<0] = 0)
 * One thread per output element, channels fastest so loads coalesce. The
 * input gradient is gathered (no atomics); dw and db are deterministic
 * column reductions over all (batch, time) rows. */
#include <algorithm>

#include "common.cuh"

/* grid (channel blocks, row groups): each thread keeps one channel and walks
 * rows r = b*n + t with a 32-bit row index, so the position t costs one
 * 32-bit remainder per row (the first version's 64-bit i % C and i / C per
 * element made these kernels 4x slower than their memory traffic) */
__global__ void conv1d_fwd_kernel(float *out, const float *x, const float *w, const float *b, int R, int n,
                                  int C, int K) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float bias = b ? b[c] : 0.f;
    for (int r = blockIdx.y; r < R; r += gridDim.y) {
        int t = r % n;
        size_t i = (size_t)r * C + c;
        float s = bias;
        for (int k = 0; k < K; k++) {
            int ti = t - (K - 1) + k;
            if (ti >= 0) s += w[(size_t)c * K + k] * x[i - (size_t)(t - ti) * C];
        }
        out[i] = s;
    }
}

/* dx[s,c] = sum_k w[c,k] dout[s+(K-1)-k, c] over outputs inside the sequence */
/* (acc 0: dx overwritten, ops.h) */
__global__ void conv1d_bwd_dx_kernel(float *dx, const float *dout, const float *w, int R, int n, int C, int K,
                                     int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int r = blockIdx.y; r < R; r += gridDim.y) {
        int s = r % n;
        size_t i = (size_t)r * C + c;
        float acc = 0.f;
        for (int k = 0; k < K; k++) {
            int t = s + (K - 1) - k;
            if (t < n) acc += w[(size_t)c * K + k] * dout[i + (size_t)(t - s) * C];
        }
        dx[i] = accumulate ? dx[i] + acc : acc;
    }
}

static dim3 conv_grid(int R, int C) { return dim3((C + 127) / 128, (unsigned)std::min(R, 65535)); }

/* row r = b*n + t; term of tap k: dout[t,c] x[t-(K-1)+k, c] */
struct ConvDw {
    const float *dout, *x;
    int n, C, K, k;
    __device__ float operator()(int r, int c) const {
        int t = r % n, ti = t - (K - 1) + k;
        if (ti < 0) return 0.f;
        return dout[(size_t)r * C + c] * x[((size_t)r + (ti - t)) * C + c];
    }
};
/* every tap at once (KK = K taps): one read of dout[r, c] and of the K inputs
 * it meets, instead of one pass over dout and x per tap; v[k] for tap k */
template <int KK>
struct ConvDwAll {
    const float *dout, *x;
    int n, C;
    __device__ void operator()(int r, int c, float *v) const {
        int t = r % n;
        float g = dout[(size_t)r * C + c];
#pragma unroll
        for (int k = 0; k < KK; k++) {
            int ti = t - (KK - 1) + k;
            if (ti >= 0) v[k] += g * x[((size_t)r + (ti - t)) * C + c];
        }
    }
};
struct ConvDb {
    const float *dout;
    int C;
    __device__ float operator()(int r, int c) const { return dout[(size_t)r * C + c]; }
};

/* taps whose input index is >= 0, per channel and sequence */
static uint64_t conv_taps(int n, int K) {
    if (n >= K) return (uint64_t)n * K - (uint64_t)K * (K - 1) / 2;
    return (uint64_t)n * (n + 1) / 2;
}

void cuda_conv1d_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    conv1d_fwd_kernel<<<conv_grid(B * n, C), 128, 0, cuda_stream()>>>(out, x, w, b, B * n, n, C, K);
    CUDA_LAUNCHED();
    fh_count_macs((uint64_t)B * C * conv_taps(n, K));
}

void cuda_conv1d_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                     int B, int n, int C, int K, int acc) {
    size_t total = (size_t)B * n * C;
    if (!total) return;
    if (dx) {
        conv1d_bwd_dx_kernel<<<conv_grid(B * n, C), 128, 0, cuda_stream()>>>(dx, dout, w, B * n, n, C, K, acc);
        CUDA_LAUNCHED();
    }
    if (dw && K == 4)  /* Mamba's d_conv */
        colsum_multi<4>(dw, K, B * n, C, ConvDwAll<4>{dout, x, n, C});
    else if (dw)
        for (int k = 0; k < K; k++) colsum(dw + k, K, B * n, C, ConvDw{dout, x, n, C, K, k});
    if (db) colsum(db, 1, B * n, C, ConvDb{dout, C});
}
