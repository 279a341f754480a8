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

/* ---- every run in one launch (Ops.adamw_runs; perf-notes, adamw-mt; FLOWHN_ADAMW=old: a launch a run) ----
 * A launch a run made 22 launches a step at llama-135m: 10 of them for one
 * 768-value norm each, the others each with a ramp and a ragged last wave, and
 * the copy-writing grid's rows for short tensors mostly empty blocks. Here
 * [p, p + n) is cut into segments (the runs, cut again at the copy's tensor
 * starts: each tensor has its own place in the copy), and the elements are
 * grouped into items of MT_ITEM on a grid aligned to p's 16-byte boundaries
 * (item c: elements [c MT_ITEM - h0, (c + 1) MT_ITEM - h0), h0 = p's offset
 * in floats within 16 bytes) and cut at segment ends, so only a segment's
 * first and last pieces have a scalar head or tail. The segment table goes by
 * value (nothing to allocate or copy, so nothing to do before a graph
 * capture); a persistent grid (SMs x resident blocks) walks the items, a
 * block finding its item's segment by a binary search over the table's first
 * items. Each piece is adamw_piece4: the arithmetic, bits and copy stores of
 * the float4 kernels above. */
#define MT_ITEM 2048   /* elements an item: 2 float4s a thread of 256 */
#define MT_SEGS 150    /* segments a launch: 24 bytes each, the table within the 4 KB of kernel parameters */
struct MtSeg {
    size_t start;        /* first element, from p */
    size_t dst;          /* the copy's place of element start (no copy: unused) */
    unsigned int item0;  /* the launch's index of the segment's first item */
    float wd;            /* the run's weight decay, or 0 */
};
struct MtTable {
    MtSeg seg[MT_SEGS + 1];   /* seg[nseg]: start = the last segment's end, item0 = the launch's items */
    int nseg;
    unsigned int h0;
};

template <bool STEP>
__global__ void __launch_bounds__(OPT_THREADS)
    adamw_mt_kernel(float *p, const float *g, float *m, float *v, __nv_bfloat16 *bf, const __grid_constant__ MtTable tab,
                    const StepScalars *s, float lr, float beta1, float beta2, float eps, float grad_scale, double bc1,
                    double bc2) {
    if (STEP) {
        if (!s->ok) return;   /* nothing written: the copy stays the rounding of the unchanged parameters */
        lr = s->lr;
        grad_scale = s->scale;
        bc1 = s->bc1;
        bc2 = s->bc2;
    }
    unsigned int items = tab.seg[tab.nseg].item0;
    for (unsigned int it = blockIdx.x; it < items; it += gridDim.x) {
        int lo = 0, hi = tab.nseg - 1;   /* the last segment whose first item is <= it */
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            if (tab.seg[mid].item0 <= it) lo = mid;
            else hi = mid - 1;
        }
        size_t start = tab.seg[lo].start, end = tab.seg[lo + 1].start;
        size_t c = (start + tab.h0) / MT_ITEM + (it - tab.seg[lo].item0);   /* the item on p's grid */
        size_t a = c * MT_ITEM > start + tab.h0 ? c * MT_ITEM - tab.h0 : start;
        size_t b = (c + 1) * MT_ITEM - tab.h0;
        if (b > end) b = end;
        adamw_piece4(p, g, m, v, bf ? bf + tab.seg[lo].dst + (a - start) : NULL, a, b, threadIdx.x, blockDim.x, lr,
                     beta1, beta2, eps, tab.seg[lo].wd, grad_scale, bc1, bc2);
    }
}

static int adamw_mt_on = -1;   /* -1: FLOWHN_ADAMW not read yet */
int cuda_set_adamw_mt(int on) { return cuda_env_switch(&adamw_mt_on, "FLOWHN_ADAMW", "old", 1, on); }
static int mt_launches;
int cuda_adamw_runs_launches(void) { return mt_launches; }

/* blocks of the persistent grid: every SM full (read once; 4 an SM if the query fails) */
template <bool STEP>
static unsigned int mt_blocks(void) {
    static unsigned int slots;
    if (!slots) {
        int dev = 0, nsm = 0, per_sm = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, adamw_mt_kernel<STEP>, OPT_THREADS, 0) !=
                cudaSuccess ||
            nsm <= 0 || per_sm <= 0) {
            (void)cudaGetLastError();
            nsm = nsm > 0 ? nsm : 132;
            per_sm = 4;
        }
        slots = (unsigned int)nsm * (unsigned int)per_sm;
    }
    return slots;
}

