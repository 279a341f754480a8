/* gated_rmsnorm_kernels.cuh - the register-resident gated RMSNorm kernels,
 * device code only: gated_rmsnorm.cu launches them, tools/m2_emu runs them on
 * the CPU. Include after common.cuh (sigmoidf_, block_sum) and cuda_bf16.h.
 *
 * A row of C floats (C % 4 == 0, C <= 4 * GN_THREADS * NPT) is held by
 * GN_THREADS threads, NPT float4 each, in registers: y, z (and dout) are read
 * from memory once per row, against twice by the first kernels (once for the
 * sum of squares or the dot product, once for the output). The backward runs
 * a fixed grid of blocks, each walking rows r = blockIdx.x + i * gridDim.x
 * with its threads' dw partials (dout * g * rstd per channel) in registers,
 * written once per block: gated_rmsnorm.cu sums the blocks in order, so the
 * separate column pass over dout, y and z goes away. z and dz have their own
 * row stride ldz (ops.h: a column window of Mamba-2's packed in_proj output;
 * ldz % 4 == 0 for the float4 accesses, gated_rmsnorm.cu checks). */
#ifndef FLOWHN_GATED_RMSNORM_KERNELS_CUH
#define FLOWHN_GATED_RMSNORM_KERNELS_CUH

#define GN_THREADS 128

/* y * silu(z), rounded in the CPU oracle's order */
__device__ __forceinline__ float gate_of(float y, float z) { return y * (z * sigmoidf_(z)); }

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ void st4(float *p, float a, float b, float c, float d) {
    *reinterpret_cast<float4 *>(p) = make_float4(a, b, c, d);
}

/* the bf16 rounding (round to nearest even, as to_bf16_kernel) of 4 values into
 * 8 bytes at p (8-byte aligned): a product's bf16 operand written by its
 * producer (linear.cu shadows and kept roundings) */
__device__ __forceinline__ void st4_bf16(__nv_bfloat16 *p, float a, float b, float c, float d) {
#ifdef __CUDACC__
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 u;
    u.x = *reinterpret_cast<unsigned *>(&lo);
    u.y = *reinterpret_cast<unsigned *>(&hi);
    *reinterpret_cast<uint2 *>(p) = u;
#else  /* tools/m2_emu */
    p[0] = __float2bfloat16_rn(a); p[1] = __float2bfloat16_rn(b);
    p[2] = __float2bfloat16_rn(c); p[3] = __float2bfloat16_rn(d);
#endif
}

/* one row per block; ob: NULL, or out's bf16 rounding (a shadow or a kept
 * buffer, linear.cu), 8-byte aligned */
template <int NPT>
__global__ void __launch_bounds__(GN_THREADS)
    gnorm_fwd_reg_kernel(float *out, float *rstd, const float *y, const float *z, const float *w, int C, float eps,
                         __nv_bfloat16 *ob, int ldz) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C, offz = (size_t)blockIdx.x * ldz;
    int C4 = C / 4;
    float g[NPT][4];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        if (j < C4) {
            float4 yv = ld4(y + off + 4 * j), zv = ld4(z + offz + 4 * j);
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
            float o0 = g[i][0] * r * wv.x, o1 = g[i][1] * r * wv.y, o2 = g[i][2] * r * wv.z, o3 = g[i][3] * r * wv.w;
            st4(out + off + 4 * j, o0, o1, o2, o3);
            if (ob) st4_bf16(ob + off + 4 * j, o0, o1, o2, o3);
        }
    }
}

/* dg = r (dout w - g r m), m = mean(dout w g) r; dy = dg silu(z); dz = dg y silu'(z)
 * (acc 0: dy, dz overwritten, ops.h); part[blockIdx.x][C]: this block's rows'
 * sum of dout g r (NULL: dw not wanted); dzb: NULL, or the bf16 rounding of
 * what is stored in dz, laid out as dz (row stride ldz: the window of a packed
 * gradient's bf16 copy, linear.cu cuda_pack_claim); dzf 0 (with dzb, acc 0):
 * dz's fp32 not stored, only dzb (the pack's fp32 elided, linear.cu
 * cuda_pack_claim_only) */
