/* rope.cu - rotary position embedding, rotate-half convention (HF LLaMA):
 * pair (i, i+hd/2), frequency theta^(-2i/hd) at position p:
 *   out_i = x_i cos - x_{i+h} sin,  out_{i+h} = x_{i+h} cos + x_i sin.
 * The backward is the rotation by -angle, overwriting or accumulating (ops.h acc). The angle and its
 * cos/sin are taken in double, as the CPU oracle does: at positions in the
 * thousands a float angle would be off by ~1e-4 radians. Double pow/cos/sin
 * are slow, and every (batch, head) repeats the same angles, so a first
 * kernel tabulates (cos, sin) per (token, pair) — n * hd/2 entries — and the
 * rotation reads the table (a few hundred KB, L2-resident). An odd head_dim
 * leaves its last channel unrotated.
 * The backward's dx is the dout of the q and k products: with bf16 products
 * its rounding is written too (common.cuh cuda_shadow_claim). */
#include <cuda_bf16.h>

#include "attention.cuh"

__global__ void rope_table_kernel(float2 *cs, const int *pos, int n, int half, int hd, float theta) {
    int total = n * half;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        int t = idx / half, i = idx % half;
        double ang = pos[t] * pow((double)theta, -2.0 * i / hd);
        cs[idx] = make_float2((float)cos(ang), (float)sin(ang));
    }
}

void cuda_rope_table(float2 *cs, const int *pos, int n, int hd, float theta) {
    int half = hd / 2;
    if (n <= 0 || half <= 0) return;
    rope_table_kernel<<<grid_for((size_t)n * half, 256), 256, 0, cuda_stream()>>>(cs, pos, n, half, hd, theta);
    CUDA_LAUNCHED();
}

/* ob: NULL, or out's bf16 shadow: the rounding of each value stored */
__global__ void rope_kernel(float *out, const float *x, const float2 *cs, int B, int n, int nh, int hd, float sign,
                            int accumulate, __nv_bfloat16 *ob) {
    int half = hd / 2, pairs = half + (hd & 1);  /* the odd channel is a "pair" passed through */
    size_t total = (size_t)B * n * nh * pairs;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % pairs);
        size_t bth = idx / pairs;  /* (b*n + t)*nh + h */
        int t = (int)((bth / nh) % n);
        size_t base = bth * hd;
        if (i == half) {  /* odd head_dim: last channel unrotated */
            size_t k = base + hd - 1;
            float o = accumulate ? out[k] + x[k] : x[k];
            out[k] = o;
            if (ob) ob[k] = __float2bfloat16_rn(o);
            continue;
        }
        float2 r = cs[(size_t)t * half + i];
        float c = r.x, s = sign * r.y;
        float x0 = x[base + i], x1 = x[base + i + half];
        float o0 = x0 * c - x1 * s, o1 = x1 * c + x0 * s;
        if (accumulate) { o0 = out[base + i] + o0; o1 = out[base + i + half] + o1; }
        out[base + i] = o0;
        out[base + i + half] = o1;
        if (ob) {
            ob[base + i] = __float2bfloat16_rn(o0);
            ob[base + i + half] = __float2bfloat16_rn(o1);
        }
    }
}

/* the (cos, sin) table, one per branch (branches may rotate at the same time) */
static BranchScratch table_scratch;

static void rope(float *out, const float *x, const int *pos, int B, int n, int nh, int hd, float theta,
                 float sign, int accumulate) {
    int half = hd / 2;
    size_t total = (size_t)B * n * nh * (half + (hd & 1));
    if (!total || !out) return;
    float2 *table = (float2 *)cuda_branch_scratch(&table_scratch, sizeof(float2) * n * (half ? half : 1),
                                                  "the RoPE table");
    if (!table) return;
    size_t nout = (size_t)B * n * nh * hd;
    __nv_bfloat16 *ob = sign < 0.f ? (__nv_bfloat16 *)cuda_shadow_claim(out, nout) : NULL;   /* the backward only */
    unsigned long before = cuda_epoch;
    if (half) {
        rope_table_kernel<<<grid_for((size_t)n * half, 256), 256, 0, cuda_stream()>>>(table, pos, n, half, hd,
                                                                                      theta);
        CUDA_LAUNCHED();
    }
    rope_kernel<<<grid_for(total, 256), 256, 0, cuda_stream()>>>(out, x, table, B, n, nh, hd, sign, accumulate, ob);
    CUDA_LAUNCHED();
    CudaRange wr[3] = {{table, half ? sizeof(float2) * n * half : 0}, {out, nout * sizeof(float)},
                       {ob, ob ? nout * 2 : 0}};
    cuda_shadow_done(before, wr, 3);
}

void cuda_rope_fwd(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta) {
    rope(out, x, pos, B, n, nh, hd, theta, 1.f, 0);
}
void cuda_rope_bwd(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta, int acc) {
    rope(dx, dout, pos, B, n, nh, hd, theta, -1.f, acc);
}

/* rope_append_at (ops.h "fused decode ops"): a decode step's RoPE of q and k
 * and its KV-cache append in one launch, where the composition is five (two
 * table + rotation pairs, two row copies). One block per sequence: its first
 * threads tabulate the position's (cos, sin) in shared memory with
 * rope_table_kernel's expression (the same bits), then the block rotates the
 * nh query heads into qr and the nkv key heads straight into cache row row[0],
 * and copies v into the V cache's row. kr (the composition's scratch) is not
 * written. */
__global__ void rope_append_kernel(float *qr, float *K, float *V, const float *q, const float *k, const float *v,
                                   const int *pos, const int *row, int ld, int nh, int nkv, int hd, float theta) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    extern __shared__ float2 cs[];
    int b = blockIdx.x, half = hd / 2, pairs = half + (hd & 1), kvd = nkv * hd;
    int p = pos[0];
    size_t crow = (size_t)b * ld + (size_t)row[0] * kvd;   /* this sequence's cache row */
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double ang = p * pow((double)theta, -2.0 * i / hd);
        cs[i] = make_float2((float)cos(ang), (float)sin(ang));
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) V[crow + i] = v[(size_t)b * kvd + i];
    __syncthreads();
    for (int idx = threadIdx.x; idx < (nh + nkv) * pairs; idx += blockDim.x) {
        int h = idx / pairs, i = idx % pairs;
        const float *x = h < nh ? q + ((size_t)b * nh + h) * hd : k + ((size_t)b * nkv + (h - nh)) * hd;
        float *o = h < nh ? qr + ((size_t)b * nh + h) * hd : K + crow + (size_t)(h - nh) * hd;
        if (i == half) {   /* odd head_dim: last channel unrotated */
            o[hd - 1] = x[hd - 1];
            continue;
        }
        float c = cs[i].x, s = cs[i].y;
        float x0 = x[i], x1 = x[i + half];
        o[i] = x0 * c - x1 * s;
        o[i + half] = x1 * c + x0 * s;
    }
}

void cuda_rope_append_at(real *qr, real *K, real *V, real *kr, const real *q, const real *k, const real *v,
                         const int *pos, const int *row, int B, int ld, int nh, int nkv, int hd, real theta) {
    if (B <= 0 || hd <= 0) return;
    size_t smem = sizeof(float2) * (hd / 2 ? hd / 2 : 1);
    cuda_launch(true, rope_append_kernel, dim3(B), dim3(256), smem, qr, K, V, q, k, v, pos, row, ld, nh, nkv, hd, theta);
}
