/* adamw.cu - the AdamW update and the squared gradient norm (contracts in ops.h).
 * Both are single passes over memory. The bias corrections are formed in
 * double on the host, and m/bc1, v/bc2 divided in double, as the CPU does.
 * While the parameters are trained with bf16 products, the update also writes
 * each new parameter's bf16 rounding into the trained weights' copy
 * (linear.cu, Ops.train_weights), which the products of the next step read:
 * 2 bytes more written per parameter instead of a rounding pass per product. */
#include <math.h>
#include <stdint.h>

#include "common.cuh"
#include "matmul.cuh"

#define OPT_THREADS 256
#define SS_BLOCKS 1024 /* partial sums of sum_squares: one per block */

/* One parameter's update: the CPU op's arithmetic, every operation rounded
 * on its own (__fmul_rn/__fadd_rn: no FMA contraction). Pinned so that every
 * kernel below gives the same bits whatever the compiler would fuse in its
 * context: the copy-writing and plain updates, scalar heads and float4 bodies
 * (test_master requires equal gradients to update equally; session 8 call 1
 * saw them differ when the contraction was left to the compiler). */
__device__ __forceinline__ float adamw_val(float p, float g, float &m, float &v, float lr, float beta1, float beta2,
                                           float eps, float wd, float grad_scale, double bc1, double bc2) {
    float gi = __fmul_rn(g, grad_scale);
    float mi = __fadd_rn(__fmul_rn(beta1, m), __fmul_rn(1.f - beta1, gi));
    float vi = __fadd_rn(__fmul_rn(beta2, v), __fmul_rn(__fmul_rn(1.f - beta2, gi), gi));
    m = mi;
    v = vi;
    float mhat = (float)(mi / bc1), vhat = (float)(vi / bc2);
    float step = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(sqrtf(vhat), eps)), __fmul_rn(wd, p));
    return __fsub_rn(p, __fmul_rn(lr, step));
}

