/* adamw.cu - the AdamW update and the squared gradient norm (contracts in ops.h).
 * Both are single passes over memory. The bias corrections are formed in
 * double on the host, and m/bc1, v/bc2 divided in double, as the CPU does.
 * While the parameters are trained with bf16 products, the update also writes
 * each new parameter's bf16 rounding into the trained weights' copy
 * (linear.cu, Ops.train_weights), which the products of the next step read:
 * 2 bytes more written per parameter instead of a rounding pass per product. */
#include <math.h>

#include "common.cuh"
#include "matmul.cuh"

#define OPT_THREADS 256
#define SS_BLOCKS 1024 /* partial sums of sum_squares: one per block */

/* one parameter's update, the CPU op's arithmetic; returns the new value */
__device__ __forceinline__ float adamw_one(float *p, const float *g, float *m, float *v, size_t i, float lr,
                                           float beta1, float beta2, float eps, float wd, float grad_scale, double bc1,
                                           double bc2) {
    float gi = g[i] * grad_scale;
    float mi = beta1 * m[i] + (1.f - beta1) * gi;
    float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float mhat = (float)(mi / bc1), vhat = (float)(vi / bc2);
    p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    return p[i];
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

/* the grid of a copy-writing update: a row of blocks per tensor met */
static dim3 copy_grid(const WeightsCopy &w) { return weights_copy_grid(w.longest, w.t1 - w.t0 + 1, OPT_THREADS); }

void cuda_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1, real beta2,
                     real eps, real wd) {
    if (n == 0) return;
    WeightsCopy w;
    if (cuda_weights_adamw(p, n, &w))
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
    if (cuda_weights_adamw(p, n, &w))
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
    if (squares) sum_squares_kernel<true><<<nb, OPT_THREADS, 0, cuda_stream()>>>(partial, x, n);
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
