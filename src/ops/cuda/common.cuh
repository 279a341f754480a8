/* common.cuh - helpers shared by the CUDA op files: error recording, launch
 * geometry, warp/block reductions, and the internal prototypes that
 * cuda_backend.cu puts into the op table. */
#ifndef FLOWHN_CUDA_COMMON_CUH
#define FLOWHN_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "../../core/error.h"
#include "../../core/flopcount.h"
}
#include "cuda_ops.h"

#if defined(FLOWHN_REAL_DOUBLE)
#error "the CUDA backend is fp32: build it without FLOWHN_REAL_DOUBLE"
#endif

/* Records the first failure (file:line and CUDA's message); see cuda_ops_check(). */
void cuda_record_error(const char *what, const char *msg, const char *file, int line);
/* 0, or -1 if a CUDA call failed since the last check (flag cleared); does not
 * synchronize, unlike cuda_ops_check(). cuda_backend.cu. */
int cuda_ops_failed(void);

/* The stream the current branch's kernels launch on, the branch (0 = the main
 * sequence, 1 and 2 = the two branches of a parallel block), see stream.cu.
 * Every launch is `kernel<<<grid, block, smem, cuda_stream()>>>`. */
#define CUDA_BRANCHES 3
cudaStream_t cuda_stream(void);
int cuda_branch(void);
void cuda_set_branch(int b);

/* Graph capture (stream.cu): whether ops are being recorded now (host-side
 * work that needs device data, e.g. attention's MAC count, is skipped), and a
 * counter every cudaFree of backend memory or scratch bumps: a recorded graph
 * whose buffers may have been freed must not be replayed. */
/* switches.cu: a kernel switch read from NAME on first use (*state -1 until then):
 * unset or empty gives dflt, the value off ("0", "old", ...) 0, any other 1; on >= 0
 * sets it instead (tests run both settings). Returns the previous setting. */
int cuda_env_switch(int *state, const char *name, const char *off, int dflt, int on);
int cuda_capturing(void);
/* cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel and size (stream.cu) */
void cuda_func_smem(const void *kernel, size_t bytes);
extern unsigned long cuda_free_gen;
static inline void cuda_scratch_free(void *p);

/* Counts CUDA calls and launches (each may write device memory): linear.cu
 * reuses a bf16 rounding of an operand only while nothing else ran since. */
extern unsigned long cuda_epoch;
/* Counts the writes to device memory that are not a compute op's (memory.cu: from_host, zero, alloc's
 * zero fill, release, whose address a later alloc may reuse; stream.cu: graph_begin, graph_end (what was
 * recorded did not run), graph_launch). ops.h
 * types every int array a compute op takes as const (no op writes one), so an int array on the device (the
 * RoPE positions) changes only through these: a value computed from it stays valid while this is unchanged
 * (attention_cudnn.cu's RoPE table). */
extern unsigned long cuda_host_writes;

/* bf16 shadows (linear.cu): a producer kernel that writes an fp32 matrix a
 * bf16 product reads next also writes its bf16 rounding. The op claims a
 * buffer for out[0, n) (NULL: none, write no shadow: not bf16 products,
 * FLOWHN_BF16_SHADOW=0, no room, or growth refused while recording), takes
 * `before = cuda_epoch`, launches, and then, claimed or not, calls
 * cuda_shadow_done with EVERY range its launches wrote (outputs, the shadow,
 * scratch): roundings whose sources it did not touch stay valid, the claimed
 * shadow becomes current. A range left out would let a product read a stale
 * rounding. */
typedef struct {
    const void *p;
    size_t bytes;
} CudaRange;
void *cuda_shadow_claim(const float *out, size_t n);
void cuda_shadow_done(unsigned long before, const CudaRange *w, int nw);
/* The same for a producer that can leave its fp32 output unwritten (Ops.bf16_only):
 * *skip = 1 when out was marked bf16-only and the buffer returned is a home for
 * its rounding that lasts as long as the contract needs (the kept buffer; a
 * shadow held until its one read, marked once). The producer then stores only
 * the rounding (out's fp32 memory untouched) and still declares out's range to
 * cuda_shadow_done. Call it only when the launch overwrites out whole (not an
 * accumulation, which reads the fp32 values). */
