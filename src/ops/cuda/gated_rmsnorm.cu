/* gated_rmsnorm.cu - Mamba-2's norm after gate: g = y * silu(z),
 * out = g * rstd * w, rstd = 1/sqrt(mean(g^2) + eps).
 * The register-resident kernels (gated_rmsnorm_kernels.cuh) when C % 4 == 0,
 * C <= 4096 and the rows are 16-byte aligned; otherwise, or with
 * FLOWHN_M2_KERNELS=old (cuda_set_m2_kernels), the first ones below: one
 * block per row reading y and z twice, dw as a separate column pass.
 * Within the register kernels (branch elem-mamba, perf-notes): the forward
 * also writes out's bf16 rounding for the product that reads it (out_proj:
 * a shadow, or the kept buffer when the model keeps it for the backward), the
 * backward keeps the next row's loads in flight (gnorm_bwd_pipe_kernel, one
 * wave) and sums the dw partials with many independent loads
 * (gnorm_dw_finish2_kernel); FLOWHN_GNORM=old (cuda_set_gnorm_new) runs them
 * as before that: no rounding written, gnorm_bwd_reg_kernel, 1024 blocks,
 * gnorm_dw_finish_kernel. */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "gated_rmsnorm_kernels.cuh"

#define NORM_THREADS 256

__global__ void gated_rmsnorm_fwd_kernel(float *out, float *rstd, const float *y, const float *z,
                                         const float *w, int C, float eps, int ldz) {
    pdl_wait();   /* PDL in the decode graph only (common.cuh); a no-op in training's plain launches */
    pdl_trigger();
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C, offz = (size_t)blockIdx.x * ldz;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float g = gate_of(y[off + c], z[offz + c]);
        ss += g * g;
    }
    float r = rsqrtf(block_sum(ss, sh) / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x) out[off + c] = gate_of(y[off + c], z[offz + c]) * r * w[c];
}

/* dg = r (dout w - ghat mean(dout w ghat)); dy = dg silu(z); dz = dg y silu'(z) */
__global__ void gated_rmsnorm_bwd_kernel(float *dy, float *dz, const float *dout, const float *y,
                                         const float *z, const float *w, const float *rstd, int C, int acc,
                                         int ldz) {
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * C, offz = (size_t)blockIdx.x * ldz;
    float r = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dot += dout[off + c] * w[c] * gate_of(y[off + c], z[offz + c]);
    float m = block_sum(dot, sh) * r / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float yv = y[off + c], zv = z[offz + c], s = sigmoidf_(zv);
        float g = yv * (zv * s);
        float dg = r * (dout[off + c] * w[c] - g * r * m);
        float gy = dg * zv * s, gz = dg * yv * s * (1.f + zv * (1.f - s));
        if (dy) dy[off + c] = acc ? dy[off + c] + gy : gy;   /* acc 0: overwrite (ops.h) */
        if (dz) dz[offz + c] = acc ? dz[offz + c] + gz : gz;
    }
}

struct GatedDw {
    const float *dout, *y, *z, *rstd;
    int C, ldz;
    __device__ float operator()(int i, int c) const {
        size_t k = (size_t)i * C + c;
        return dout[k] * gate_of(y[k], z[(size_t)i * ldz + c]) * rstd[i];
    }
};

/* -1: not read yet; FLOWHN_GNORM=old: the register kernels as on main before
 * branch elem-mamba (cuda_ops.h) */
static int gnorm_new = -1;
int cuda_set_gnorm_new(int on) { return cuda_env_switch(&gnorm_new, "FLOWHN_GNORM", "old", 1, on); }

/* float4 units per thread for the register kernels; 0: not taken (z's row stride ldz must keep
 * every row 16-byte aligned too) */