template <int NPT>
__global__ void __launch_bounds__(GN_THREADS)
    gnorm_bwd_reg_kernel(float *dy, float *dz, float *part, const float *dout, const float *y, const float *z,
                         const float *w, const float *rstd, int N, int C, int acc, int ldz,
                         __nv_bfloat16 *dzb, int dzf = 1) {
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
        size_t off = (size_t)row * C, offz = (size_t)row * ldz;
        float r = rstd[row];
        float dv[NPT][4], yv[NPT][4], zv[NPT][4];
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < NPT; i++) {
            int j = threadIdx.x + i * GN_THREADS;
            if (j < C4) {
                float4 a = ld4(dout + off + 4 * j), b = ld4(y + off + 4 * j), c = ld4(z + offz + 4 * j);
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
                size_t k = off + 4 * j, kz = offz + 4 * j;
                if (dy) {
                    if (acc) { float4 o = ld4(dy + k); gy[0] += o.x; gy[1] += o.y; gy[2] += o.z; gy[3] += o.w; }
                    st4(dy + k, gy[0], gy[1], gy[2], gy[3]);
                }
                if (dz) {
                    if (acc) { float4 o = ld4(dz + kz); gz[0] += o.x; gz[1] += o.y; gz[2] += o.z; gz[3] += o.w; }
                    if (dzf) st4(dz + kz, gz[0], gz[1], gz[2], gz[3]);
                    if (dzb) st4_bf16(dzb + kz, gz[0], gz[1], gz[2], gz[3]);
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

/* ---- the backward with the next row in flight (default; FLOWHN_GNORM=old: the kernel above) ----
 * gnorm_bwd_reg_kernel ran 1024 blocks at 5 per SM (1.55 waves on the H200)
 * and had nothing in flight while a row went through its barriers and its
 * arithmetic. Here a fixed GN_BWD2_BLOCKS blocks (one wave at 4 per SM: 128
 * registers) each load row r + gridDim.x into registers before working on
 * row r, so every thread has a row's 9 float4 loads (C = 1536) outstanding
 * almost all the time. The same arithmetic per value as gnorm_bwd_reg_kernel;
 * dw partials per block as there. */
#define GN_BWD2_BLOCKS 512

/* one row's NPT float4 of p (zeros past C4) */
template <int NPT>
__device__ __forceinline__ void gn_load_row(float4 *d, const float *p, int C4) {
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        d[i] = j < C4 ? ld4(p + 4 * j) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
}
__device__ __forceinline__ float f4_at(const float4 &v, int q) { return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w; }

template <int NPT>
__global__ void __launch_bounds__(GN_THREADS, 4)
    gnorm_bwd_pipe_kernel(float *dy, float *dz, float *part, const float *dout, const float *y, const float *z,
                          const float *w, const float *rstd, int N, int C, int acc, int ldz,
                         __nv_bfloat16 *dzb, int dzf = 1) {
    __shared__ float sh[32];
    int C4 = C / 4;
    float4 wr[NPT];
    float pw[NPT][4];
    gn_load_row<NPT>(wr, w, C4);
#pragma unroll
    for (int i = 0; i < NPT; i++)
#pragma unroll
        for (int q = 0; q < 4; q++) pw[i][q] = 0.f;
    float4 dv[NPT], yv[NPT], zv[NPT];
    int row = blockIdx.x;
    float r = 0.f;
    if (row < N) {
        size_t off = (size_t)row * C;
        gn_load_row<NPT>(dv, dout + off, C4); gn_load_row<NPT>(yv, y + off, C4);
        gn_load_row<NPT>(zv, z + (size_t)row * ldz, C4);
        r = rstd[row];
    }
    for (; row < N; row += gridDim.x) {   /* the same trip count in every thread */
        int nxt = row + gridDim.x;
        float4 nd[NPT], ny[NPT], nz[NPT];
        float nr = 0.f;
        if (nxt < N) {   /* the next row's loads, in flight during this row's work */
            size_t off = (size_t)nxt * C;
            gn_load_row<NPT>(nd, dout + off, C4); gn_load_row<NPT>(ny, y + off, C4);
            gn_load_row<NPT>(nz, z + (size_t)nxt * ldz, C4);
            nr = rstd[nxt];
        }
        size_t off = (size_t)row * C, offz = (size_t)row * ldz;
        float dot = 0.f;   /* zeros past C4 add nothing */
#pragma unroll
        for (int i = 0; i < NPT; i++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                dot += f4_at(dv[i], q) * f4_at(wr[i], q) * gate_of(f4_at(yv[i], q), f4_at(zv[i], q));
        float m = block_sum(dot, sh) * r / C;
#pragma unroll
        for (int i = 0; i < NPT; i++) {
            int j = threadIdx.x + i * GN_THREADS;
            if (j < C4) {
                float gy[4], gz[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    float dq = f4_at(dv[i], q), yq = f4_at(yv[i], q), zq = f4_at(zv[i], q), s = sigmoidf_(zq);
                    float g = yq * (zq * s);
                    pw[i][q] += dq * g * r;
                    float dg = r * (dq * f4_at(wr[i], q) - g * r * m);
                    gy[q] = dg * zq * s;
                    gz[q] = dg * yq * s * (1.f + zq * (1.f - s));
                }
                size_t k = off + 4 * j, kz = offz + 4 * j;
                if (dy) {
                    if (acc) { float4 o = ld4(dy + k); gy[0] += o.x; gy[1] += o.y; gy[2] += o.z; gy[3] += o.w; }
                    st4(dy + k, gy[0], gy[1], gy[2], gy[3]);
                }
                if (dz) {
                    if (acc) { float4 o = ld4(dz + kz); gz[0] += o.x; gz[1] += o.y; gz[2] += o.z; gz[3] += o.w; }
                    if (dzf) st4(dz + kz, gz[0], gz[1], gz[2], gz[3]);
                    if (dzb) st4_bf16(dzb + kz, gz[0], gz[1], gz[2], gz[3]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < NPT; i++) { dv[i] = nd[i]; yv[i] = ny[i]; zv[i] = nz[i]; }
        r = nr;
    }
    if (!part) return;
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int j = threadIdx.x + i * GN_THREADS;
        if (j < C4) st4(part + (size_t)blockIdx.x * C + 4 * j, pw[i][0], pw[i][1], pw[i][2], pw[i][3]);
    }
}

/* dw[c] += sum over the nblk blocks of part[blk][c]: block (32 columns) x
 * (GN_FIN_ROWS lanes), lane t adding blocks t, t + GN_FIN_ROWS, ... (independent
 * loads, coalesced over the columns), the lanes then added in order: a fixed
 * order, and ~C/32 blocks instead of gnorm_dw_finish_kernel's C/256 blocks of
 * threads each walking all nblk partials one after the other */
#define GN_FIN_ROWS 16
__global__ void __launch_bounds__(32 * GN_FIN_ROWS)
    gnorm_dw_finish2_kernel(float *dw, const float *part, int nblk, int C) {
    __shared__ float sh[GN_FIN_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float t = 0.f;
    if (c < C)
        for (int i = threadIdx.y; i < nblk; i += GN_FIN_ROWS) t += part[(size_t)i * C + c];
    sh[threadIdx.y][threadIdx.x] = t;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float s = 0.f;
        for (int k = 0; k < GN_FIN_ROWS; k++) s += sh[k][threadIdx.x];
        dw[c] += s;
    }
}

#endif