void *cuda_shadow_claim_only(const float *out, size_t n, int *skip);
/* Packed gradient roundings (linear.cu, Ops.pack_bf16): a producer that overwrites a column window
 * [out, out + cols) of `rows` rows, ld apart, asks for the same window of the pack's bf16 buffer (row
 * stride ld; NULL: none, write fp32 only), writes there the rounding of every value it stores in its
 * window, and calls cuda_pack_done() after its launches (after cuda_shadow_done if it declares: its own
 * declared write over the pack does not end it). Claim after anything that may allocate; a claim is
 * always filled and done. */
void *cuda_pack_claim(const float *out, int rows, int cols, int ld);
void cuda_pack_done(void);
/* The same for a producer that can leave its window's fp32 unwritten: *skip = 1 when the model marked the
 * pack bf16-only (Ops.bf16_only once = 6) and acc is 0 (the launch overwrites its window); the producer then
 * stores only the rounding (the window's fp32 memory untouched). skip NULL: never. */
void *cuda_pack_claim_only(const float *out, int rows, int cols, int ld, int acc, int *skip);

#define CUDA_CALL(call)                                                              \
    do {                                                                             \
        __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);                        \
        cudaError_t e_ = (call);                                                     \
        if (e_ != cudaSuccess) cuda_record_error(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)
/* after every kernel launch: catches bad launch configurations at once */
#define CUDA_LAUNCHED() CUDA_CALL(cudaGetLastError())

/* Programmatic Dependent Launch (decode; docs/perf-notes.md "Programmatic
 * Dependent Launch for the decode kernels"). A grid launched by cuda_launch
 * with pdl set may start while the previous kernel in the stream is still
 * running (from when all of that kernel's blocks have run pdl_trigger or
 * exited), so its launch and its prologue overlap the predecessor's tail.
 * Rule: such a kernel runs pdl_wait (griddepcontrol.wait: returns once the
 * predecessor has completed and its writes are visible) before it reads
 * anything an earlier kernel writes and before it writes anything an earlier
 * kernel may still read; before the wait it may touch only what no kernel of
 * the stream writes (the frozen decode weights, its arguments). Every thread
 * runs the wait before it may exit: a grid whose threads all left without it
 * could complete before its predecessor, and the kernel after it (which
 * waits only for it) would read what that predecessor had not written yet. After its
 * wait a kernel runs pdl_trigger so its own successor can launch. Launched
 * without the attribute (pdl 0, FLOWHN_PDL=0, or a plain <<<>>> launch) both
 * instructions are no-ops, so a kernel with them is correct either way.
 * The attribute is set only while a graph is recorded (the decode step is
 * replayed as one): there every dependency is an explicit edge, which the
 * capture records as a programmatic one (CUDA 12.3+; an edge from a memcpy or
 * memset node stays a full one). Eager launches go to the legacy default
 * stream, whose implicit ordering with the branch streams PDL is not
 * documented to keep, so they stay plain. */
int cuda_pdl_enabled(void);   /* recording now, and FLOWHN_PDL unset or not "0" (read once; stream.cu) */
/* 0 unless cuda_pdl_enabled; then FLOWHN_PDL_GEMV's setting (stream.cu):
 * 1 (default) the gemv products take PDL with their _pdl kernels, 2 PDL with
 * main's code after a wait, 0 main's kernels launched plainly (linear.cu) */
int cuda_pdl_gemv_enabled(void);
/* whether the weights are frozen (the generator; training never freezes):
 * kernels shared with training (rmsnorm_fwd, silu_fwd, gated_rmsnorm_fwd)
 * take PDL only then, so training's launches stay as they were (linear.cu) */