static int gnorm_npt(int C, int ldz, const void *a, const void *b, const void *c, const void *d) {
    if (!cuda_set_m2_kernels(-1) || C <= 0 || C % 4 || ldz % 4 || C > 4 * GN_THREADS * 8) return 0;
    const void *p[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        if (p[i] && ((uintptr_t)p[i] & 15)) return 0;
    return (C / 4 + GN_THREADS - 1) / GN_THREADS;
}

#define GN_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)

void cuda_gated_rmsnorm_fwd(real *out, real *rstd, const real *y, const real *z, const real *w,
                            int N, int C, real eps, int ldz) {
    if (N <= 0) return;
    int npt = gnorm_npt(C, ldz, out, y, z, w);
    bool pdl = cuda_weights_frozen();
    size_t n = (size_t)N * C;
    /* out's bf16 rounding, for the register kernels (8-byte stores: C % 4 == 0 and a
     * shadow or kept buffer is 256-byte aligned) */
    __nv_bfloat16 *ob = NULL;
    int declare = npt && cuda_set_gnorm_new(-1);   /* FLOWHN_GNORM=old: the launch retires every rounding, as before */
    if (declare) {
        /* a claim is filled (cuda_shadow_done makes it current): shadows and kept buffers are
         * cudaMalloc'ed, 256-byte aligned, so row starts (C % 4 == 0) are 8-byte aligned */
        ob = (__nv_bfloat16 *)cuda_shadow_claim(out, n);
    }
    unsigned long before = cuda_epoch;
    switch (npt) {
#define GN_FWD(k) \
    case k: cuda_launch(pdl, gnorm_fwd_reg_kernel<k>, dim3(N), dim3(GN_THREADS), 0, out, rstd, y, z, w, C, eps, ob, ldz); break;
        GN_CASES(GN_FWD)
#undef GN_FWD
    default:
        cuda_launch(pdl, gated_rmsnorm_fwd_kernel, dim3(N), dim3(NORM_THREADS), 0, out, rstd, y, z, w, C, eps, ldz);
    }
    /* every range written (linear.cu: roundings of other sources stay valid, a claimed one becomes current) */
    if (declare) {
        CudaRange wr[3] = {{out, n * sizeof(float)}, {rstd, (size_t)N * sizeof(float)}, {ob, ob ? n * 2 : 0}};
        cuda_shadow_done(before, wr, 3);
    }
}

/* the backward's blocks: enough rows in flight for the H200 (132 SMs x 8
 * blocks of 128 threads), few enough that the dw partials stay small
 * (1024 x C floats, summed in ~2 us); a fixed number, so the sum's order
 * does not depend on the device */
#define GN_BWD_BLOCKS 1024

void cuda_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y,
                            const real *z, const real *w, const real *rstd, int N, int C, int acc, int ldz) {
    if (N <= 0) return;
    int npt = gnorm_npt(C, ldz, dout, y, z, w);
    if (npt && ((dy && ((uintptr_t)dy & 15)) || (dz && ((uintptr_t)dz & 15)))) npt = 0;
    if (npt && cuda_set_gnorm_new(-1)) {
        /* the pipelined kernel up to 3 float4 per thread (C <= 1536: 127 registers, no spills; 4 took it to
         * 168 bytes of spills), the row kernel beyond; both with the parallel dw sum */
        int pipe = npt <= 3, cap = pipe ? GN_BWD2_BLOCKS : GN_BWD_BLOCKS;
        int nblk = N < cap ? N : cap;
        float *part = NULL;
        if (dw && !(part = cuda_colsum_scratch((size_t)nblk * C))) return;
        /* claimed after the scratch (which may allocate): dz a window of a declared pack (Ops.pack_bf16); its
         * fp32 not stored when the pack was marked bf16-only and dz is overwritten (cuda_pack_claim_only) */
        int skip = 0;
        __nv_bfloat16 *dzb = dz ? (__nv_bfloat16 *)cuda_pack_claim_only(dz, N, C, ldz, acc, &skip) : NULL;
        int dzf = !skip;
        switch (npt) {
#define GN_BWD(k) \
    case k: \
        gnorm_bwd_pipe_kernel<k><<<nblk, GN_THREADS, 0, cuda_stream()>>>(dy, dz, part, dout, y, z, w, rstd, N, C, acc, ldz, dzb, dzf); \
        break;
#define GN_BWD_REG(k) \
    case k: \
        gnorm_bwd_reg_kernel<k><<<nblk, GN_THREADS, 0, cuda_stream()>>>(dy, dz, part, dout, y, z, w, rstd, N, C, acc, ldz, dzb, dzf); \
        break;
            GN_BWD(1) GN_BWD(2) GN_BWD(3) GN_BWD_REG(4) GN_BWD_REG(5) GN_BWD_REG(6) GN_BWD_REG(7) GN_BWD_REG(8)
#undef GN_BWD
#undef GN_BWD_REG
        }
        CUDA_LAUNCHED();
        if (dzb) cuda_pack_done();
        if (part) {
            gnorm_dw_finish2_kernel<<<(C + 31) / 32, dim3(32, GN_FIN_ROWS), 0, cuda_stream()>>>(dw, part, nblk, C);
            CUDA_LAUNCHED();
        }
        return;
    }
    if (npt) {   /* FLOWHN_GNORM=old */
        int nblk = N < GN_BWD_BLOCKS ? N : GN_BWD_BLOCKS;
        float *part = NULL;
        if (dw && !(part = cuda_colsum_scratch((size_t)nblk * C))) return;
        /* claimed after the scratch (which may allocate): dz a window of a declared pack (Ops.pack_bf16); its
         * fp32 not stored when the pack was marked bf16-only and dz is overwritten (cuda_pack_claim_only) */
        int skip = 0;
        __nv_bfloat16 *dzb = dz ? (__nv_bfloat16 *)cuda_pack_claim_only(dz, N, C, ldz, acc, &skip) : NULL;
        int dzf = !skip;
        switch (npt) {
#define GN_BWD(k) \
    case k: \
        gnorm_bwd_reg_kernel<k><<<nblk, GN_THREADS, 0, cuda_stream()>>>(dy, dz, part, dout, y, z, w, rstd, N, C, acc, ldz, dzb, dzf); \
        break;
            GN_CASES(GN_BWD)
#undef GN_BWD
        }
        CUDA_LAUNCHED();
        if (dzb) cuda_pack_done();
        if (part) {
            gnorm_dw_finish_kernel<<<(C + 255) / 256, 256, 0, cuda_stream()>>>(dw, part, nblk, C);
            CUDA_LAUNCHED();
        }
        return;
    }
    if (dy || dz) {
        gated_rmsnorm_bwd_kernel<<<N, NORM_THREADS, 0, cuda_stream()>>>(dy, dz, dout, y, z, w, rstd, C, acc, ldz);
        CUDA_LAUNCHED();
    }
    if (dw) colsum(dw, 1, N, C, GatedDw{dout, y, z, rstd, C, ldz});
}
