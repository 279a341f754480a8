/* gated_rmsnorm_kernels.cuh - the register-resident gated RMSNorm kernels,
 * device code only: gated_rmsnorm.cu launches them, tools/m2_emu runs them on
 * the CPU. Include after common.cuh (sigmoidf_, block_sum).
 *
 * A row of C floats (C % 4 == 0, C <= 4 * GN_THREADS * NPT) is held by
 * GN_THREADS threads, NPT float4 each, in registers: y, z (and dout) are read
 * from memory once per row, against twice by the first kernels (once for the
 * sum of squares or the dot product, once for the output). The backward runs
 * a fixed grid of blocks, each walking rows r = blockIdx.x + i * gridDim.x
 * with its threads' dw partials (dout * g * rstd per channel) in registers,
 * written once per block: gated_rmsnorm.cu sums the blocks in order, so the
 * separate column pass over dout, y and z goes away. */
#ifndef FLOWHN_GATED_RMSNORM_KERNELS_CUH
#define FLOWHN_GATED_RMSNORM_KERNELS_CUH

#define GN_THREADS 128

/* y * silu(z), rounded in the CPU oracle's order */
__device__ __forceinline__ float gate_of(float y, float z) { return y * (z * sigmoidf_(z)); }

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ void st4(float *p, float a, float b, float c, float d) {
    *reinterpret_cast<float4 *>(p) = make_float4(a, b, c, d);
}

/* one row per block */
template <int NPT>
__global__ void __launch_bounds__(GN_THREADS)
    gnorm_fwd_reg_kernel(float *out, float *rstd, const float *y, const float *z, const float *w, int C, float eps) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C;
    int C4 = C / 4;
    float g[NPT][4];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        if (j < C4) {
            float4 yv = ld4(y + off + 4 * j), zv = ld4(z + off + 4 * j);
            g[i][0] = gate_of(yv.x, zv.x); g[i][1] = gate_of(yv.y, zv.y);
            g[i][2] = gate_of(yv.z, zv.z); g[i][3] = gate_of(yv.w, zv.w);
#pragma unroll
            for (int q = 0; q < 4; q++) ss += g[i][q] * g[i][q];
        }
    }
    float r = rsqrtf(block_sum(ss, sh) / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        if (j < C4) {
            float4 wv = ld4(w + 4 * j);
            st4(out + off + 4 * j, g[i][0] * r * wv.x, g[i][1] * r * wv.y, g[i][2] * r * wv.z, g[i][3] * r * wv.w);
        }
    }
}

/* dg = r (dout w - g r m), m = mean(dout w g) r; dy = dg silu(z); dz = dg y silu'(z)
 * (acc 0: dy, dz overwritten, ops.h); part[blockIdx.x][C]: this block's rows'
 * sum of dout g r (NULL: dw not wanted) */
template <int NPT>
__global__ void __launch_bounds__(GN_THREADS)
    gnorm_bwd_reg_kernel(float *dy, float *dz, float *part, const float *dout, const float *y, const float *z,
                         const float *w, const float *rstd, int N, int C, int acc) {
    __shared__ float sh[32];
    int C4 = C / 4;
    float wr[NPT][4], pw[NPT][4];
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        float4 wv = j < C4 ? ld4(w + 4 * j) : make_float4(0.f, 0.f, 0.f, 0.f);
        wr[i][0] = wv.x; wr[i][1] = wv.y; wr[i][2] = wv.z; wr[i][3] = wv.w;
#pragma unroll
        for (int q = 0; q < 4; q++) pw[i][q] = 0.f;
    }
    for (int row = blockIdx.x; row < N; row += gridDim.x) {   /* the same trip count in every thread */
        size_t off = (size_t)row * C;
        float r = rstd[row];
        float dv[NPT][4], yv[NPT][4], zv[NPT][4];
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < NPT; i++) {
            int j = threadIdx.x + i * GN_THREADS;
            if (j < C4) {
                float4 a = ld4(dout + off + 4 * j), b = ld4(y + off + 4 * j), c = ld4(z + off + 4 * j);
                dv[i][0] = a.x; dv[i][1] = a.y; dv[i][2] = a.z; dv[i][3] = a.w;
                yv[i][0] = b.x; yv[i][1] = b.y; yv[i][2] = b.z; yv[i][3] = b.w;
                zv[i][0] = c.x; zv[i][1] = c.y; zv[i][2] = c.z; zv[i][3] = c.w;
#pragma unroll
                for (int q = 0; q < 4; q++) dot += dv[i][q] * wr[i][q] * gate_of(yv[i][q], zv[i][q]);
            }
        }
        float m = block_sum(dot, sh) * r / C;
#pragma unroll
        for (int i = 0; i < NPT; i++) {
            int j = threadIdx.x + i * GN_THREADS;
            if (j < C4) {
                float gy[4], gz[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    float yq = yv[i][q], zq = zv[i][q], s = sigmoidf_(zq);
                    float g = yq * (zq * s);
                    pw[i][q] += dv[i][q] * g * r;
                    float dg = r * (dv[i][q] * wr[i][q] - g * r * m);
                    gy[q] = dg * zq * s;
                    gz[q] = dg * yq * s * (1.f + zq * (1.f - s));
                }
                size_t k = off + 4 * j;
                if (dy) {
                    if (acc) { float4 o = ld4(dy + k); gy[0] += o.x; gy[1] += o.y; gy[2] += o.z; gy[3] += o.w; }
                    st4(dy + k, gy[0], gy[1], gy[2], gy[3]);
                }
                if (dz) {
                    if (acc) { float4 o = ld4(dz + k); gz[0] += o.x; gz[1] += o.y; gz[2] += o.z; gz[3] += o.w; }
                    st4(dz + k, gz[0], gz[1], gz[2], gz[3]);
                }
            }
        }
    }
    if (!part) return;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        if (j < C4) st4(part + (size_t)blockIdx.x * C + 4 * j, pw[i][0], pw[i][1], pw[i][2], pw[i][3]);
    }
}

/* dw[c] += sum over the nblk blocks of part[blk][c], in block order */
__global__ void gnorm_dw_finish_kernel(float *dw, const float *part, int nblk, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float t = 0.f;
    for (int i = 0; i < nblk; i++) t += part[(size_t)i * C + c];
    dw[c] += t;
}

#endif