int cuda_weights_frozen(void);
__device__ __forceinline__ void pdl_wait(void) { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger(void) { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

/* kernel<<<grid, block, smem, cuda_stream()>>>(args...), with the PDL
 * attribute when pdl and cuda_pdl_enabled(); ONLY for kernels whose body
 * starts with pdl_wait (see above). Compile-time cluster dimensions
 * (__cluster_dims__) combine with the attribute. Counts as one CUDA call
 * (cuda_epoch) like a launch + CUDA_LAUNCHED. */
template <typename... KArgs, typename... Args>
static inline void cuda_launch(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                               Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cuda_stream();
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl && cuda_pdl_enabled() ? 1 : 0;
    CUDA_CALL(cudaLaunchKernelEx(&cfg, kernel, ((KArgs)args)...));
}

static inline void cuda_scratch_free(void *p) {
    if (!p) return;
    cuda_free_gen++;
    CUDA_CALL(cudaFree(p));
}

/* Scratch that ops keep between calls: one buffer per branch stream (both
 * branches of a parallel block may run at once), grown on demand (the same
 * shapes recur every step, so growth happens in the first steps only).
 * cuda_branch_scratch returns the current branch's buffer of at least `bytes`,
 * or NULL after recording "cannot allocate <what>". memory.cu. */
typedef struct {
    void *buf[CUDA_BRANCHES];
    size_t cap[CUDA_BRANCHES];
} BranchScratch;
void *cuda_branch_scratch(BranchScratch *s, size_t bytes, const char *what);

static inline unsigned int blocks_for(size_t n, int threads) {
    return (unsigned int)((n + threads - 1) / threads);
}

/* Grid-stride loops cap the grid so huge tensors do not overflow gridDim.x. */
static inline unsigned int grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned int)(b > 65535 * 32 ? 65535 * 32 : (b ? b : 1));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result. `sh` is 32 floats of shared memory; the leading
 * barrier lets callers reuse `sh` back to back. */
__device__ __forceinline__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

/* Deterministic column reduction: dst[c*stride + v] += sum_i f(i, c)[v] over
 * rows i < N, for NV values per (row, column) (colsum: NV = 1, f returns the
 * value; colsum_multi: f(i, c, v) adds into v[NV]). The rows are cut into S
 * fixed segments so that there are enough blocks to fill the GPU (one block
 * per 32 columns left 24-56 blocks busy at C = 768-1792 and made these
 * reductions latency-bound): block (column tile, segment) = 32 columns x 32
 * row lanes, each thread walking every 32nd row of its segment (coalesced
 * across the columns); the 32 lanes' partials are added in a fixed order into
 * part[segment][v][c], and a second kernel adds the S segments in order. The
 * result does not depend on scheduling. */
#define COLSUM_ROWS 32
float *cuda_colsum_scratch(size_t n);  /* per branch stream, grown on demand (memory.cu) */
template <int NV, class F>
__global__ void colsum_part_kernel(float *part, int seg_rows, int N, int C, F f) {
    __shared__ float sh[COLSUM_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x, r0 = blockIdx.y * seg_rows, r1 = min(N, r0 + seg_rows);
    float s[NV];
#pragma unroll
    for (int v = 0; v < NV; v++) s[v] = 0.f;
    if (c < C)
        for (int i = r0 + threadIdx.y; i < r1; i += COLSUM_ROWS) f(i, c, s);
#pragma unroll
    for (int v = 0; v < NV; v++) {
        sh[threadIdx.y][threadIdx.x] = s[v];
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float t = 0.f;
            for (int r = 0; r < COLSUM_ROWS; r++) t += sh[r][threadIdx.x];
            part[((size_t)blockIdx.y * NV + v) * C + c] = t;
        }
        __syncthreads();
    }
}
template <int NV>
__global__ void colsum_finish_kernel(float *dst, int stride, const float *part, int S, int C) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;  /* e = v * C + c */
    if (e >= NV * C) return;
    float t = 0.f;
    for (int sg = 0; sg < S; sg++) t += part[(size_t)sg * NV * C + e];
    int v = e / C, c = e % C;
    dst[(size_t)c * stride + v] += t;
}
template <int NV, class F>
static inline void colsum_multi(float *dst, int stride, int N, int C, F f) {
    if (C <= 0 || N <= 0) return;
    int cols = (C + 31) / 32;
    /* ~4 blocks per SM on a 132-SM GPU, segments of at least 64 rows */
    int S = (528 + cols - 1) / cols;
    S = max(1, min(S, N / 64));
    int seg = (N + S - 1) / S;
    S = (N + seg - 1) / seg;
    float *part = cuda_colsum_scratch((size_t)S * NV * C);
    if (!part) return;
    colsum_part_kernel<NV><<<dim3(cols, S), dim3(32, COLSUM_ROWS), 0, cuda_stream()>>>(part, seg, N, C, f);
    CUDA_LAUNCHED();
    colsum_finish_kernel<NV><<<(NV * C + 255) / 256, 256, 0, cuda_stream()>>>(dst, stride, part, S, C);
    CUDA_LAUNCHED();
}
template <class F>
struct ColsumOne {
    F f;
    __device__ void operator()(int i, int c, float *s) const { s[0] += f(i, c); }
};
template <class F>
static inline void colsum(float *dst, int stride, int N, int C, F f) {
    colsum_multi<1>(dst, stride, N, C, ColsumOne<F>{f});
}

/* log-sum-exp of a row of V floats, the whole block cooperating, in one pass:
 * each thread keeps a running (max, sum of exp(x - max)) pair (online
 * softmax), rescaling its sum when the max grows; the block combines the pairs.
 * float4 loads when V and the row allow. Every thread gets the result. */