static void mt_launch(float *p, const float *g, float *m, float *v, __nv_bfloat16 *bf, MtTable *tab, int ns,
                      size_t end, unsigned int items, const StepScalars *s, float lr, float beta1, float beta2,
                      float eps, float grad_scale, double bc1, double bc2) {
    tab->nseg = ns;
    tab->seg[ns].start = end;
    tab->seg[ns].item0 = items;
    unsigned int nb = s ? mt_blocks<true>() : mt_blocks<false>();
    if (nb > items) nb = items;
    if (s)
        adamw_mt_kernel<true><<<nb, OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, bf, *tab, s, 0.f, beta1, beta2, eps,
                                                                     0.f, 0.0, 0.0);
    else
        adamw_mt_kernel<false><<<nb, OPT_THREADS, 0, cuda_stream()>>>(p, g, m, v, bf, *tab, NULL, lr, beta1, beta2,
                                                                      eps, grad_scale, bc1, bc2);
    CUDA_LAUNCHED();
    mt_launches++;
}

void cuda_adamw_runs(real *p, const real *g, real *m, real *v, size_t n, int nruns, const size_t *bounds,
                     const unsigned char *decay, const StepScalars *s, real lr, real beta1, real beta2, real eps,
                     real wd, real grad_scale, int step) {
    mt_launches = 0;
    if (n == 0 || nruns <= 0) return;
    if (!cuda_set_adamw_mt(-1) || !adamw4_ok(p, g, m, v)) {   /* a launch a run, as before */
        for (int r = 0; r < nruns; r++) {
            size_t o = bounds[r], k = bounds[r + 1] - o;
            if (!k) continue;
            real w = decay[r] ? wd : 0;
            if (s) cuda_adamw_step(p + o, g + o, m + o, v + o, k, s, beta1, beta2, eps, w);
            else cuda_adamw(p + o, g + o, m + o, v + o, k, lr, beta1, beta2, eps, w, grad_scale, step);
        }
        return;
    }
    double bc1 = 0, bc2 = 0;
    if (!s) {   /* as cuda_adamw forms them */
        bc1 = 1.0 - pow(beta1, step);
        bc2 = 1.0 - pow(beta2, step);
    }
    WeightsCopy w;
    int copy = cuda_weights_adamw(p, n, &w);
    const size_t *poff = NULL, *coff = NULL;
    if (copy) cuda_weights_host_tab(&poff, &coff);
    __nv_bfloat16 *bf = copy ? w.bf : NULL;
    MtTable tab;   /* 3.6 KB, copied into the launch's parameters (ranks may be threads: not static) */
    tab.h0 = (unsigned int)(((uintptr_t)p >> 2) & 3);
    int ns = 0, r = 0, t = copy ? w.t0 : 0;
    unsigned int items = 0;
    size_t pos = 0;
    while (pos < n) {
        while (r < nruns - 1 && bounds[r + 1] <= pos) r++;   /* the run holding pos */
        size_t end = bounds[r + 1] < n ? bounds[r + 1] : n, dst = 0;
        if (copy) {   /* the tensor holding pos (buffer offset w.a + pos) */
            while (poff[t + 1] - w.a <= pos) t++;
            if (poff[t + 1] - w.a < end) end = poff[t + 1] - w.a;
            dst = coff[t] + (w.a + pos - poff[t]);
        }
        if (end <= pos) break;   /* bounds not reaching n: not the contract; leave the rest */
        unsigned int k = (unsigned int)((end - 1 + tab.h0) / MT_ITEM - (pos + tab.h0) / MT_ITEM + 1);
        if (ns == MT_SEGS || items > 0x7fffffffu - k) {
            mt_launch(p, g, m, v, bf, &tab, ns, pos, items, s, lr, beta1, beta2, eps, grad_scale, bc1, bc2);
            ns = 0;
            items = 0;
        }
        tab.seg[ns].start = pos;
        tab.seg[ns].dst = dst;
        tab.seg[ns].item0 = items;
        tab.seg[ns].wd = decay[r] ? wd : 0.f;
        ns++;
        items += k;
        pos = end;
    }
    if (ns) mt_launch(p, g, m, v, bf, &tab, ns, pos, items, s, lr, beta1, beta2, eps, grad_scale, bc1, bc2);
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