/* adamw_val on element i in place; returns the new value */
__device__ __forceinline__ float adamw_one(float *p, const float *g, float *m, float *v, size_t i, float lr,
                                           float beta1, float beta2, float eps, float wd, float grad_scale, double bc1,
                                           double bc2) {
    float mi = m[i], vi = v[i];
    float x = adamw_val(p[i], g[i], mi, vi, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
    m[i] = mi;
    v[i] = vi;
    p[i] = x;
    return x;
}

__device__ __forceinline__ void adamw_range(float *p, const float *g, float *m, float *v, size_t n, float lr,
                                            float beta1, float beta2, float eps, float wd, float grad_scale,
                                            double bc1, double bc2) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        adamw_one(p, g, m, v, i, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}

/* The same update writing the bf16 copy too (round to nearest even, as
 * linear.cu rounds): block row y takes tensor w.t0 + y's piece of [0, n),
 * whose values sit at the tensor's own place in the copy (matmul.cuh). */
__device__ __forceinline__ void adamw_range_copy(float *p, const WeightsCopy &w, const float *g, float *m, float *v,
                                                 size_t n, float lr, float beta1, float beta2, float eps, float wd,
                                                 float grad_scale, double bc1, double bc2) {
    int t = w.t0 + blockIdx.y;
    size_t start = w.tab[t], end = w.tab[t + 1];   /* the tensor, as buffer offsets (end > a) */
    size_t lo = start > w.a ? start - w.a : 0, hi = end - w.a < n ? end - w.a : n;
    __nv_bfloat16 *dst = w.bf + w.tab[w.nseg + 1 + t];   /* the tensor's first value */
    for (size_t i = lo + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < hi; i += (size_t)gridDim.x * blockDim.x) {
        float x = adamw_one(p, g, m, v, i, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        dst[w.a + i - start] = __float2bfloat16_rn(x);   /* element i is the tensor's (a + i - start)th */
    }
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                             float beta2, float eps, float wd, float grad_scale, double bc1, double bc2) {
    adamw_range(p, g, m, v, n, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}
__global__ void adamw_copy_kernel(float *p, WeightsCopy w, const float *g, float *m, float *v, size_t n, float lr,
                                  float beta1, float beta2, float eps, float wd, float grad_scale, double bc1,
                                  double bc2) {
    adamw_range_copy(p, w, g, m, v, n, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}

/* the same update with lr, scale and bias corrections read from device memory
 * (written by the host before the step and by step_scale_kernel in it) */
__global__ void adamw_step_kernel(float *p, const float *g, float *m, float *v, size_t n, const StepScalars *s,
                                  float beta1, float beta2, float eps, float wd) {
    if (!s->ok) return;
    adamw_range(p, g, m, v, n, s->lr, beta1, beta2, eps, wd, s->scale, s->bc1, s->bc2);
}
__global__ void adamw_step_copy_kernel(float *p, WeightsCopy w, const float *g, float *m, float *v, size_t n,
                                       const StepScalars *s, float beta1, float beta2, float eps, float wd) {
    if (!s->ok) return;   /* nothing written: the copy stays the rounding of the unchanged parameters */
    adamw_range_copy(p, w, g, m, v, n, s->lr, beta1, beta2, eps, wd, s->scale, s->bc1, s->bc2);
}

/* ---- float4 updates (perf-notes, elem-llama; FLOWHN_ELEM=old: the kernels above) ----
 * The kernels above keep 4 scalar loads (16 bytes) in flight a thread: 1.66x
 * the update's 30 bytes a parameter at 4 TB/s on the H200. These move p, g, m
 * and v as float4s (64 bytes in flight a thread) and the copy's values as
 * 8-byte stores, with adamw_one's arithmetic per element (the same bits).
 * A piece [lo, hi) is cut into a scalar head up to p's first 16-byte
 * boundary, float4s, and a scalar tail; the caller checks that g, m, v share
 * p's alignment. The copy is written by 8-byte stores where the element at
 * the first boundary falls on an 8-byte boundary of the copy, else (never for
 * tensors of 4k parameters) by 2-byte ones. */
/* [lo, hi) of p, g, m, v; dst (NULL: no copy) the copy's place of element lo; threads t of nt */
__device__ __forceinline__ void adamw_piece4(float *p, const float *g, float *m, float *v, __nv_bfloat16 *dst,
                                             size_t lo, size_t hi, size_t t, size_t nt, float lr, float beta1,
                                             float beta2, float eps, float wd, float grad_scale, double bc1,
                                             double bc2) {
    if (hi <= lo) return;
    size_t head = ((16 - ((uintptr_t)(p + lo) & 15)) & 15) / 4;
    if (head > hi - lo) head = hi - lo;
    size_t a4 = lo + head, n4 = (hi - a4) / 4, e4 = a4 + 4 * n4;
    int vec_bf = !dst || !((uintptr_t)(dst + head) & 7);
    /* the scalar elements: the head [lo, a4) and the tail [e4, hi), < 8 in all */
    if (t < head + (hi - e4)) {
        size_t i = t < head ? lo + t : e4 + (t - head);
        float x = adamw_one(p, g, m, v, i, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        if (dst) dst[i - lo] = __float2bfloat16_rn(x);
    }
    float4 *p4 = reinterpret_cast<float4 *>(p + a4), *m4 = reinterpret_cast<float4 *>(m + a4),
           *v4 = reinterpret_cast<float4 *>(v + a4);
    const float4 *g4 = reinterpret_cast<const float4 *>(g + a4);
    for (size_t k = t; k < n4; k += nt) {
        float4 pp = p4[k], gg = g4[k], mm = m4[k], vv = v4[k];
        pp.x = adamw_val(pp.x, gg.x, mm.x, vv.x, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        pp.y = adamw_val(pp.y, gg.y, mm.y, vv.y, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        pp.z = adamw_val(pp.z, gg.z, mm.z, vv.z, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        pp.w = adamw_val(pp.w, gg.w, mm.w, vv.w, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
        p4[k] = pp;
        m4[k] = mm;
        v4[k] = vv;
        if (dst) {
            __nv_bfloat16 *d = dst + head + 4 * k;
            __nv_bfloat162 lo2 = __floats2bfloat162_rn(pp.x, pp.y), hi2 = __floats2bfloat162_rn(pp.z, pp.w);
            if (vec_bf) {
                uint2 u;
                u.x = *reinterpret_cast<unsigned int *>(&lo2);
                u.y = *reinterpret_cast<unsigned int *>(&hi2);
                *reinterpret_cast<uint2 *>(d) = u;
            } else {
                d[0] = lo2.x; d[1] = lo2.y; d[2] = hi2.x; d[3] = hi2.y;
            }
        }
    }
}

__device__ __forceinline__ void adamw_range4(float *p, const float *g, float *m, float *v, size_t n, float lr,
                                             float beta1, float beta2, float eps, float wd, float grad_scale,
                                             double bc1, double bc2) {
    adamw_piece4(p, g, m, v, NULL, 0, n, blockIdx.x * (size_t)blockDim.x + threadIdx.x,
                 (size_t)gridDim.x * blockDim.x, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}
/* block row y: tensor w.t0 + y's piece, as adamw_range_copy */
__device__ __forceinline__ void adamw_range_copy4(float *p, const WeightsCopy &w, const float *g, float *m, float *v,
                                                  size_t n, float lr, float beta1, float beta2, float eps, float wd,
                                                  float grad_scale, double bc1, double bc2) {
    int t = w.t0 + blockIdx.y;
    size_t start = w.tab[t], end = w.tab[t + 1];
    size_t lo = start > w.a ? start - w.a : 0, hi = end - w.a < n ? end - w.a : n;
    __nv_bfloat16 *dst = w.bf + w.tab[w.nseg + 1 + t] + (w.a + lo - start);   /* element lo's place */
    adamw_piece4(p, g, m, v, dst, lo, hi, blockIdx.x * (size_t)blockDim.x + threadIdx.x,
                 (size_t)gridDim.x * blockDim.x, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}

__global__ void adamw4_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                              float beta2, float eps, float wd, float grad_scale, double bc1, double bc2) {
    adamw_range4(p, g, m, v, n, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}
__global__ void adamw4_copy_kernel(float *p, WeightsCopy w, const float *g, float *m, float *v, size_t n, float lr,
                                   float beta1, float beta2, float eps, float wd, float grad_scale, double bc1,
                                   double bc2) {
    adamw_range_copy4(p, w, g, m, v, n, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}
__global__ void adamw4_step_kernel(float *p, const float *g, float *m, float *v, size_t n, const StepScalars *s,
                                   float beta1, float beta2, float eps, float wd) {
    if (!s->ok) return;
    adamw_range4(p, g, m, v, n, s->lr, beta1, beta2, eps, wd, s->scale, s->bc1, s->bc2);
}
__global__ void adamw4_step_copy_kernel(float *p, WeightsCopy w, const float *g, float *m, float *v, size_t n,
                                        const StepScalars *s, float beta1, float beta2, float eps, float wd) {
    if (!s->ok) return;
    adamw_range_copy4(p, w, g, m, v, n, s->lr, beta1, beta2, eps, wd, s->scale, s->bc1, s->bc2);
}

/* the float4 kernels serve: not FLOWHN_ELEM=old, and g, m, v at p's offset
 * within 16 bytes (the model's buffers are one cudaMalloc each, the tensors at
 * the same offsets in all four) */
static int adamw4_ok(const float *p, const float *g, const float *m, const float *v) {
    uintptr_t a = (uintptr_t)p & 15;
    return !cuda_set_elem_old(-1) && ((uintptr_t)g & 15) == a && ((uintptr_t)m & 15) == a &&
           ((uintptr_t)v & 15) == a;
}
/* grids: a thread a float4 (the scalar head and tail ride on the first threads) */
static unsigned int grid4(size_t n) { return grid_for(n / 4 + 8, OPT_THREADS); }
static dim3 copy_grid4(const WeightsCopy &w) {
    return weights_copy_grid(w.longest / 4 + 8, w.t1 - w.t0 + 1, OPT_THREADS);
}

/* the grid of a copy-writing update: a row of blocks per tensor met */
static dim3 copy_grid(const WeightsCopy &w) { return weights_copy_grid(w.longest, w.t1 - w.t0 + 1, OPT_THREADS); }

void cuda_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1, real beta2,
                     real eps, real wd) {
    if (n == 0) return;
    WeightsCopy w;
    int copy = cuda_weights_adamw(p, n, &w);
    if (adamw4_ok(p, g, m, v)) {
        if (copy)
            adamw4_step_copy_kernel<<<copy_grid4(w), OPT_THREADS, 0, cuda_stream()>>>(p, w, g, m, v, n, s, beta1,
                                                                                     beta2, eps, wd);
        else
            adamw4_step_kernel<<<grid4(n), OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, n, s, beta1, beta2, eps, wd);
    } else if (copy)
        adamw_step_copy_kernel<<<copy_grid(w), OPT_THREADS, 0, cuda_stream()>>>(p, w, g, m, v, n, s, beta1, beta2,
                                                                                eps, wd);
    else
        adamw_step_kernel<<<grid_for(n, OPT_THREADS), OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, n, s, beta1, beta2,
                                                                                     eps, wd);
    CUDA_LAUNCHED();
}

void cuda_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2, real eps,
                real wd, real grad_scale, int step) {
    if (n == 0) return;
    double bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
    WeightsCopy w;
    int copy = cuda_weights_adamw(p, n, &w);
    if (adamw4_ok(p, g, m, v)) {
        if (copy)
            adamw4_copy_kernel<<<copy_grid4(w), OPT_THREADS, 0, cuda_stream()>>>(p, w, g, m, v, n, lr, beta1, beta2,
                                                                                eps, wd, grad_scale, bc1, bc2);
        else
            adamw4_kernel<<<grid4(n), OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd,
                                                                      grad_scale, bc1, bc2);
    } else if (copy)
        adamw_copy_kernel<<<copy_grid(w), OPT_THREADS, 0, cuda_stream()>>>(p, w, g, m, v, n, lr, beta1, beta2, eps, wd,
                                                                           grad_scale, bc1, bc2);
    else
        adamw_kernel<<<grid_for(n, OPT_THREADS), OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, n, lr, beta1, beta2, eps,
                                                                                wd, grad_scale, bc1, bc2);
    CUDA_LAUNCHED();
}

/* Double-precision block sums, then one block adds the partials in a fixed
 * order: deterministic, and NaN/Inf propagate to the result as on the CPU. */
__device__ double block_sum_d(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}

template <bool SQ>
__global__ void sum_squares_kernel(double *partial, const float *x, size_t n) {
    __shared__ double sh[OPT_THREADS];
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += SQ ? (double)x[i] * x[i] : (double)x[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* The float4 sum (FLOWHN_ELEM=old: the kernel above): the one above keeps one
 * 4-byte load in flight a thread, ~8 blocks an SM: ~8 KB an SM in flight, ~2x
 * its byte bound. Here two float4s a thread an iteration (32 bytes), x
 * 16-byte aligned (checked by the caller); the < 4 elements past the last
 * float4 go to the first threads. Each thread's partial in double as above;
 * the order is another fixed one (the result differs from the first kernel's
 * in the last bits only: both add in double). */
template <bool SQ>
__global__ void sum_squares4_kernel(double *partial, const float *x, size_t n) {
    __shared__ double sh[OPT_THREADS];
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    size_t n4 = n / 4, t = blockIdx.x * (size_t)blockDim.x + threadIdx.x, nt = (size_t)gridDim.x * blockDim.x;
    double s = 0;
    size_t i = t;
    for (; i + nt < n4; i += 2 * nt) {   /* two independent loads in flight */
        float4 a = x4[i], b = x4[i + nt];
        if (SQ)
            s += (double)a.x * a.x + (double)a.y * a.y + (double)a.z * a.z + (double)a.w * a.w +
                 ((double)b.x * b.x + (double)b.y * b.y + (double)b.z * b.z + (double)b.w * b.w);
        else
            s += (double)a.x + a.y + a.z + a.w + ((double)b.x + b.y + b.z + b.w);
    }
    if (i < n4) {
        float4 a = x4[i];
        if (SQ) s += (double)a.x * a.x + (double)a.y * a.y + (double)a.z * a.z + (double)a.w * a.w;
        else s += (double)a.x + a.y + a.z + a.w;
    }
    if (t < n - 4 * n4) {
        double e = x[4 * n4 + t];
        s += SQ ? e * e : e;
    }
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double *out, const double *partial, int nb) {
    __shared__ double sh[OPT_THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) s += partial[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) out[0] = s;
}

/* the SS_BLOCKS partials, allocated once (before any graph capture: the first
 * eager step's sum_squares or sum_into makes it) */
static double *ss_scratch(void) {
    static double *scratch;
    if (!scratch && cudaMalloc(&scratch, sizeof(double) * (SS_BLOCKS + 1)) != cudaSuccess) {
        scratch = NULL;
        cuda_record_error("cudaMalloc", "cannot allocate the sum_squares scratch", __FILE__, __LINE__);
    }
    return scratch;
}

/* the sum into out (device), no host copy: capturable */
void cuda_sum_into(double *out, const real *x, size_t n, int squares) {
    double *partial = ss_scratch();
    if (!partial) return;
    if (n == 0) { CUDA_CALL(cudaMemsetAsync(out, 0, sizeof(double), cuda_stream())); return; }
    unsigned int nb = blocks_for(n, OPT_THREADS);
    if (nb > SS_BLOCKS) nb = SS_BLOCKS;
    if (!cuda_set_elem_old(-1) && !((uintptr_t)x & 15)) {   /* the float4 kernel: a thread 2 float4s at a time */
        nb = blocks_for(n / 8 + 1, OPT_THREADS);
        if (nb > SS_BLOCKS) nb = SS_BLOCKS;
        if (squares) sum_squares4_kernel<true><<<nb, OPT_THREADS, 0, cuda_stream()>>>(partial, x, n);
        else sum_squares4_kernel<false><<<nb, OPT_THREADS, 0, cuda_stream()>>>(partial, x, n);
    } else if (squares) sum_squares_kernel<true><<<nb, OPT_THREADS, 0, cuda_stream()>>>(partial, x, n);
    else sum_squares_kernel<false><<<nb, OPT_THREADS, 0, cuda_stream()>>>(partial, x, n);
    CUDA_LAUNCHED();
    sum_partials_kernel<<<1, OPT_THREADS, 0, cuda_stream()>>>(out, partial, (int)nb);
    CUDA_LAUNCHED();
}

double cuda_sum_squares(const real *x, size_t n) {
    if (n == 0) return 0;
    double *scratch = ss_scratch();
    if (!scratch) return NAN;
    cuda_sum_into(scratch + SS_BLOCKS, x, n, 1);
    double s = NAN;
    CUDA_CALL(cudaMemcpy(&s, scratch + SS_BLOCKS, sizeof s, cudaMemcpyDeviceToHost));
    return s;
}

/* optimizer_apply's clipping on the device, in double as the host does it */
__global__ void step_scale_kernel(StepScalars *s) {
    s->ok = isfinite(s->loss_sum) && isfinite(s->sumsq);
    double norm = sqrt(s->sumsq) * s->grad_scale, scale = s->grad_scale;
    if (s->clip > 0 && norm > s->clip) scale *= s->clip / norm;
    s->scale = (float)scale;
}

void cuda_step_scale(StepScalars *s) {
    step_scale_kernel<<<1, 1, 0, cuda_stream()>>>(s);
    CUDA_LAUNCHED();
}