__device__ __forceinline__ void online_softmax_add(float x, float &m, float &s) {
    if (x > m) { s = s * expf(m - x) + 1.f; m = x; }
    else s += expf(x - m);
}
__device__ __forceinline__ float row_logsumexp(const float *row, int V, float *sh) {
    float m = -INFINITY, s = 0.f;
    if ((V & 3) == 0 && ((uintptr_t)row & 15) == 0) {
        const float4 *r4 = (const float4 *)row;
        for (int v = threadIdx.x; v < V / 4; v += blockDim.x) {
            float4 x = r4[v];
            online_softmax_add(x.x, m, s); online_softmax_add(x.y, m, s);
            online_softmax_add(x.z, m, s); online_softmax_add(x.w, m, s);
        }
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x) online_softmax_add(row[v], m, s);
    }
    float M = block_max(m, sh);
    s = (m == -INFINITY) ? 0.f : s * expf(m - M);  /* a thread that saw nothing adds nothing */
    return M + logf(block_sum(s, sh));
}

/* the 8 bf16 values of one 16-byte load as floats (gemv weights, classifier logits) */
__device__ __forceinline__ void bf16x8_unpack(uint4 u, float *f) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 p = __bfloat1622float2(h[j]);
        f[2 * j] = p.x;
        f[2 * j + 1] = p.y;
    }
}
__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }
/* softplus without overflow: log(1 + e^x) = max(x, 0) + log1p(e^-|x|) */
__device__ __forceinline__ float softplusf_(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }

/* ---- the op implementations (one .cu file per family) ---- */
void *cuda_alloc(size_t bytes);
void cuda_release(void *p);
void cuda_zero(void *p, size_t bytes);
void cuda_zero_runs(real *base, size_t span, const size_t *runs, int n);
void cuda_to_host(void *dst_host, const void *src, size_t bytes);
void cuda_from_host(void *dst, const void *src_host, size_t bytes);
void cuda_add(real *out, const real *a, const real *b, size_t n);
void cuda_accumulate(real *dst, const real *src, real alpha, size_t n);
void cuda_embedding_fwd(real *out, const int *tok, const real *wte, int N, int C);
void cuda_embedding_bwd(real *dwte, const real *dout, const int *tok, int N, int C);
void cuda_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps);
void cuda_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w, const real *rstd, int N, int C, int acc);
void cuda_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N, int C, real eps);
void cuda_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC);
void cuda_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in, const real *w, int N, int IC, int OC, int acc);
void cuda_swiglu_fwd(real *out, const real *gate, const real *up, size_t n);
void cuda_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n, int acc);
void cuda_swiglu_packed_fwd(real *out, const real *gu, int N, int C);
void cuda_swiglu_packed_bwd(real *dgu, const real *dout, const real *gu, int N, int C, int acc);
void cuda_silu_fwd(real *out, const real *x, size_t n);
void cuda_silu_bwd(real *dx, const real *dout, const real *x, size_t n, int acc);
void cuda_rope_fwd(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta);
void cuda_rope_bwd(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta, int acc);
/* q, dq rows ldq apart; k, v, dk, dv ldkv apart (ops.h attention_fwd) */
void cuda_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                        const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv);
void cuda_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                        const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq,
                        int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv);
int cuda_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                            const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                            int ldkv);
int cuda_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                            const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                            int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv);
void cuda_conv1d_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K);
void cuda_conv1d_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, int B, int n, int C, int K, int acc);
void cuda_conv1d_silu_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K, int ldx);
void cuda_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, const real *b, int B, int n, int C, int K, int acc, int ldx);
void cuda_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L);
void cuda_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz, const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L, int acc);
void cuda_ssd_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L);
void cuda_ssd_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy, const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L, int acc);
void cuda_gated_rmsnorm_fwd(real *out, real *rstd, const real *y, const real *z, const real *w, int N, int C, real eps, int ldz);
void cuda_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z, const real *w, const real *rstd, int N, int C, int acc, int ldz);
void cuda_gather_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
void cuda_rmsnorm_gather_fwd(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w, int B,
                             int T, int n_sel, int C, real eps);
void cuda_rmsnorm_gather_bwd(real *dfull, real *dw, const real *dres, const real *dout, const real *x, const real *w,
                             const real *rstd, const int *idx, int B, int T, int n_sel, int C);
void cuda_gather_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
void cuda_scatter_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0);
void cuda_scatter_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0, int acc);
void cuda_xent_fwd(real *loss, real *lse, const real *logits, const int *targets, int N, int V);
void cuda_xent_bwd(real *dlogits, const real *dloss, const real *logits, const real *lse, const int *targets, int N, int V);
void cuda_classifier(real *loss, real *dx, real *dw, const real *x, const real *w, const int *targets, real scale,
                     int N, int H, int V, int acc);

void cuda_selective_scan_step(real *y, real *h, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int E, int S);
void cuda_ssd_step(real *y, real *h, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int nh, int P, int G, int N);
void cuda_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2, real eps, real wd, real grad_scale, int step);
double cuda_sum_squares(const real *x, size_t n);
void cuda_sum_into(double *out, const real *x, size_t n, int squares);
void cuda_step_scale(StepScalars *s);
void cuda_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1, real beta2,
                     real eps, real wd);
void cuda_adamw_runs(real *p, const real *g, real *m, real *v, size_t n, int nruns, const size_t *bounds,
                     const unsigned char *decay, const StepScalars *s, real lr, real beta1, real beta2, real eps,
                     real wd, real grad_scale, int step);
int cuda_graph_begin(void);
void *cuda_graph_end(void);
int cuda_graph_launch(void *graph);
void cuda_graph_free(void *graph);
void cuda_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols);
void cuda_conv1d_step(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K);
void cuda_attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh, int nkv, int hd);
int cuda_freeze_weights(const real *p, size_t n);
int cuda_train_weights(const real *p, size_t n, const size_t *starts, int count);
/* training's bf16 weight copy (linear.cu, Ops.train_weights): a write to
 * [p, p + bytes) other than AdamW's (the copy is stale if it overlaps the
 * trained buffer); a backend block freed (the copy dropped if it held the
 * buffer); before a recording (the copy made current, so the recorded
 * products read it); whether the recording just made wrote the buffer
 * without the copy; before a replay (made current again; stale after it if
 * `stales`). */
void cuda_weights_written(const void *p, size_t bytes);
void cuda_weights_released(const void *p, size_t bytes);
/* kept bf16 roundings of saved activations (linear.cu, Ops.keep_bf16): the
 * op; a backend block freed (keeps of inputs inside it end, their buffers
 * go); before a recording (every keep ends). */
void cuda_keep_bf16(const real *x, size_t n);
void cuda_pack_bf16(const real *x, size_t n, int ld);
void cuda_bf16_only(const real *x, size_t n, int once);
/* swiglu_packed_*'s gu where the gate|up product wrote only its bf16 D (ops.h bf16_only once = 2; linear.cu):
 * that D, or NULL (read gu's fp32). *bad = 1: gu's fp32 was never written and no D serves this read (another
 * extent or branch, or after keep_bf16(NULL, 0)): the error is recorded, the caller does nothing. */
const void *cuda_gu_bf16(const float *gu, size_t n, int *bad);
/* the packed q|k|v product's bf16 D (ops.h bf16_only once = 3; linear.cu qkv_d16): cuda_qkv_d16 gives it for
 * exactly (x, n) on the branch that wrote it, else NULL; cuda_qkv_d16_done(x) after the attention's forward
 * read it (x's fp32 stays unwritten: the attention's kept Q | K | V serves the backward);
 * cuda_qkv_d16_restore(x) writes x's fp32 from it (x = bf16(D) as fp32) and ends it: every other path. No-ops
 * when no D is recorded for x. cuda_bf16_absent: 1 when [x, x + n) overlaps fp32 never written (a bf16-only
 * output); cuda_bf16_missing: the same, and then records the error (who reads it) and counts it refused. */
/* cuda_qkv_d16_in_keep: 1 when the D recorded for x lies in x's kept buffer (FLOWHN_CUDNN_VKEEP: the product
 * owns that keep; cuda_qkv_d16_restore then also gives it back) */
const void *cuda_qkv_d16(const float *x, size_t n);
int cuda_qkv_d16_in_keep(const float *x);
void cuda_qkv_d16_done(const float *x);
void cuda_qkv_d16_restore(const float *x);
/* the attention's d out as the o product's bf16 D (ops.h bf16_only once = 5; linear.cu datt_d16): the same
 * three for it (cuDNN's backward reads it as dO) */
const void *cuda_datt_d16(const float *x, size_t n);
void cuda_datt_d16_done(const float *x);
void cuda_datt_d16_restore(const float *x);
/* the MLP's d act as the down product's bf16 D (ops.h bf16_only once = 7; linear.cu dact_d16): for
 * swiglu_packed_bwd's dout x [0, n), the D (read once: the record ends) or NULL; *bad: the record is for x on
 * another branch or extent (the error recorded, the caller does nothing) */
const void *cuda_dact_d16(const float *x, size_t n, int *bad);
/* the MLP norm's d out as the gate|up product's bf16 D (once = 8), or the attention norm's as the q|k|v product's
 * (once = 9; linear.cu dnorm_d16, one record for both): for rmsnorm_bwd's dout
 * x [0, n), the D or NULL (*bad as above); _done after the row kernel read it, _restore (x's fp32 written back
 * from it, the record ended) before any other path */
const void *cuda_dnorm_d16(const float *x, size_t n, int *bad);
void cuda_dnorm_d16_done(const float *x);
void cuda_dnorm_d16_restore(const float *x);
/* a residual branch's output as its product's bf16 D (once = 10; linear.cu resid_d16): for add_rmsnorm_fwd's a
 * or b = x [0, n), the D or NULL (*bad as above); _done after the row kernel read it, _restore before any other
 * path */
const void *cuda_resid_d16(const float *x, size_t n, int *bad);
void cuda_resid_d16_done(const float *x);
void cuda_resid_d16_restore(const float *x);
/* the attention's out marked once = 4 (FLOWHN_BF16_ATT_O): its kept buffer, where cuDNN may write O, or NULL;
 * claims nothing (the claim comes after cuDNN ran, cuda_shadow_claim_only, and hands out that buffer) */
void *cuda_att_o_home(const float *out, size_t n);
int cuda_bf16_absent(const float *x, size_t n);
/* the once of the bf16-only mark on exactly (x, n) (FLOWHN_BF16_ONLY on, bf16 products), 0 when none; spends
 * nothing (attention_cudnn_bwd asks before claiming dq | dk | dv's rounding ahead of cuDNN) */
int cuda_bf16_only_marked(const float *x, size_t n);
int cuda_bf16_missing(const float *x, size_t n, const char *who);
void cuda_keep_released(const void *p, size_t bytes);
void cuda_keep_before_recording(void);
/* owned keeps (linear.cu): an op's own bf16 transform of a kept input x, held
 * from its forward to its backward under the keep contract (attention_cudnn.cu's
 * Q, K, V). own: the buffer to write (NULL: x not kept); owned_done: written,
 * with a tag naming the transform; owned: the buffer if still in force with that
 * tag on this branch, else NULL (convert again). keep_rounding: x's kept bf16
 * rounding (made now if need be) or NULL. verify_pair: under
 * FLOWHN_BF16_KEEP_VERIFY (keep_verify_on), counts values of a served buffer
 * that differ from a fresh conversion into cuda_keep_stale. */
void *cuda_keep_own(const float *x, size_t n);
void cuda_keep_owned_done(const float *x, size_t n, unsigned long long tag);
const void *cuda_keep_owned(const float *x, size_t n, unsigned long long tag);
const void *cuda_keep_rounding(const float *x, size_t n);
int cuda_keep_verify_on(void);
void cuda_keep_verify_pair(const void *kept_buf, const void *fresh, size_t n);
void cuda_weights_before_recording(void);
int cuda_weights_recording_stales(void);
void cuda_weights_before_replay(int stales);
void cuda_copy_rows_at(real *dst, int ldd, const real *src, int rows, int cols, const int *pos);
void cuda_linear3_fwd(real *out0, real *out1, real *out2, const real *in, const real *w0, const real *w1,
                      const real *w2, int N, int IC, int OC0, int OC1, int OC2, const real *norm_w, real eps,
                      real *normed, real *rstd);
void cuda_linear_res_fwd(real *out, const real *in, const real *w, const real *res, int N, int IC, int OC);
void cuda_swiglu_linear_fwd(real *out, real *gs, real *us, const real *in, const real *wg, const real *wu, int N,
                            int IC, int OC, const real *norm_w, real eps, real *normed, real *rstd);
void cuda_rope_append_at(real *qr, real *K, real *V, real *kr, const real *q, const real *k, const real *v,
                         const int *pos, const int *row, int B, int ld, int nh, int nkv, int hd, real theta);
void cuda_attention_decode_at(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                              int nh, int nkv, int hd);
/* allocator bookkeeping (memory.cu): bytes held now and the high-water mark */
void cuda_memory_stats(size_t *live, size_t *peak);
void cuda_memory_account(size_t bytes, int add);

#endif
