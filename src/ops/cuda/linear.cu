/* linear.cu - out[N,OC] = in[N,IC] @ w[OC,IC]^T (+ b) through cuBLASLt.
 *
 * cuBLASLt is column-major; a row-major [R, C] matrix is the column-major
 * [C, R] one, so every product below is written for the transposes:
 *   forward  out^T[OC,N] = w'^T in^T          (w' = w seen column-major [IC,OC])
 *   din^T[IC,N] (+)= w' dout^T                (beta = 1 accumulates, 0 overwrites: ops.h acc)
 *   dw'[IC,OC]   += in^T dout                 (dw' = dw seen column-major)
 *
 * Matmul precision (cuda_set_matmul_precision, `--precision`):
 *   fp32  CUBLAS_COMPUTE_32F, true fp32: within the CPU oracle's 1e-5 bound.
 *   tf32  the same fp32 buffers, tensor cores with TF32 inputs (10-bit mantissa).
 *   bf16  tensor cores on bf16 operands with fp32 accumulation and fp32 output:
 *         the operands (weights and activations, kept in fp32 everywhere else:
 *         these are the fp32 master weights) are rounded to bf16 into a
 *         scratch buffer just before each product; C/D stay fp32, so the
 *         backward's += accumulation and the gradients keep fp32.
 * The bias rides the BIAS epilogue. Matmul descriptors and the algorithm are
 * cached per shape (querying the heuristic costs tens of microseconds of host
 * time, more than many of the products themselves); the algorithm is the
 * fastest of the heuristic's first LT_TUNE_CANDIDATES, timed on the first
 * product of the plan (lt_tune below; FLOWHN_LT_TUNE=0: the heuristic's first). */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "matmul.cuh"

/* Per branch. 32 MiB is what NVIDIA advises for cuBLASLt on Hopper; it also
 * bounds the split-K candidates the heuristic offers: the widest split a
 * 768x768 dW at K = 8192 wants (fp32 partials, 8 x 2.4 MB) fits. */
#define LT_WORKSPACE_BYTES (32u << 20)
#define PLAN_CACHE 256
/* How many of the heuristic's algorithms a plan times (lt_tune) */
#define LT_TUNE_CANDIDATES 8

typedef enum { MM_FP32, MM_TF32, MM_BF16 } MatmulPrecision;

static cublasLtHandle_t lt_handle;
static void *lt_workspace[CUDA_BRANCHES];  /* one per branch: the branches' products may run at once */
static MatmulPrecision precision = MM_FP32;

extern "C" int cuda_set_matmul_precision(const char *mode) {
    if (!strcmp(mode, "fp32")) precision = MM_FP32;
    else if (!strcmp(mode, "tf32")) precision = MM_TF32;
    else if (!strcmp(mode, "bf16")) precision = MM_BF16;
    else return fh_error("unknown matmul precision '%s': use fp32, tf32 or bf16", mode);
    return 0;
}
extern "C" const char *cuda_matmul_precision(void) {
    return precision == MM_FP32 ? "fp32" : precision == MM_TF32 ? "tf32" : "bf16";
}

static int lt_init(void) {
    if (lt_handle) return 0;
    for (int b = 0; b < CUDA_BRANCHES; b++)
        if (!lt_workspace[b] && cudaMalloc(&lt_workspace[b], LT_WORKSPACE_BYTES) != cudaSuccess) {
            lt_workspace[b] = NULL;
            cuda_record_error("cudaMalloc", "cannot allocate the cuBLASLt workspace", __FILE__, __LINE__);
            return -1;
        }
    if (cublasLtCreate(&lt_handle) != CUBLAS_STATUS_SUCCESS) {
        lt_handle = NULL;
        cuda_record_error("cublasLtCreate", "cannot create a cuBLASLt handle", __FILE__, __LINE__);
        return -1;
    }
    return 0;
}

/* the largest power of two (<= 256) dividing the address: heuristics must only
 * offer algorithms that accept the pointers we pass (views into larger
 * buffers are not 256-byte aligned) */
static uint32_t alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 4 && (a % al)) al >>= 1;
    return al;
}

/* ---- plan cache: one entry per distinct product shape ---- */
typedef struct {
    int used;
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc, has_bias, accumulate;
    int c16;   /* C (= D) bf16: the fused classifier's logits (cuda_matmul_c16); else fp32 */
    MatmulPrecision prec;
    uint32_t al_a, al_b, al_c;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    /* until tuned: the heuristic's answers, best first (algo = cand[0]); tuned: algo is final */
    int tuned, ncand;
    cublasLtMatmulAlgo_t cand[LT_TUNE_CANDIDATES];
    size_t cand_ws[LT_TUNE_CANDIDATES];
} Plan;
static Plan plans[PLAN_CACHE];
static int plan_next;  /* round-robin eviction once full */

static void plan_destroy(Plan *p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

/* ---- algorithm tuning (FLOWHN_LT_TUNE=0 turns it off, FLOWHN_LT_TUNE_LOG=1 prints it) ----
 * The heuristic ranks algorithms by a model, and its first answer is often
 * not the fastest at our shapes (768-wide outputs fill 1.45 waves of 128x256
 * tiles on 132 SMs; a 768x768 dW with K = 8192 has 36 output tiles). So a new
 * plan asks for the first LT_TUNE_CANDIDATES, and its first product times each
 * on the product's own operands and stream (after a warm-up run each,
 * LT_TUNE_ROUNDS rounds of LT_TUNE_REPS runs, candidates interleaved so that
 * clock drift hits all alike; a candidate's time is its best round) and keeps
 * the fastest, unless it beats the heuristic's first by less than 1% (timing
 * noise: keep the heuristic's). Once chosen the algorithm never changes for the
 * plan (a recorded graph keeps the one it recorded; eager calls use the same).
 * Where the timing runs write: a product that overwrites C (beta 0) writes C,
 * which the real product then overwrites in full (the same m x n region, in
 * stream order; C never aliases A or B); a product that accumulates (beta 1)
 * writes into scratch of C's extent and address modulo 256 (same alignment),
 * never into C: C is added to exactly once, by the real product. No scratch
 * (no memory): the heuristic's first, untimed.
 * Timing needs a host wait, impossible inside a graph recording: a plan made
 * while recording takes the heuristic's first answer and keeps it (logged).
 * Recorded steps warm up eagerly at their shape first (src/train/step.c,
 * generate.c step_graph), so their plans are all tuned before recording. The
 * tune costs ~80 runs per plan, once, in the first step. */
#define LT_TUNE_ROUNDS 3
#define LT_TUNE_REPS 3
static int tune_on = -1, tune_log = -1;   /* -1: the environment not read yet */
unsigned long cuda_lt_tunes, cuda_lt_capture_plans;   /* for tests: plans timed, plans made while recording */

/* This file's on/off switches ("0" off; common.cuh cuda_env_switch) */
static int env_switch(int *state, const char *name, int dflt, int on) {
    return cuda_env_switch(state, name, "0", dflt, on);
}
int cuda_set_lt_tune(int on) { return env_switch(&tune_on, "FLOWHN_LT_TUNE", 1, on); }
static int lt_logging(void) {
    return env_switch(&tune_log, "FLOWHN_LT_TUNE_LOG", 0, -1);
}

void cuda_lt_forget_plans(void) {
    for (int i = 0; i < PLAN_CACHE; i++)
        if (plans[i].used) plan_destroy(&plans[i]);
    plan_next = 0;
}

/* Builds (or finds) the plan; NULL if cuBLASLt offers no algorithm. */
static Plan *plan_get(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc,
                      int has_bias, int accumulate, uint32_t al_a, uint32_t al_b, uint32_t al_c, int c16) {
    for (int i = 0; i < PLAN_CACHE; i++) {
        Plan *p = &plans[i];
        if (p->used && p->ta == ta && p->tb == tb && p->m == m && p->n == n && p->k == k && p->lda == lda &&
            p->ldb == ldb && p->ldc == ldc && p->has_bias == has_bias && p->accumulate == accumulate &&
            p->prec == precision && p->al_a == al_a && p->al_b == al_b && p->al_c == al_c && p->c16 == c16)
            return p;
    }
    Plan *p = &plans[plan_next];
    plan_next = (plan_next + 1) % PLAN_CACHE;
    if (p->used) plan_destroy(p);
    p->ta = ta; p->tb = tb; p->m = m; p->n = n; p->k = k; p->lda = lda; p->ldb = ldb; p->ldc = ldc;
    p->has_bias = has_bias; p->accumulate = accumulate; p->prec = precision;
    p->al_a = al_a; p->al_b = al_b; p->al_c = al_c; p->c16 = c16;

    cublasComputeType_t ct = precision == MM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cudaDataType_t ab = precision == MM_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur[LT_TUNE_CANDIDATES];
    int found = 0, capturing = cuda_capturing();
    /* one answer when it will not be timed: tuning off (today's choice), or inside a recording */
    int want = cuda_set_lt_tune(-1) && !capturing ? LT_TUNE_CANDIDATES : 1;
    uint64_t ws = LT_WORKSPACE_BYTES;
    if (cublasLtMatmulDescCreate(&p->desc, ct, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) goto fail;
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (has_bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
    }
    if (cublasLtMatrixLayoutCreate(&p->la, ab, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda) ||
        cublasLtMatrixLayoutCreate(&p->lb, ab, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb) ||
        cublasLtMatrixLayoutCreate(&p->lc, c16 ? CUDA_R_16BF : CUDA_R_32F, m, n, ldc))
        goto fail;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) goto fail;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
    if (cublasLtMatmulAlgoGetHeuristic(lt_handle, p->desc, p->la, p->lb, p->lc, p->lc, pref, want, heur, &found) !=
            CUBLAS_STATUS_SUCCESS)
        goto fail;
    cublasLtMatmulPreferenceDestroy(pref);
    pref = NULL;
    for (int i = 0; i < found && i < want; i++)
        if (heur[i].state == CUBLAS_STATUS_SUCCESS) {
            p->cand[p->ncand] = heur[i].algo;
            p->cand_ws[p->ncand++] = heur[i].workspaceSize;
        }
    if (p->ncand == 0) goto fail;
    p->algo = p->cand[0];
    p->tuned = p->ncand < 2;   /* nothing to choose from */
    if (p->ncand == 1 && want > 1 && lt_logging())
        fprintf(stderr, "lt-tune: %s m=%d n=%d k=%d: the heuristic offers one algorithm\n", cuda_matmul_precision(),
                m, n, k);
    if (capturing && cuda_set_lt_tune(-1)) {
        cuda_lt_capture_plans++;
        if (lt_logging())
            fprintf(stderr, "lt-tune: %s m=%d n=%d k=%d planned inside a graph recording: the heuristic's first "
                    "algorithm, untimed, kept for this plan\n", cuda_matmul_precision(), m, n, k);
    }
    p->used = 1;
    return p;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan_destroy(p);
    return NULL;
}

/* ---- bf16 operand scratch: three slots (a weight, an activation, an output
 * gradient) grown on demand; growth happens in the first steps only.
 * Consecutive products often share an operand (k and v from the same input,
 * gate and up, the x_proj slices, a backward's dW products over one input):
 * a slot's rounding is reused while its source is unchanged, i.e. while no
 * CUDA call or launch other than this file's own (which write only scratch or
 * the product's C, checked for overlap) ran since. cuda_epoch counts them. */
unsigned long cuda_epoch;

typedef struct {
    __nv_bfloat16 *buf;
    size_t cap;
    const float *src;      /* what buf holds the rounding of, while epoch == cuda_epoch */
    size_t n;
    unsigned long epoch;
} Slot;
static Slot slots[CUDA_BRANCHES][3];  /* per branch, as the workspace */

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) * 2;
    size_t stride = (size_t)gridDim.x * blockDim.x * 2;
    for (; i + 1 < n; i += stride) {
        float2 v = make_float2(src[i], src[i + 1]);
        *(__nv_bfloat162 *)(dst + i) = __float22bfloat162_rn(v);
    }
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

/* ---- bf16 shadows written by the producers (FLOWHN_BF16_SHADOW=0 turns them off) ----
 * A kernel that writes an fp32 activation which a product reads next
 * (rmsnorm_fwd / add_rmsnorm_fwd outputs, read by q, k, v and gate, up;
 * swiglu_fwd's, read by down; swiglu_bwd's dgate and dup, the douts of gate
 * and up) also writes its bf16 rounding (round-to-nearest-even, the values
 * to_bf16_kernel would write) into a shadow buffer claimed here
 * (cuda_shadow_claim) and registers it after the launch (cuda_shadow_done).
 * operand() then reads the shadow instead of rounding the fp32 matrix into a
 * slot: 4 bytes read + 2 written per value and a launch fewer, for 2 more
 * bytes written by the producer.
 * Exactness, by the rule the slots already follow: a shadow serves (src, n)
 * only while shadow.epoch == cuda_epoch, i.e. while no CUDA call or launch ran
 * since, other than launches that said exactly what they wrote (this file's
 * own, and the producers', through launch_done) and wrote nothing that
 * overlaps src. Any other op (attention, rope, a memset, an upload, a free)
 * bumps cuda_epoch and retires every shadow: its consumer then rounds, as
 * before. Served only for the same pointer and length (a fresh shadow buffer
 * is 256-byte aligned, as a slot is: the same cuBLASLt plan and algorithm,
 * the same bits). Decisions are host-side, so a recorded graph replays them:
 * cuda_graph_begin/end bump the epoch (nothing from outside a recording is
 * served inside it), and growing a shadow is refused while recording.
 * SHADOWS buffers per branch (a producer and its consumer run on one branch;
 * lookups see only the current branch's, so another branch's producer never
 * overwrites a shadow a queued product still reads), reused least recently
 * used first, those no longer current before those still current. */
#define SHADOWS 4
typedef struct {
    __nv_bfloat16 *buf;
    size_t cap;
    const float *src;      /* NULL: none; what buf holds the rounding of, while epoch == cuda_epoch */
    size_t n;
    unsigned long epoch;
    const float *claimed;  /* between claim and done: the producer's output */
    size_t claimed_n;
    unsigned long used;    /* shadow_clock at the last claim or read: the least recent goes first */
    int claim_skip;        /* between claim and done: the producer leaves out's fp32 unwritten (bf16-only) */
    int pinned;            /* holds the only copy of a bf16-only output (once): served whatever the epoch, never
                            * claimed by another producer, until its one read (see "bf16-only outputs") */
} Shadow;
static Shadow shadows[CUDA_BRANCHES][SHADOWS];
static unsigned long shadow_clock;
static int shadow_on = -1;   /* -1: FLOWHN_BF16_SHADOW not read yet */
unsigned long cuda_shadow_served, cuda_shadow_claims;   /* for tests */

int cuda_set_bf16_shadow(int on) { return env_switch(&shadow_on, "FLOWHN_BF16_SHADOW", 1, on); }

static int overlaps(const void *p, size_t bytes, const CudaRange *w, int nw) {
    uintptr_t s0 = (uintptr_t)p, s1 = s0 + bytes;
    for (int i = 0; i < nw; i++) {
        uintptr_t w0 = (uintptr_t)w[i].p, w1 = w0 + w[i].bytes;
        if (w[i].p && w[i].bytes && s0 < w1 && w0 < s1) return 1;
    }
    return 0;
}

/* ---- kept roundings of saved activations (Ops.keep_bf16; FLOWHN_BF16_KEEP=0 turns them off) ----
 * The weight gradient dW = dout^T x of every product needs its forward input
 * x in bf16 again in the backward. x's shadow (above) was retired long before
 * (every op in between moves cuda_epoch), so linear_bwd rounded x once more:
 * 4 bytes read + 2 written per value and a launch, per product per layer. The
 * model says which inputs it saves for the backward (Ops.keep_bf16 before
 * their producer); each gets its own bf16 buffer here, which holds x's
 * rounding from the forward to the backward.
 * Exactness does not rest on cuda_epoch (nothing would survive that long) but
 * on the op contract: after keep_bf16(x, n) the next op writes x, then nothing
 * writes [x, x + n) until keep_bf16(NULL, 0). So the buffer is filled exactly
 * once per keep, by whichever comes first:
 *   - the producer itself (cuda_shadow_claim hands out the kept buffer instead
 *     of one of the SHADOWS; its rounding of the very values it stores), or
 *   - the first product that reads x (operand(): rounding into the kept buffer
 *     instead of the slot; x is final then: its producer ran before its reader).
 * From then on x's values are the ones rounded, until keep_bf16(NULL, 0) ends
 * it; every product reading exactly (x, n) reads the buffer. Belt and braces:
 * a declared write that overlaps x (launch_done) ends the keep too, and so
 * does freeing the block that holds x (cuda_keep_released) and the start of a
 * recording (nothing from outside a recorded step is served inside it).
 * Streams: a kept buffer is read only on the branch whose stream wrote it
 * (stream order puts the fill first); another branch rounds into its slot.
 * Its next writer is x's next producer (or a reader of the new x), which the
 * model orders after x's previous readers as it must for x itself.
 * Graphs: decisions are host-side and recorded; the buffers are allocated at
 * keep_bf16 outside a recording (the warm-up step) and never inside one (no
 * buffer: that input is rounded per product, as before).
 * Memory: one buffer per kept input, 2 bytes per value, held until the block
 * holding x is released (counted with the model's memory: memory.c's dry run
 * counts the model's keep_bf16 calls). A fresh cudaMalloc is 256-byte aligned
 * as a slot is: the same cuBLASLt plan and algorithm, the same bits. */
typedef struct {
    const float *src;      /* the fp32 input; NULL: a free entry */
    size_t n;
    __nv_bfloat16 *buf;
    size_t cap;
    int armed;             /* between keep_bf16(src, n) and keep_bf16(NULL, 0), with a buffer */
    int claimed;           /* its producer is writing buf (between claim and done) */
    int valid;             /* buf holds the rounding of [src, src + n) (armed only) */
    int branch;            /* the branch whose stream wrote buf */
    int owned;             /* taken by an op (cuda_keep_own): buf holds that op's transform of x, never x's
                            * rounding for the products */
    unsigned long long tag;   /* owned: what the op wrote (its parameters), checked by cuda_keep_owned */
    int claim_skip;        /* between claim and done: its producer leaves x's fp32 unwritten (bf16-only) */
    int no_f32;            /* valid, and buf is the only copy of x's values: x's fp32 memory was not written */
} Kept;
static Kept *kept;
static int nkept, kept_alloc_n, kept_valid;   /* kept_valid: entries valid now (0: nothing to check) */
static int keep_on = -1;                       /* -1: FLOWHN_BF16_KEEP not read yet */
unsigned long cuda_keep_served, cuda_keep_fills, cuda_keep_produced;   /* for tests */

int cuda_set_bf16_keep(int on) { return env_switch(&keep_on, "FLOWHN_BF16_KEEP", 1, on); }

/* FLOWHN_BF16_KEEP_VERIFY=1 (tests, debugging): every time a product is served
 * a kept rounding, a kernel compares it with a fresh rounding of x and counts
 * the values that differ (cuda_keep_stale). Exactness of the keeps rests on
 * the op contract above, which no code enforces: an undeclared write to x
 * between the forward and the backward would serve a stale operand silently.
 * This makes it loud. The check writes only its own counter and does not move
 * cuda_epoch, so the slots, shadows and keeps behave as without it; inside a
 * recording it is recorded and runs at every replay. */
static int keep_verify = -1;
static unsigned int *keep_stale_dev;

__global__ void kept_stale_kernel(unsigned int *count, const __nv_bfloat16 *buf, const float *x, size_t n) {
    unsigned int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        bad += __bfloat16_as_ushort(buf[i]) != __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
    if (bad) atomicAdd(count, bad);
}

int cuda_set_bf16_keep_verify(int on) { return env_switch(&keep_verify, "FLOWHN_BF16_KEEP_VERIFY", 0, on); }

unsigned long cuda_keep_stale(void) {
    unsigned int c = 0;
    if (!keep_stale_dev) return 0;
    if (cudaDeviceSynchronize() != cudaSuccess ||   /* the checks run on the branches' own streams */
        cudaMemcpy(&c, keep_stale_dev, sizeof c, cudaMemcpyDeviceToHost) != cudaSuccess)
        cuda_record_error("cudaMemcpy", "cannot read the kept-rounding check's counter", __FILE__, __LINE__);
    return c;
}

static void kept_verify(const Kept *k) {
    if (cuda_set_bf16_keep_verify(-1) <= 0 || k->no_f32) return;   /* bf16-only: no fp32 x to compare with */
    if (!keep_stale_dev) {
        if (cuda_capturing()) return;   /* no allocation inside a recording: this serve goes unchecked */
        if (cudaMalloc(&keep_stale_dev, sizeof(unsigned int)) != cudaSuccess ||
            cudaMemset(keep_stale_dev, 0, sizeof(unsigned int)) != cudaSuccess) {
            cuda_record_error("cudaMalloc", "cannot allocate the kept-rounding check's counter", __FILE__, __LINE__);
            keep_stale_dev = NULL;
            return;
        }
    }
    kept_stale_kernel<<<grid_for(k->n, 256), 256, 0, cuda_stream()>>>(keep_stale_dev, k->buf, k->src, k->n);
    cudaError_t e = cudaGetLastError();   /* not CUDA_CALL: the check must not move cuda_epoch */
    if (e != cudaSuccess) cuda_record_error("kept_stale_kernel", cudaGetErrorString(e), __FILE__, __LINE__);
}

static void kept_end(Kept *k) {
    if (k->valid) kept_valid--;
    k->armed = k->claimed = k->valid = k->owned = k->claim_skip = k->no_f32 = 0;
}

/* ---- packed gradient roundings (Ops.pack_bf16; FLOWHN_INPROJ_D16=0 turns them off) ----
 * Mamba-2's packed in_proj gradient dzxd [rows, ld] is filled by three ops, each
 * overwriting one column window (gated_rmsnorm_bwd's dz, conv1d_silu_bwd's
 * dx|B|C, copy_rows' ddt), and then read by one product as its dout. Without
 * help that product rounds the whole fp32 matrix (4 bytes read + 2 written a
 * value and a launch). The model declares the matrix first (Ops.pack_bf16,
 * ops.h states the promise: the next writes of x are window writes that tile
 * its columns, nothing else writes x until the product reads it, or until
 * keep_bf16(NULL, 0)); each window's producer asks cuda_pack_claim for the
 * window of a bf16 buffer laid out as x (row stride ld) and writes its
 * rounding there along with its fp32 values, then cuda_pack_done records the
 * columns as written. The product is served the buffer (operand()) only when
 * every column [0, ld) was written by such a producer and nothing broke the
 * pack: a declared write over x by anyone else (launch_done), a new pack on
 * the branch, keep_bf16(NULL, 0), x's release, a recording's start. A window
 * whose producer cannot write the rounding (another kernel path, another
 * shape) simply leaves its columns unwritten here: the product rounds the
 * fp32 matrix as before. The fp32 values are still written unless the model
 * also marked x bf16-only (Ops.bf16_only once = 6, right after the pack; see
 * "the pack's fp32 elided" below), so a product served the buffer reads the
 * very bits to_bf16 would give it: the same result. One pack per branch (its
 * buffer is reused by the next pack on that branch, ordered after the
 * product by the branch's stream); served only on that branch. Buffers are
 * allocated outside recordings only. */
typedef struct {
    const float *src;      /* NULL: not armed */
    size_t n;
    int ld, rows;
    __nv_bfloat16 *buf;
    size_t cap;
    unsigned char *cov;    /* [ld]: column written by a window producer */
    int ncov, cov_cap;
    int claim_c0, claim_c1;   /* between claim and done: the producer's window; claim_c1 == 0: none */
    int no_f32;       /* marked bf16-only (Ops.bf16_only once = 6): overwriting window producers may skip fp32 */
    int claim_skip;   /* between claim and done: the claiming producer stores no fp32 */
    int elided;       /* some window's fp32 was not written: x listed absent; gaps filled at the product */
} Pack;
static Pack packs[CUDA_BRANCHES];
static int pack_on = -1;   /* -1: FLOWHN_INPROJ_D16 not read yet */
static int dzxd_f32_on = -1;   /* -1: FLOWHN_DZXD_FP32 not read yet */
unsigned long cuda_pack_served, cuda_pack_windows, cuda_pack_elided, cuda_pack_filled;   /* for tests */

int cuda_set_inproj_d16(int on) { return env_switch(&pack_on, "FLOWHN_INPROJ_D16", 1, on); }
int cuda_set_dzxd_fp32(int on) { return env_switch(&dzxd_f32_on, "FLOWHN_DZXD_FP32", 0, on); }

static void pack_end(Pack *p) {
    p->src = NULL;
    p->claim_c0 = p->claim_c1 = 0;
    p->no_f32 = p->claim_skip = p->elided = 0;
}
static void packs_end_all(void) {
    for (int b = 0; b < CUDA_BRANCHES; b++) pack_end(&packs[b]);
}

/* ---- bf16-only outputs (Ops.bf16_only; FLOWHN_BF16_ONLY=0 writes fp32 as before) ----
 * With bf16 products some fp32 activations are never read in fp32: the norm
 * outputs u and v and SwiGLU's act reach their products (forward and dW)
 * only through their kept roundings, SwiGLU's backward dgate|dup only through
 * the shadow its one product reads. The model marks such an output
 * (Ops.bf16_only, right before its producer; ops.h states the promise) and
 * its producer, when it can, stores only the rounding: 4 bytes a value fewer.
 * Where that rounding lives must outlast every reader, by construction:
 *   once = 0 (a kept input): only the kept buffer qualifies. It is filled by
 *     this producer and ends only with keep_bf16(NULL, 0), a re-keep, a
 *     declared overlapping write or x's release, none of which the contract
 *     allows before x's last product.
 *   once = 1 (one product reads it, once): a shadow, pinned: served to that
 *     read whatever cuda_epoch did in between (the contract says nothing
 *     wrote x, so the rounding is x's; the epoch rule exists for fp32 sources
 *     other ops may rewrite), and never handed to another producer until then.
 *     A pinned shadow is released by its read, by a declared write over x, by
 *     keep_bf16(NULL, 0) and at the start of a recording.
 * No home (keeps or shadows off, no room, growth refused while recording, the
 * producer's accumulate mode, a kernel that cannot skip): the producer writes
 * fp32 as always, the same bits. The decision is host-side, so recorded graphs
 * replay it.
 * Loud, not lucky: every elided range is listed (absent[]) until keep_bf16(NULL,
 * 0), a declared write over all of it, or its release. A product whose operand
 * overlaps a listed range and is not served by its rounding fails (operand()
 * returns NULL, the error is recorded, cuda_bf16_only_refused counts it)
 * instead of rounding unwritten memory. Other readers cannot be seen from
 * here: under FLOWHN_BF16_KEEP_VERIFY=1 the producer fills the fp32 range with
 * NaN (0xFF bytes), so any fp32 reader poisons the loss (test_cuda_model runs
 * every architecture that way). The kept-rounding check skips bf16-only
 * entries (there is no fp32 x to compare with). */
typedef struct {
    const float *x;
    size_t n;
    int once;
} OnlyMark;
#define ONLY_MARKS 4   /* marks waiting for their producer (swiglu_bwd's two outputs at most) */
static OnlyMark only_marks[ONLY_MARKS];
static int n_only_marks;   /* a mark leaves when its producer claims, at keep_bf16(NULL, 0), or on overflow */
typedef struct {
    const float *x;
    size_t n;
} Absent;
static Absent *absent;
static int n_absent, absent_cap;
static int only_on = -1;   /* -1: FLOWHN_BF16_ONLY not read yet */
unsigned long cuda_bf16_only_elided, cuda_bf16_only_refused;   /* for tests */

int cuda_set_bf16_only(int on) { return env_switch(&only_on, "FLOWHN_BF16_ONLY", 1, on); }

static void pack_mark_only(const float *x, size_t n);
void cuda_bf16_only(const real *x, size_t n, int once) {
    if (!x || !n || precision != MM_BF16 || !cuda_set_bf16_only(-1)) return;
    if (once == 6) {   /* the branch's pack (no producer claims it as a whole): its window producers */
        pack_mark_only(x, n);
        return;
    }
    if (n_only_marks == ONLY_MARKS) n_only_marks = 0;   /* marks nobody claimed: forget them (no elision) */
    only_marks[n_only_marks++] = (OnlyMark){x, n, once};
}

static int only_mark(const float *x, size_t n) {
    for (int i = 0; i < n_only_marks; i++)
        if (only_marks[i].x == x && only_marks[i].n == n) return i;
    return -1;
}

static void absent_add(const float *x, size_t n) {
    if (n_absent == absent_cap) {
        int cap = absent_cap ? 2 * absent_cap : 64;
        Absent *t = (Absent *)realloc(absent, sizeof(Absent) * cap);
        if (!t) {   /* cannot list it: no loud failure is possible for this range, so say so now */
            cuda_record_error("bf16_only", "out of host memory for the list of bf16-only ranges", __FILE__, __LINE__);
            return;
        }
        absent = t;
        absent_cap = cap;
    }
    absent[n_absent++] = (Absent){x, n};
}
/* ranges inside [a, b) (whole: a declared write over all of a range, or its block freed) leave the list */
static void absent_drop_inside(uintptr_t a, uintptr_t b) {
    for (int i = 0; i < n_absent;) {
        uintptr_t x0 = (uintptr_t)absent[i].x, x1 = x0 + absent[i].n * sizeof(float);
        if (x0 >= a && x1 <= b) absent[i] = absent[--n_absent];
        else i++;
    }
}
static int absent_overlaps(const float *x, size_t n) {
    uintptr_t s0 = (uintptr_t)x, s1 = s0 + n * sizeof(float);
    for (int i = 0; i < n_absent; i++) {
        uintptr_t x0 = (uintptr_t)absent[i].x, x1 = x0 + absent[i].n * sizeof(float);
        if (s0 < x1 && x0 < s1) return 1;
    }
    return 0;
}
static void shadows_unpin_all(void) {
    for (int b = 0; b < CUDA_BRANCHES; b++)
        for (int k = 0; k < SHADOWS; k++)
            if (shadows[b][k].pinned) {
                shadows[b][k].pinned = 0;
                shadows[b][k].src = NULL;   /* its x is not to be read any more (or was rewritten) */
            }
}
/* every bf16-only state ends (keep_bf16(NULL, 0), the start of a recording) */
static void qkv_rec_end(void);
static void bf16_only_end(void) {
    shadows_unpin_all();
    qkv_rec_end();
    n_absent = 0;
    n_only_marks = 0;
}
/* FLOWHN_BF16_KEEP_VERIFY: an elided fp32 range filled with NaN, so that a reader the contract missed shows */
static void bf16_only_poison(const float *x, size_t n) {
    if (cuda_set_bf16_keep_verify(-1) <= 0) return;
    cudaError_t e = cudaMemsetAsync((void *)x, 0xFF, n * sizeof(float), cuda_stream());   /* declared by the producer */
    if (e != cudaSuccess) cuda_record_error("cudaMemsetAsync", cudaGetErrorString(e), __FILE__, __LINE__);
}

/* After a launch (or a few) that wrote the nw ranges w and nothing else, all
 * since `before`: roundings (the current branch's slots, every branch's
 * shadows) still valid before it stay valid unless their source overlaps
 * what was written. */
static void launch_done(unsigned long before, const CudaRange *w, int nw) {
    for (int k = 0; k < 3; k++) {
        Slot *s = &slots[cuda_branch()][k];
        if (s->src && s->epoch == before && !overlaps(s->src, s->n * sizeof(float), w, nw)) s->epoch = cuda_epoch;
    }
    for (int b = 0; b < CUDA_BRANCHES; b++)
        for (int k = 0; k < SHADOWS; k++) {
            Shadow *h = &shadows[b][k];
            if (h->pinned && overlaps(h->src, h->n * sizeof(float), w, nw)) {   /* x rewritten: not x's any more */
                h->pinned = 0;
                h->src = NULL;
            }
            if (h->src && h->epoch == before && !overlaps(h->src, h->n * sizeof(float), w, nw))
                h->epoch = cuda_epoch;
        }
    for (int i = 0; kept_valid && i < nkept; i++)   /* the contract forbids it; if it happens, exactness wins */
        if (kept[i].valid && overlaps(kept[i].src, kept[i].n * sizeof(float), w, nw)) kept_end(&kept[i]);
    for (int b = 0; b < CUDA_BRANCHES; b++)   /* a declared write over a pack, not by its window's producer */
        if (packs[b].src && !packs[b].claim_c1 && overlaps(packs[b].src, packs[b].n * sizeof(float), w, nw))
            pack_end(&packs[b]);
    for (int i = 0; n_absent && i < nw; i++)   /* fp32 written again over a whole elided range: readable again */
        if (w[i].p && w[i].bytes) absent_drop_inside((uintptr_t)w[i].p, (uintptr_t)w[i].p + w[i].bytes);
}
static void own_launch_done(unsigned long before, const void *written, size_t bytes) {
    CudaRange w = {written, bytes};
    launch_done(before, &w, 1);
}

void *cuda_shadow_claim(const float *out, size_t n) { return cuda_shadow_claim_only(out, n, NULL); }

void *cuda_shadow_claim_only(const float *out, size_t n, int *skip) {
    if (skip) *skip = 0;
    if (!n || !out || precision != MM_BF16) return NULL;
    /* marked bf16-only (Ops.bf16_only) and the producer can skip fp32 */
    int mark = only_on > 0 && n_only_marks ? only_mark(out, n) : -1;
    int mo = mark >= 0 ? only_marks[mark].once : -1;
    if (mo == 2 || mo == 3 || mo == 5 || mo >= 7) mark = -1;   /* a product's bf16 D (gu_d16, qkv_d16, datt_d16,
                                                                  * dact_d16, dnorm_d16: 8, 9; resid_d16: 10), not an op's */
    if (mark >= 0 && !skip) {
        /* the attention's out (once = 4) claimed by a producer that cannot skip (our attention kernels): the
         * mark is spent (fp32 written), so it does not linger; other marks wait for a producer that can */
        if (mo == 4) only_marks[mark] = only_marks[--n_only_marks];
        mark = -1;
    }
    int once = mark >= 0 && mo == 1;
    if (mark >= 0) only_marks[mark] = only_marks[--n_only_marks];   /* a mark serves its producer once */
    /* once = 4 (the attention's out): only its kept buffer is a home, and only with FLOWHN_BF16_ATT_O on */
    if (mo == 4 && mark >= 0 && !cuda_set_bf16_att_o(-1)) mark = -1;
    for (int i = 0; keep_on > 0 && i < nkept; i++)   /* a kept input's producer writes its kept buffer */
        if (kept[i].armed && kept[i].src == out && kept[i].n == n && !kept[i].claimed && !kept[i].valid &&
            !kept[i].owned) {
            kept[i].claimed = 1;   /* counted in cuda_keep_produced at done, not as a shadow */
            kept[i].claim_skip = mark >= 0;   /* a kept buffer lasts until keep_bf16(NULL, 0): a home for any mark */
            if (mark >= 0) *skip = 1;
            return kept[i].buf;
        }
    if (!cuda_set_bf16_shadow(-1)) return NULL;
    Shadow *t = shadows[cuda_branch()], *h = NULL;
    /* which buffer: the same output produced again takes its own; else the least recently used of those not
     * current (an empty one, or one whose source was written since); else the least recently used. A pinned
     * one (the only copy of a bf16-only output not read yet) is never another output's. */
    for (int k = 0; k < SHADOWS; k++)
        if (t[k].src == out && !t[k].claimed) h = &t[k];
    for (int pass = 0; pass < 2 && !h; pass++)
        for (int k = 0; k < SHADOWS; k++) {
            Shadow *c = &t[k];
            int current = c->src && c->epoch == cuda_epoch;
            if (c->claimed || c->pinned || (pass == 0 && current)) continue;
            if (!h || c->used < h->used) h = c;
        }
    if (!h) return NULL;
    h->used = ++shadow_clock;
    h->src = NULL;   /* overwritten from here on */
    h->pinned = 0;
    if (h->cap < n) {
        if (cuda_capturing()) return NULL;   /* no allocation inside a recording: the consumer rounds */
        /* Every buffer of the branch grows to one capacity. Which buffer a producer gets depends on the
         * claims before it, which differ between the first steps and a recorded one; had only this buffer
         * grown, a recording could draw a smaller one, refuse the claim, and make its consumer round into a
         * slot the unrecorded steps never grew: a cudaFree inside the capture (graph recording failed at
         * gpt2small on the H200, session 6). With one capacity any buffer serves any size seen before. */
        size_t cap = n + n / 4;
        for (int k = 0; k < SHADOWS; k++) {
            Shadow *c = &t[k];
            if (c->cap >= n || c->claimed || c->pinned) continue;   /* a pinned buffer holds data still to read */
            if (c->buf) {
                /* counts the free (a recorded graph may have used the buffer) but leaves cuda_epoch: a free
                 * writes nothing; this buffer's own shadow, if any, is dropped */
                cuda_free_gen++;
                if (cudaFree(c->buf) != cudaSuccess) cuda_record_error("cudaFree", "bf16 shadow", __FILE__, __LINE__);
            }
            c->buf = NULL;
            c->cap = 0;
            c->src = NULL;
            if (cudaMalloc(&c->buf, cap * sizeof(__nv_bfloat16)) != cudaSuccess) {
                c->buf = NULL;
                cudaGetLastError();   /* no room: not an error, the consumer rounds into its slot */
                continue;
            }
            c->cap = cap;
        }
        if (h->cap < n) return NULL;
    }
    h->claimed = out;
    h->claimed_n = n;
    /* a shadow is a home for a once-read output only: pinned until that read */
    h->claim_skip = once;   /* never once = 4: a shadow serves one read, out has two readers */
    if (h->claim_skip) *skip = 1;
    cuda_shadow_claims++;
    return h->buf;
}

void cuda_shadow_done(unsigned long before, const CudaRange *w, int nw) {
    launch_done(before, w, nw);   /* first: it drops listed ranges the producer declared (out among them) */
    for (int i = 0; i < nkept; i++)
        if (kept[i].claimed) {
            kept[i].claimed = 0;
            kept[i].valid = 1;
            kept[i].branch = cuda_branch();
            kept_valid++;
            cuda_keep_produced++;
            if (kept[i].claim_skip) {
                kept[i].claim_skip = 0;
                kept[i].no_f32 = 1;
                absent_add(kept[i].src, kept[i].n);
                bf16_only_poison(kept[i].src, kept[i].n);
                cuda_bf16_only_elided++;
            }
        }
    Shadow *t = shadows[cuda_branch()];
    for (int k = 0; k < SHADOWS; k++)
        if (t[k].claimed) {
            t[k].src = t[k].claimed;
            t[k].n = t[k].claimed_n;
            t[k].epoch = cuda_epoch;
            t[k].claimed = NULL;
            if (t[k].claim_skip) {
                t[k].claim_skip = 0;
                t[k].pinned = 1;
                absent_add(t[k].src, t[k].n);
                bf16_only_poison(t[k].src, t[k].n);
                cuda_bf16_only_elided++;
            }
        }
}

/* the current branch's shadow of exactly [x, x + n), if current */
static const void *shadow_of(const float *x, size_t n) {
    if (shadow_on <= 0) return NULL;
    Shadow *t = shadows[cuda_branch()];
    for (int k = 0; k < SHADOWS; k++)
        if (t[k].src == x && t[k].n == n && (t[k].epoch == cuda_epoch || t[k].pinned)) {
            t[k].used = ++shadow_clock;
            t[k].pinned = 0;   /* a bf16-only output's one read: from here on a shadow like any other */
            cuda_shadow_served++;
            return t[k].buf;
        }
    return NULL;
}

/* Ops.pack_bf16 (see "packed gradient roundings" above) */
void cuda_pack_bf16(const real *x, size_t n, int ld) {
    Pack *p = &packs[cuda_branch()];
    pack_end(p);   /* the branch's last pack: its product ran (stream order puts the next writes after it) */
    /* x's windows are all rewritten next (the promise): an older pack's elision of x (listed absent) no longer
     * describes it, pack or not; this pack lists x again if it elides */
    if (x && n && n_absent) absent_drop_inside((uintptr_t)x, (uintptr_t)(x + n));
    if (!x || !n || ld <= 0 || n % (size_t)ld || precision != MM_BF16 || !cuda_set_inproj_d16(-1)) return;
    /* x 16-byte aligned: a window whose fp32 pointer a producer finds 16-byte aligned (its vector path) then
     * has its bf16 place 8-byte aligned (the buffer is 256-byte aligned, the same offset) */
    if ((uintptr_t)x & 15) return;
    if (p->cov_cap < ld) {
        unsigned char *c = (unsigned char *)realloc(p->cov, (size_t)ld);
        if (!c) return;   /* no pack: the product rounds, as before */
        p->cov = c;
        p->cov_cap = ld;
    }
    if (p->cap < n) {
        if (cuda_capturing()) return;   /* no allocation inside a recording: the product rounds */
        if (p->buf) cuda_scratch_free(p->buf);   /* counts the free: a recorded graph may have used it */
        p->buf = NULL;
        p->cap = 0;
        if (cudaMalloc(&p->buf, n * sizeof(__nv_bfloat16)) != cudaSuccess) {
            p->buf = NULL;
            cudaGetLastError();   /* no room: not an error, the product rounds */
            return;
        }
        p->cap = n;
    }
    memset(p->cov, 0, (size_t)ld);
    p->ncov = 0;
    p->src = x;
    p->n = n;
    p->ld = ld;
    p->rows = (int)(n / (size_t)ld);
}

/* the window [out, out + cols) of every one of `rows` rows, ld apart: inside this branch's pack, whole in its
 * rows and at its stride? Then its place in the pack's bf16 buffer (same layout), for the producer to write
 * the rounding of what it stores in out; NULL otherwise (the producer writes fp32 only). At most one claim
 * at a time; cuda_pack_done after the launch (and after cuda_shadow_done, if the producer declares). */
void *cuda_pack_claim(const float *out, int rows, int cols, int ld) {
    return cuda_pack_claim_only(out, rows, cols, ld, 1, NULL);
}

void *cuda_pack_claim_only(const float *out, int rows, int cols, int ld, int acc, int *skip) {
    if (skip) *skip = 0;
    if (!out || precision != MM_BF16 || pack_on <= 0) return NULL;
    Pack *p = &packs[cuda_branch()];
    if (!p->src || p->claim_c1 || ld != p->ld || rows != p->rows || cols <= 0 || out < p->src) return NULL;
    size_t off = (size_t)(out - p->src);
    if (off >= (size_t)ld || off + (size_t)cols > (size_t)ld) return NULL;
    p->claim_c0 = (int)off;
    p->claim_c1 = (int)off + cols;
    /* the fp32 may stay unwritten: the model marked the pack bf16-only and this write overwrites its window
     * (an accumulation reads the fp32 values); the switches are read at the mark */
    p->claim_skip = skip && !acc && p->no_f32;
    if (p->claim_skip) *skip = 1;
    return p->buf + off;
}

/* the claimed window's launches are done: its columns hold their rounding (and, skipped, no fp32) */
void cuda_pack_done(void) {
    Pack *p = &packs[cuda_branch()];
    if (!p->claim_c1) return;
    if (p->src) {
        for (int c = p->claim_c0; c < p->claim_c1; c++)
            if (!p->cov[c]) p->cov[c] = 1, p->ncov++;
        cuda_pack_windows++;
        if (p->claim_skip) {
            if (!p->elided) absent_add(p->src, p->n);   /* the whole matrix: only its product may read it */
            p->elided = 1;
            cuda_pack_elided++;
            cuda_bf16_only_elided++;
        }
    }
    p->claim_c0 = p->claim_c1 = 0;
    p->claim_skip = 0;
}

/* ---- the pack's fp32 elided (Ops.bf16_only once = 6; FLOWHN_DZXD_FP32=1 writes it as before) ----
 * Mamba-2's dzxd is read by its product only, through the pack; the model
 * says so with bf16_only(x, n, 6) right after pack_bf16(x, n, ld). Its window
 * producers, when they claim in overwrite mode, then store only the rounding
 * (cuda_pack_claim_only's *skip) and the matrix is listed absent (a product
 * not served the pack fails in operand(); cuda_bf16_absent for other ops);
 * under FLOWHN_BF16_KEEP_VERIFY=1 it is filled with NaN here, before its
 * producers, so any other reader poisons the loss (windows that do write
 * fp32 overwrite their columns). A producer that cannot write the rounding
 * (another kernel path) writes fp32 as before and leaves its columns
 * uncovered: at the product, an elided pack's uncovered columns are rounded
 * from their fp32 into the pack (pack_fill_kernel), so the pack serves on
 * every path. Host-side decisions: recorded graphs replay them. */
static void pack_mark_only(const float *x, size_t n) {
    Pack *p = &packs[cuda_branch()];
    if (p->src != x || p->n != n || p->ncov || p->claim_c1 || cuda_set_dzxd_fp32(-1)) return;
    p->no_f32 = 1;
    if (cuda_set_bf16_keep_verify(-1) > 0) {   /* a write over x: roundings made before it are not reused */
        __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);
        bf16_only_poison(x, n);
    }
}

/* the columns [c0, c1) of every row (ld apart) rounded into the pack's buffer, laid out as x */
__global__ void pack_fill_kernel(__nv_bfloat16 *dst, const float *src, int rows, int ld, int c0, int c1) {
    size_t w = (size_t)(c1 - c0), i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * w) return;
    size_t k = (i / w) * (size_t)ld + c0 + i % w;
    dst[k] = __float2bfloat16_rn(src[k]);
}
static void pack_fill(Pack *p) {
    for (int c0 = 0; c0 < p->ld;) {
        if (p->cov[c0]) { c0++; continue; }
        int c1 = c0;
        while (c1 < p->ld && !p->cov[c1]) c1++;
        size_t m = (size_t)p->rows * (size_t)(c1 - c0);
        pack_fill_kernel<<<grid_for(m, 256), 256, 0, cuda_stream()>>>(p->buf, p->src, p->rows, p->ld, c0, c1);
        cudaError_t e = cudaGetLastError();   /* not CUDA_CALL: writes only the pack (scratch), like as_bf16's */
        if (e != cudaSuccess) cuda_record_error("pack_fill_kernel", cudaGetErrorString(e), __FILE__, __LINE__);
        for (int c = c0; c < c1; c++) p->cov[c] = 1;
        p->ncov += c1 - c0;
        cuda_pack_filled++;
        c0 = c1;
    }
}

/* this branch's pack of exactly [x, x + n), if every column was written */
static const void *packed_of(const float *x, size_t n) {
    Pack *p = &packs[cuda_branch()];
    if (pack_on <= 0 || p->src != x || p->n != n || p->claim_c1) return NULL;
    if (p->ncov != p->ld && p->elided) pack_fill(p);   /* the uncovered windows' fp32 was written: round it */
    if (p->ncov != p->ld) return NULL;
    cuda_pack_served++;
    if (p->elided) return p->buf;   /* no fp32 to compare with (as bf16-only kept entries) */
    Kept chk;   /* FLOWHN_BF16_KEEP_VERIFY: compared with a fresh rounding of x, as a kept rounding is */
    memset(&chk, 0, sizeof chk);
    chk.src = x;
    chk.n = n;
    chk.buf = p->buf;
    kept_verify(&chk);
    return p->buf;
}

/* tests: this branch's pack buffer, if (x, n) is its pack and every column was written */
const void *cuda_pack_rounding(const float *x, size_t n) {
    Pack *p = &packs[cuda_branch()];
    return (p->src == x && p->n == n && p->ncov == p->ld) ? p->buf : NULL;
}

static void qkv_home_freed(const void *buf);   /* below: the q|k|v D record loses a kept buffer it lies in */

/* Ops.keep_bf16 (see the block comment "kept roundings" above) */
void cuda_keep_bf16(const real *x, size_t n) {
    if (!x) {   /* every keep ends, and with them every bf16-only promise */
        for (int i = 0; i < nkept; i++) kept_end(&kept[i]);
        bf16_only_end();
        packs_end_all();
        return;
    }
    if (!n || precision != MM_BF16 || !cuda_set_bf16_keep(-1)) return;
    Kept *k = NULL, *free_k = NULL;
    for (int i = 0; i < nkept && !k; i++) {
        if (kept[i].src == x) k = &kept[i];
        else if (!kept[i].src && !free_k) free_k = &kept[i];
    }
    if (!k) k = free_k;
    if (!k) {
        if (nkept == kept_alloc_n) {
            int cap = kept_alloc_n ? 2 * kept_alloc_n : 64;
            Kept *t = (Kept *)realloc(kept, sizeof(Kept) * cap);
            if (!t) return;   /* no keep: x is rounded per product */
            kept = t;
            kept_alloc_n = cap;
        }
        k = &kept[nkept++];
        memset(k, 0, sizeof *k);
    }
    kept_end(k);   /* the next op rewrites x */
    k->src = x;
    k->n = n;
    if (k->cap < n) {
        if (cuda_capturing()) return;   /* no allocation inside a recording: x is rounded per product */
        if (k->buf) {
            qkv_home_freed(k->buf);
            cuda_memory_account(k->cap * sizeof(__nv_bfloat16), 0);
            cuda_scratch_free(k->buf);   /* counts the free: a recorded graph may have used it */
        }
        k->buf = NULL;
        k->cap = 0;
        if (cudaMalloc(&k->buf, n * sizeof(__nv_bfloat16)) != cudaSuccess) {
            k->buf = NULL;
            cudaGetLastError();   /* no room: not an error, x is rounded per product */
            return;
        }
        k->cap = n;
        cuda_memory_account(k->cap * sizeof(__nv_bfloat16), 1);   /* with the model's memory, as estimated */
    }
    k->armed = 1;
}

/* the block [p, p + bytes) is freed: keeps of inputs inside it end, their buffers go */
void cuda_keep_released(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p, b = a + (bytes ? bytes : 1);
    absent_drop_inside(a, b);
    for (int br = 0; br < CUDA_BRANCHES; br++)
        if (packs[br].src && (uintptr_t)packs[br].src >= a && (uintptr_t)packs[br].src < b) pack_end(&packs[br]);
    for (int br = 0; br < CUDA_BRANCHES; br++)
        for (int k = 0; k < SHADOWS; k++) {
            Shadow *h = &shadows[br][k];
            if (h->pinned && (uintptr_t)h->src >= a && (uintptr_t)h->src < b) h->pinned = 0, h->src = NULL;
        }
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (!k->src || (uintptr_t)k->src < a || (uintptr_t)k->src >= b) continue;
        kept_end(k);
        if (k->buf) {
            qkv_home_freed(k->buf);
            cuda_memory_account(k->cap * sizeof(__nv_bfloat16), 0);
            cuda_scratch_free(k->buf);
        }
        memset(k, 0, sizeof *k);   /* a free entry */
    }
}

void cuda_keep_before_recording(void) {
    for (int i = 0; i < nkept; i++) kept_end(&kept[i]);
    bf16_only_end();
    packs_end_all();
}

void cuda_keep_stats(size_t *bytes, int *entries) {
    size_t b = 0;
    int e = 0;
    for (int i = 0; i < nkept; i++)
        if (kept[i].src) {
            b += kept[i].cap * sizeof(__nv_bfloat16);
            e++;
        }
    if (bytes) *bytes = b;
    if (entries) *entries = e;
}

/* the kept rounding of exactly [x, x + n) on this branch, made now (into its
 * buffer, by the first reader) if x is kept and not rounded yet; NULL: not kept */
static const void *kept_of(const float *x, size_t n) {
    if (!nkept || keep_on <= 0) return NULL;
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (k->src != x || k->n != n || !k->armed || k->claimed || k->owned) continue;
        if (k->valid) {
            if (k->branch != cuda_branch()) return NULL;
            cuda_keep_served++;
            kept_verify(k);
            return k->buf;
        }
        unsigned long before = cuda_epoch;
        to_bf16_kernel<<<grid_for((n + 1) / 2, 256), 256, 0, cuda_stream()>>>(k->buf, x, n);
        CUDA_LAUNCHED();
        own_launch_done(before, k->buf, n * sizeof(__nv_bfloat16));
        k->valid = 1;
        k->branch = cuda_branch();
        kept_valid++;
        cuda_keep_fills++;
        return k->buf;
    }
    return NULL;
}

/* ---- owned keeps: an op's own bf16 transform of a kept input (cuda_ops.h) ----
 * cuDNN's attention (attention_cudnn.cu) converts q, k (rotated by RoPE) and
 * v to bf16 in its forward and needs exactly the same bf16 tensors in its
 * backward. The model keeps q, k, v (Ops.keep_bf16 before their products), so
 * the same contract holds as for any kept input: after its producer, nothing
 * writes [x, x + n) until keep_bf16(NULL, 0). The attention's forward takes the
 * kept buffer (cuda_keep_own: it is then never served as x's rounding, nor
 * claimed by a producer), writes its transform there and marks it written
 * with a tag naming the transform (cuda_keep_owned_done); the backward reads
 * it (cuda_keep_owned) only if the keep is still in force (not ended by
 * keep_bf16(NULL, 0), a re-keep, a declared overlapping write, a release of
 * x's block or the start of a recording), on the same branch, with the same
 * tag. Otherwise it converts again. */
void *cuda_keep_own(const float *x, size_t n) {
    if (!nkept || keep_on <= 0 || precision != MM_BF16) return NULL;
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (k->src != x || k->n != n || !k->armed || k->claimed) continue;
        if (k->valid && !k->owned) return NULL;   /* already x's rounding (a product read it, or bf16-only) */
        if (k->owned && !k->valid) return NULL;   /* taken and not written yet: the same x twice in one op
                                                   * (k == v), or a forward that failed */
        if (k->valid) kept_valid--;
        k->valid = 0;   /* rewritten from here on */
        k->owned = 1;
        return k->buf;
    }
    return NULL;
}
void cuda_keep_owned_done(const float *x, size_t n, unsigned long long tag) {
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (k->src != x || k->n != n || !k->armed || !k->owned || k->valid) continue;
        k->valid = 1;
        k->tag = tag;
        k->branch = cuda_branch();
        kept_valid++;
    }
}
const void *cuda_keep_owned(const float *x, size_t n, unsigned long long tag) {
    if (!nkept || keep_on <= 0) return NULL;
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (k->src == x && k->n == n && k->armed && k->owned && k->valid && k->tag == tag &&
            k->branch == cuda_branch())
            return k->buf;
    }
    return NULL;
}
/* an owned keep of exactly (x, n) taken and not written (cuda_keep_own with no cuda_keep_owned_done) given back:
 * the entry is again an armed keep nobody owns, as if it had never been taken (linear.cu qkv_d16's D written
 * back to fp32: today's path then takes the keep again) */
static void keep_disown(const float *x, size_t n) {
    for (int i = 0; i < nkept; i++) {
        Kept *k = &kept[i];
        if (k->src == x && k->n == n && k->owned && !k->valid) k->owned = 0;
    }
}
/* the kept rounding of exactly [x, x + n) (made now if not yet), for ops other than the products; NULL: none */
const void *cuda_keep_rounding(const float *x, size_t n) { return precision == MM_BF16 ? kept_of(x, n) : NULL; }

/* FLOWHN_BF16_KEEP_VERIFY: an owned buffer served, compared with a fresh conversion (counted in cuda_keep_stale) */
__global__ void owned_stale_kernel(unsigned int *count, const __nv_bfloat16 *a, const __nv_bfloat16 *b, size_t n) {
    unsigned int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        bad += __bfloat16_as_ushort(a[i]) != __bfloat16_as_ushort(b[i]);
    if (bad) atomicAdd(count, bad);
}
int cuda_keep_verify_on(void) { return cuda_set_bf16_keep_verify(-1) > 0; }
void cuda_keep_verify_pair(const void *kept_buf, const void *fresh, size_t n) {
    if (!keep_stale_dev) {
        if (cuda_capturing()) return;
        if (cudaMalloc(&keep_stale_dev, sizeof(unsigned int)) != cudaSuccess ||
            cudaMemset(keep_stale_dev, 0, sizeof(unsigned int)) != cudaSuccess) {
            cuda_record_error("cudaMalloc", "cannot allocate the kept-rounding check's counter", __FILE__, __LINE__);
            keep_stale_dev = NULL;
            return;
        }
    }
    owned_stale_kernel<<<grid_for(n, 256), 256, 0, cuda_stream()>>>(keep_stale_dev, (const __nv_bfloat16 *)kept_buf,
                                                                    (const __nv_bfloat16 *)fresh, n);
    cudaError_t e = cudaGetLastError();   /* not CUDA_CALL: the check must not move cuda_epoch */
    if (e != cudaSuccess) cuda_record_error("owned_stale_kernel", cudaGetErrorString(e), __FILE__, __LINE__);
}

/* the fp32 matrix rounded to bf16 in slot `slot`; NULL on failure */
static const void *as_bf16(const float *src, size_t n, int slot) {
    Slot *s = &slots[cuda_branch()][slot];
    if (s->src == src && s->n == n && s->epoch == cuda_epoch) return s->buf;
    if (s->cap < n) {
        cuda_scratch_free(s->buf);
        s->buf = NULL;
        s->cap = 0;
        size_t cap = n + n / 4;
        if (cudaMalloc(&s->buf, cap * sizeof(__nv_bfloat16)) != cudaSuccess) {
            s->src = NULL;
            cuda_record_error("cudaMalloc", "cannot allocate bf16 matmul scratch", __FILE__, __LINE__);
            return NULL;
        }
        s->cap = cap;
    }
    unsigned long before = cuda_epoch;
    to_bf16_kernel<<<grid_for((n + 1) / 2, 256), 256, 0, cuda_stream()>>>(s->buf, src, n);
    CUDA_LAUNCHED();
    own_launch_done(before, s->buf, n * sizeof(__nv_bfloat16));
    s->src = src;
    s->n = n;
    s->epoch = cuda_epoch;
    return s->buf;
}

/* ---- frozen weights (Ops.freeze_weights): while the generator lives the
 * parameters do not change, so in bf16 mode they are rounded once, into one
 * bf16 copy of the whole buffer, made on the first product that needs it.
 * A decode step then reads 2 bytes per weight instead of rounding each weight
 * (4 read + 2 written) and reading the result again (2), and launches no
 * rounding kernels. */
static struct {
    const float *base;
    size_t n;
    __nv_bfloat16 *bf;  /* NULL until a bf16 product asks */
} frozen;

int cuda_weights_frozen(void) { return frozen.base != NULL; }

static int frozen_make_copy(void) {
    if (cudaMalloc(&frozen.bf, frozen.n * sizeof(__nv_bfloat16)) != cudaSuccess) {
        frozen.bf = NULL;
        frozen.base = NULL;  /* no room: products round per call, as without freezing */
        return fh_error("no device memory for a bf16 copy of %zu frozen weights", frozen.n);
    }
    cuda_round_bf16(frozen.bf, frozen.base, frozen.n);
    return 0;
}

/* The copy is made now when bf16 products are on (so no allocation happens
 * inside later steps, which a captured graph could not contain), else on the
 * first bf16 product. */
int cuda_freeze_weights(const float *p, size_t n) {
    cuda_scratch_free(frozen.bf);
    frozen.bf = NULL;
    frozen.base = p;
    frozen.n = p ? n : 0;
    return p && n && precision == MM_BF16 ? frozen_make_copy() : 0;
}

/* the frozen bf16 copy of [x, x + n) if x lies inside the frozen buffer */
static const void *frozen_bf16(const float *x, size_t n) {
    if (!frozen.base || x < frozen.base || x + n > frozen.base + frozen.n) return NULL;
    if (!frozen.bf && frozen_make_copy()) return NULL;
    return frozen.bf + (x - frozen.base);
}

/* ---- trained weights (Ops.train_weights): in training the parameters change
 * once a step, in AdamW, so in bf16 mode one bf16 copy of them is kept,
 * written by the AdamW kernels themselves as they update each parameter
 * (adamw.cu: 2 more bytes written per parameter, no extra pass). A product
 * then reads 2 bytes per weight instead of rounding it (4 read + 2 written)
 * before every forward and backward product and reading the rounding (2).
 * The copy holds round-to-nearest-even of the same fp32 values the scratch
 * would, so every product gives the same bits as without it.
 * Layout: tensor by tensor (the starts train_weights is given), each tensor
 * starting 256-byte aligned, as a fresh scratch slot does: cuBLASLt then gets
 * the same alignment hints, the same plan and the same algorithm. (Laid out
 * as the fp32 buffer, a weight after an odd-sized tensor, e.g. Mamba's
 * dt_bias or conv1d weight, would be misaligned: most weights of the SSM
 * architectures are.) The padding between tensors (< 128 values each) is never
 * read.
 * `valid`: the copy matches the buffer. A write to the buffer that is not
 * AdamW's clears it (cuda_weights_written: from_host, zero, copy_rows and the
 * NCCL collectives check for overlap; no compute op writes parameters), and
 * the next product (or graph recording or launch) makes the copy again: one
 * rounding pass over the buffer, on the legacy stream, so it is ordered after
 * the work of every branch stream and before everything queued after it.
 * FLOWHN_BF16_MASTER=0 turns it off (products round each weight, as before). */
static struct {
    const float *base;
    size_t n;
    int nseg;              /* tensors */
    size_t *poff;          /* host: nseg + 1 parameter offsets (the tensors' starts, then n) */
    size_t *coff;          /* host: nseg copy offsets, multiples of 128 */
    size_t copy_n;         /* the copy's length (tensors and padding) */
    size_t longest;        /* the longest tensor */
    size_t *tab;           /* device: poff, then coff (the kernels' WeightsCopy.tab) */
    __nv_bfloat16 *bf;     /* NULL until made (bf16 products on, and room) */
    int valid;             /* bf is the rounding of [base, base + n) now (once the queued work has run) */
    int no_room;           /* the allocation failed: products round per call */
    int capture_stale;     /* a recorded AdamW wrote the buffer without the copy: each replay makes it stale */
    unsigned long served, refreshes;  /* for tests (cuda_weights_copy_stats) */
} master;

static void master_drop(void) {
    if (master.bf) cuda_memory_account(master.copy_n * sizeof(__nv_bfloat16), 0);
    cuda_scratch_free(master.bf);   /* counts the free: a recorded step that wrote the copy is recorded again */
    cuda_scratch_free(master.tab);
    free(master.poff);
    free(master.coff);
    memset(&master, 0, sizeof master);
}

/* the tensor holding parameter offset `off` (< n) */
static int seg_of(size_t off) {
    int lo = 0, hi = master.nseg - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (master.poff[mid] <= off) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* the copy's memory and table, outside a recording; 0, or -1 (no copy: products round per call) */
static int master_alloc(void) {
    if (master.bf) return 0;
    if (!master.base || master.no_room || cuda_capturing()) return -1;
    size_t tab_bytes = sizeof(size_t) * (2 * (size_t)master.nseg + 1);
    if (cudaMalloc(&master.bf, master.copy_n * sizeof(__nv_bfloat16)) != cudaSuccess ||
        cudaMalloc(&master.tab, tab_bytes) != cudaSuccess) {
        cudaGetLastError();   /* not a failure of the ops: the next launch check must not see it */
        cuda_scratch_free(master.bf);
        master.bf = NULL;
        master.tab = NULL;
        master.no_room = 1;
        return fh_error("no device memory for a bf16 copy of %zu trained weights (%.1f MiB): products round them "
                        "one by one", master.n, master.copy_n * 2.0 / 1048576.0);
    }
    cuda_memory_account(master.copy_n * sizeof(__nv_bfloat16), 1);   /* with the model's memory, as estimated */
    CUDA_CALL(cudaMemcpy(master.tab, master.poff, sizeof(size_t) * (master.nseg + 1), cudaMemcpyHostToDevice));
    CUDA_CALL(cudaMemcpy(master.tab + master.nseg + 1, master.coff, sizeof(size_t) * master.nseg,
                         cudaMemcpyHostToDevice));
    master.valid = 0;
    return 0;
}

/* the whole buffer rounded into the copy, tensor t by block row t */
__global__ void seg_round_kernel(__nv_bfloat16 *bf, const float *src, const size_t *tab, int nseg) {
    int t = blockIdx.y;
    size_t lo = tab[t], hi = tab[t + 1], c = tab[nseg + 1 + t];
    for (size_t i = lo + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < hi; i += (size_t)gridDim.x * blockDim.x)
        bf[c + (i - lo)] = __float2bfloat16_rn(src[i]);
}

/* the copy made current, outside a recording; 0, or -1 (not current) */
static int master_refresh(void) {
    if (master_alloc()) return -1;
    if (master.valid) return 0;
    if (cuda_capturing()) return -1;
    unsigned long before = cuda_epoch;
    seg_round_kernel<<<weights_copy_grid(master.longest, master.nseg, 256), 256, 0, 0>>>(master.bf, master.base,
                                                                                        master.tab, master.nseg);
    CUDA_LAUNCHED();
    own_launch_done(before, master.bf, master.copy_n * sizeof(__nv_bfloat16));
    master.valid = 1;
    master.refreshes++;
    return 0;
}

int cuda_train_weights(const float *p, size_t n, const size_t *starts, int count) {
    if (!n) {
        if (!p || p == master.base) master_drop();
        return 0;
    }
    master_drop();   /* one trained buffer at a time: the last call wins */
    const char *e = getenv("FLOWHN_BF16_MASTER");
    if (!p || (e && !strcmp(e, "0"))) return 0;
    /* the tensors: the given starts that lie inside (0 first, ascending, no empty tensor) */
    master.poff = (size_t *)malloc(sizeof(size_t) * ((count > 0 ? count : 0) + 2));
    master.coff = (size_t *)malloc(sizeof(size_t) * ((count > 0 ? count : 0) + 1));
    if (!master.poff || !master.coff) { master_drop(); return fh_error("out of memory"); }
    int k = 0;
    master.poff[k++] = 0;
    for (int i = 0; i < count; i++)
        if (starts[i] > master.poff[k - 1] && starts[i] < n) master.poff[k++] = starts[i];
    if (k > 65535) k = 1;   /* more tensors than a grid has rows: one (weights after odd sizes round per call) */
    master.nseg = k;
    master.poff[k] = n;
    size_t c = 0;
    for (int t = 0; t < k; t++) {
        size_t len = master.poff[t + 1] - master.poff[t];
        master.coff[t] = c;
        c += (len + 127) / 128 * 128;
        if (len > master.longest) master.longest = len;
    }
    master.copy_n = c;
    master.base = p;
    master.n = n;
    /* made now when bf16 products are on, so that no allocation happens inside a recorded step; else on the
     * first bf16 product. Made current by the first product that reads it. */
    return precision == MM_BF16 ? master_alloc() : 0;
}

void cuda_weights_written(const void *p, size_t bytes) {
    if (!master.base || !bytes) return;
    uintptr_t a = (uintptr_t)p, b = a + bytes, m0 = (uintptr_t)master.base, m1 = m0 + master.n * sizeof(float);
    if (a < m1 && m0 < b) master.valid = 0;
}

void cuda_weights_released(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p, b = a + (bytes ? bytes : 1), m0 = (uintptr_t)master.base;
    if (master.base && m0 >= a && m0 < b) master_drop();   /* the buffer is gone */
}

int cuda_weights_adamw(const float *p, size_t n, WeightsCopy *w) {
    memset(w, 0, sizeof *w);
    if (!master.base || !n || p + n <= master.base || master.base + master.n <= p) return 0;  /* not ours */
    if (master.bf && master.valid && p >= master.base && p + n <= master.base + master.n) {
        size_t a = (size_t)(p - master.base);
        w->bf = master.bf;
        w->tab = master.tab;
        w->nseg = master.nseg;
        w->a = a;
        w->t0 = seg_of(a);
        w->t1 = seg_of(a + n - 1);
        for (int t = w->t0; t <= w->t1; t++) {
            size_t lo = master.poff[t] > a ? master.poff[t] : a;
            size_t hi = master.poff[t + 1] < a + n ? master.poff[t + 1] : a + n;
            if (hi - lo > w->longest) w->longest = hi - lo;
        }
        return 1;
    }
    /* written without the copy: stale from now on (and after every replay of a recording of this) */
    master.valid = 0;
    if (cuda_capturing()) master.capture_stale = 1;
    return 0;
}

int cuda_weights_host_tab(const size_t **poff, const size_t **coff) {
    *poff = master.poff;
    *coff = master.coff;
    return master.nseg;
}

void cuda_weights_before_recording(void) {
    if (master.base && precision == MM_BF16) master_refresh();
    master.capture_stale = 0;
}
int cuda_weights_recording_stales(void) { return master.capture_stale; }

void cuda_weights_before_replay(int stales) {
    /* a recording that read the copy finds it current; one whose AdamW writes the buffer without it leaves it
     * stale (it may read it at the start of the next replay: made current again then) */
    if (master.base && master.bf && !master.valid) master_refresh();
    if (stales) master.valid = 0;
}

int cuda_weights_copy_to_host(uint16_t *dst, int refresh, int *valid) {
    if (!master.base || (refresh && master_refresh()) || !master.bf) return -1;
    if (valid) *valid = master.valid;
    CUDA_CALL(cudaDeviceSynchronize());
    for (int t = 0; t < master.nseg; t++)
        CUDA_CALL(cudaMemcpy(dst + master.poff[t], master.bf + master.coff[t],
                             sizeof(uint16_t) * (master.poff[t + 1] - master.poff[t]), cudaMemcpyDeviceToHost));
    return cuda_ops_check();
}

void cuda_weights_copy_stats(size_t *bytes, unsigned long *served, unsigned long *refreshes) {
    if (bytes) *bytes = master.bf ? master.copy_n * sizeof(__nv_bfloat16) : 0;
    if (served) *served = master.served;
    if (refreshes) *refreshes = master.refreshes;
}

/* The copy's slice for [x, x + n) if it serves that weight now: contiguous
 * in the copy, 256-byte aligned there (every tensor's start is; a slice from
 * inside a tensor may not be: then it is rounded per product), and the copy
 * current (made so here, outside a recording). Contiguous: inside one tensor,
 * or spanning adjacent tensors (a product over stacked weights, e.g. q, k, v
 * or gate, up as one: perf-notes fuse-proj) each of which but the last ends
 * where the next one's copy starts, i.e. has a multiple of 128 values (no
 * padding after it); else NULL: the product rounds the span into scratch. */
static const void *master_bf16(const float *x, size_t n) {
    if (!master.base || x < master.base || x + n > master.base + master.n) return NULL;
    size_t off = (size_t)(x - master.base);
    int t = seg_of(off);
    for (int u = t; master.poff[u + 1] < off + n; u++)   /* u + 1 < nseg: off + n <= poff[nseg] */
        if (master.coff[u + 1] - master.coff[u] != master.poff[u + 1] - master.poff[u]) return NULL;
    size_t c = master.coff[t] + (off - master.poff[t]);
    if ((c * sizeof(__nv_bfloat16)) % 256 || master_refresh()) return NULL;
    master.served++;
    return master.bf + c;
}

/* a weight's bf16 copy (frozen or trained), or NULL: round it */
static const void *weight_copy(const float *x, size_t n) {
    const void *f = frozen_bf16(x, n);
    return f ? f : master_bf16(x, n);
}
const void *cuda_weight_bf16(const float *x, size_t n) { return precision == MM_BF16 ? weight_copy(x, n) : NULL; }
const void *cuda_shadow_bf16(const float *x, size_t n) { return precision == MM_BF16 ? shadow_of(x, n) : NULL; }

/* The operand as the matmul reads it: the fp32 matrix itself, or in bf16 mode
 * a weight's copy (frozen or trained), the shadow its producer wrote, or its
 * rounding into scratch slot `slot`.
 * NULL on failure. */
static const void *operand(const float *x, size_t n, int slot) {
    if (precision != MM_BF16) return x;
    const void *f = weight_copy(x, n);
    if (!f) f = kept_of(x, n);
    if (!f) f = shadow_of(x, n);
    if (!f) f = packed_of(x, n);
    if (f) return f;
    if (n_absent && absent_overlaps(x, n)) {   /* its fp32 values were never written (bf16-only outputs) */
        cuda_bf16_only_refused++;
        cuda_record_error("bf16_only", "a product reads a bf16-only output where its rounding cannot serve it "
                          "(another branch, another extent, read twice, or after keep_bf16(NULL, 0)): the op "
                          "contract (ops.h bf16_only) was broken", __FILE__, __LINE__);
        return NULL;
    }
    return as_bf16(x, n, slot);
}

static void algo_describe(const cublasLtMatmulAlgo_t *a, char *buf, size_t len) {
    int32_t id = 0, splitk = 1;
    uint32_t tile = 0, stages = 0, swizzle = 0;
    uint16_t cluster = 0;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swizzle, sizeof swizzle, NULL);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, NULL);
    snprintf(buf, len, "algo %d tile %u stages %u splitK %d swizzle %u cluster %u", (int)id, tile, stages, (int)splitk,
             swizzle, (unsigned)cluster);
}

/* Times the plan's candidates (see "algorithm tuning" above) and fixes
 * p->algo. Outside a recording only; the caller has set the bias pointer.
 * Writes C only when beta == 0 (then the real product follows and overwrites
 * it); with beta != 0 only scratch. On any failure the plan keeps the
 * heuristic's first answer. */
static cudaEvent_t tune_ev[1 + LT_TUNE_ROUNDS * LT_TUNE_CANDIDATES];

static void lt_tune(Plan *p, const void *A, const void *B, void *C, float beta) {
    p->tuned = 1;   /* whatever happens below, the choice is made once */
    int nc = p->ncand, log = lt_logging();
    cudaStream_t st = cuda_stream();
    void *ws = lt_workspace[cuda_branch()];
    size_t c_bytes = ((size_t)(p->n - 1) * p->ldc + p->m) * (p->c16 ? sizeof(__nv_bfloat16) : sizeof(float));
    void *T = C;
    void *raw = NULL;
    const char *why = NULL;
    if (!tune_ev[0])
        for (size_t i = 0; i < sizeof tune_ev / sizeof tune_ev[0]; i++)
            if (cudaEventCreate(&tune_ev[i]) != cudaSuccess) {
                cudaGetLastError();
                for (size_t j = 0; j < i; j++) cudaEventDestroy(tune_ev[j]);
                memset(tune_ev, 0, sizeof tune_ev);
                why = "no CUDA events";
                break;
            }
    if (!why && beta != 0.f) {   /* accumulates: time into scratch with C's address modulo 256 */
        if (cudaMalloc(&raw, c_bytes + 256) != cudaSuccess) {
            cudaGetLastError();   /* no room: not an error, untimed */
            raw = NULL;
            why = "no memory for the scratch output";
        } else {
            T = (char *)raw + (uintptr_t)C % 256;
        }
    }
    float alpha = 1.f, best[LT_TUNE_CANDIDATES];
    int ok[LT_TUNE_CANDIDATES];
    if (!why) {
        for (int i = 0; i < nc; i++) {   /* warm-up; an algorithm that refuses the call is dropped */
            ok[i] = cublasLtMatmul(lt_handle, p->desc, &alpha, A, p->la, B, p->lb, &beta, T, p->lc, T, p->lc,
                                   &p->cand[i], ws, LT_WORKSPACE_BYTES, st) == CUBLAS_STATUS_SUCCESS;
            best[i] = 0.f;
        }
        cudaEventRecord(tune_ev[0], st);
        for (int r = 0; r < LT_TUNE_ROUNDS; r++)
            for (int i = 0; i < nc; i++) {
                for (int k = 0; k < LT_TUNE_REPS && ok[i]; k++)
                    ok[i] = cublasLtMatmul(lt_handle, p->desc, &alpha, A, p->la, B, p->lb, &beta, T, p->lc, T,
                                           p->lc, &p->cand[i], ws, LT_WORKSPACE_BYTES, st) == CUBLAS_STATUS_SUCCESS;
                cudaEventRecord(tune_ev[1 + r * nc + i], st);
            }
        int refused = 0;
        for (int i = 0; i < nc; i++) refused |= !ok[i];
        /* a refused candidate may leave a launch error behind; earlier launches were checked as they went, so
         * what is pending now is its: cleared, or the next op's check would blame itself */
        if (refused) cudaGetLastError();
        cudaError_t e = cudaEventSynchronize(tune_ev[LT_TUNE_ROUNDS * nc]);
        if (e != cudaSuccess) {
            /* a fault in a product (or earlier work): recorded like any failed call, untimed */
            cuda_record_error("cudaEventSynchronize", cudaGetErrorString(e), __FILE__, __LINE__);
            why = "the timing runs failed";
        }
    }
    if (!why)
        for (int r = 0; r < LT_TUNE_ROUNDS; r++)
            for (int i = 0; i < nc; i++) {
                float ms = 0.f;
                int at = 1 + r * nc + i;
                if (!ok[i] || cudaEventElapsedTime(&ms, tune_ev[at - 1], tune_ev[at]) != cudaSuccess) {
                    ok[i] = 0;
                    continue;
                }
                ms /= LT_TUNE_REPS;
                if (r == 0 || ms < best[i]) best[i] = ms;
            }
    if (raw && cudaFree(raw) != cudaSuccess)   /* never seen by a recording: no cuda_free_gen bump */
        cuda_record_error("cudaFree", "cuBLASLt tuning scratch", __FILE__, __LINE__);
    int pick = 0;
    if (!why) {
        int fastest = -1;
        for (int i = 0; i < nc; i++)
            if (ok[i] && (fastest < 0 || best[i] < best[fastest])) fastest = i;
        if (fastest < 0) why = "no candidate ran";
        else if (!ok[0] || best[fastest] < 0.99f * best[0]) pick = fastest;
    }
    p->algo = p->cand[pick];
    if (!why) cuda_lt_tunes++;
    if (log) {
        double flop = 2.0 * p->m * p->n * p->k;
        fprintf(stderr, "lt-tune: %s m=%d n=%d k=%d op%c%c ld %d %d %d beta %g%s align %u/%u/%u, into %s: %d candidates\n",
                cuda_matmul_precision(), p->m, p->n, p->k, p->ta == CUBLAS_OP_T ? 'T' : 'N',
                p->tb == CUBLAS_OP_T ? 'T' : 'N', p->lda, p->ldb, p->ldc, beta, p->has_bias ? " bias" : "", p->al_a,
                p->al_b, p->al_c, raw ? "scratch" : "C", nc);
        for (int i = 0; i < nc && !why; i++) {
            char d[160];
            algo_describe(&p->cand[i], d, sizeof d);
            if (ok[i])
                fprintf(stderr, "lt-tune:   #%d %s ws %zu KiB: %.4f ms, %.1f TFLOP/s%s\n", i, d, p->cand_ws[i] >> 10,
                        best[i], flop / (best[i] * 1e9), i == pick ? "  <- chosen" : "");
            else
                fprintf(stderr, "lt-tune:   #%d %s: failed to run, dropped\n", i, d);
        }
        if (why) fprintf(stderr, "lt-tune:   not timed (%s): the heuristic's first\n", why);
        else if (pick) fprintf(stderr, "lt-tune:   chose #%d, %.2fx the heuristic's first\n", pick,
                               ok[0] ? best[0] / best[pick] : 0.0);
    }
}

/* C[m,n] = op(A) op(B) + beta C (+ bias[m] per row), column-major, C fp32
 * (c16: bf16, the product still accumulated and scaled in fp32, rounded once
 * on its store); A and B come from operand(). Returns 0, or -1 if no
 * algorithm fits or the call failed (nothing was written). */
static int lt_matmul_c(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                       const void *B, int ldb, void *C, int c16, int ldc, float beta, const float *bias) {
    if (!A || !B || lt_init()) return -1;
    Plan *p = plan_get(ta, tb, m, n, k, lda, ldb, ldc, bias != NULL, beta != 0.f, alignment_of(A), alignment_of(B),
                       alignment_of(C), c16);
    if (!p) return -1;
    if (bias) cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    float alpha = 1.f;
    unsigned long before = cuda_epoch;
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);  /* C changes */
    if (!p->tuned) {
        if (cuda_capturing()) p->tuned = 1;   /* made outside, first used inside a recording: keep the first */
        else lt_tune(p, A, B, C, beta);
    }
    int rc = cublasLtMatmul(lt_handle, p->desc, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, C, p->lc, &p->algo,
                            lt_workspace[cuda_branch()], LT_WORKSPACE_BYTES, cuda_stream()) == CUBLAS_STATUS_SUCCESS
                 ? 0
                 : -1;
    own_launch_done(before, C, ((size_t)(n - 1) * ldc + m) * (c16 ? sizeof(__nv_bfloat16) : sizeof(float)));
    return rc;
}
static int lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                     const void *B, int ldb, float *C, int ldc, float beta, const float *bias) {
    return lt_matmul_c(ta, tb, m, n, k, A, lda, B, ldb, C, 0, ldc, beta, bias);
}

__global__ void add_bias_kernel(float *out, const float *b, size_t total, int OC) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += b[i % OC];
}

struct ColOf {
    const float *m;
    int C;
    __device__ float operator()(int i, int c) const { return m[(size_t)i * C + c]; }
};

static void failed(const char *what) {
    cuda_record_error(what, "cuBLASLt found no algorithm or the matmul failed", __FILE__, __LINE__);
}

/* ---- decode-shaped products on frozen bf16 weights (FLOWHN_GEMV=0 turns them off) ----
 * A decode step's products have N = batch rows (1 at batch 1): cuBLASLt's path
 * is two launches (the input's rounding pass, then the product) and a kernel
 * tuned for matrices. Here one warp per output feature streams its weight row
 * once in 16-byte bf16 loads, reads the N input rows in fp32 and rounds them
 * to bf16 in registers (the same operands as the cuBLASLt path), accumulates
 * in fp32, sums across the warp and adds the bias: one launch, the weights read
 * once. Used only with frozen weights (the generator; training never freezes),
 * N <= GEMV_MAX_ROWS, IC a multiple of 8 and 16-byte aligned rows; else the
 * cuBLASLt path. tests/cuda/test_cuda.cu test_linear_gemv checks it against the
 * CPU and against the cuBLASLt path (session 5, H200). */
#define GEMV_MAX_ROWS 8
#define GEMV_WARPS 8

__device__ __forceinline__ float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }


/* acc[r] += the 8 weights in wf . input row r's 8 values at k8 (rounded to bf16).
 * NORM: the input is RMSNorm'ed on the fly, x rs[r] nw (rmsnorm_fwd_kernel's
 * expression, so the same bf16 operand as rmsnorm_fwd then the product). */
template <int R, bool NORM = false>
__device__ __forceinline__ void gemv_fma8(float *acc, const float *wf, const float *in, int IC, int k8,
                                          const float *rs = nullptr, const float *nw = nullptr) {
    float nwf[8];
    if (NORM) {
        const float4 *np = (const float4 *)nw + 2 * k8;
        float4 a = __ldg(np), c = __ldg(np + 1);
        nwf[0] = a.x; nwf[1] = a.y; nwf[2] = a.z; nwf[3] = a.w; nwf[4] = c.x; nwf[5] = c.y; nwf[6] = c.z; nwf[7] = c.w;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float4 *xr = (const float4 *)(in + (size_t)r * IC) + 2 * k8;
        float4 a = __ldg(xr), c = __ldg(xr + 1);
        float x[8] = {a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w};
        if (NORM) {
#pragma unroll
            for (int j = 0; j < 8; j++) x[j] = x[j] * rs[r] * nwf[j];
        }
#pragma unroll
        for (int j = 0; j < 8; j++) acc[r] += wf[j] * bf16_round(x[j]);
    }
}

/* GEMV_UNROLL weight loads are issued before any of them is used: a lane then
 * has 64 bytes in flight instead of 16. At 1B's shapes a product has only
 * 64-256 blocks of 8 warps (OC 512-2048), too few 16-byte requests in flight
 * to cover HBM latency at full bandwidth otherwise (Little's law: ~3 MB). */
#define GEMV_UNROLL 4

/* Two variants of each gemv kernel (docs/perf-notes.md "decode-pdl2"): the
 * plain ones (gemv_row, gemv_bf16_kernel, gemv_fused_kernel) are main's code
 * before PDL, unchanged, and run in training, in eager decode and whenever the
 * gemv launches are not PDL ones (FLOWHN_PDL=0, FLOWHN_PDL_GEMV=0); the _pdl
 * ones (first weight loads before griddepcontrol.wait) run only when the
 * launch carries the PDL attribute (FLOWHN_PDL_GEMV unset or 1), and main's
 * code with a wait at the top (WAIT) with FLOWHN_PDL_GEMV=2. So the off
 * settings measure main's gemv, and the restructure's cost (registers, load
 * order) can be told from the early launch's.
 * Both sum each row in the same order, so their outputs have the same bits. */

/* acc[r] = (weight row wr) . (input row r), the warp's sum in every lane */
template <int R, bool NORM = false>
__device__ __forceinline__ void gemv_row(float *acc, const uint4 *wr, const float *in, int IC, int lane,
                                         const float *rs = nullptr, const float *nw = nullptr) {
    int n8 = IC / 8;
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    int k8 = lane;
    for (; k8 + 32 * (GEMV_UNROLL - 1) < n8; k8 += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) wv[u] = __ldg(wr + k8 + 32 * u);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            float wf[8];
            bf16x8_unpack(wv[u], wf);
            gemv_fma8<R, NORM>(acc, wf, in, IC, k8 + 32 * u, rs, nw);
        }
    }
    for (; k8 < n8; k8 += 32) {   /* the rest: fewer than GEMV_UNROLL loads per lane */
        float wf[8];
        bf16x8_unpack(__ldg(wr + k8), wf);
        gemv_fma8<R, NORM>(acc, wf, in, IC, k8, rs, nw);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
}

/* WAIT (FLOWHN_PDL_GEMV=2 only): launched with PDL, main's code after a wait
 * at the top, so no weight load overlaps the predecessor: separates the early
 * launch (blocks resident under the predecessor's tail) from the early loads.
 * WAIT false compiles to main's kernel. */
template <int R, bool WAIT = false>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_bf16_kernel(float *out, const float *in, const __nv_bfloat16 *w, const float *b, int IC, int OC) {
    if (WAIT) {
        pdl_wait();
        pdl_trigger();
    }
    int lane = threadIdx.x & 31, o = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= OC) return;
    float acc[R];
    gemv_row<R>(acc, (const uint4 *)(w + (size_t)o * IC), in, IC, lane);
#pragma unroll
    for (int r = 0; r < R; r++)
        if (lane == 0) out[(size_t)r * OC + o] = acc[r] + (b ? b[o] : 0.f);
}

/* PDL (common.cuh cuda_launch): a gemv grid may start while its predecessor
 * still runs. The frozen bf16 weights are written by no kernel of the decode,
 * so before pdl_wait a lane issues its row's first GEMV_UNROLL 16-byte loads
 * into registers (wv) and an L2 prefetch of up to GEMV_PREFETCH more: the
 * weight stream starts under the predecessor's tail. Everything else (the
 * input rows, the norm's sums, the residual, the outputs) comes after the
 * wait. The row's arithmetic is unchanged (same order of products), so the
 * results have the bits they had without PDL. */
#define GEMV_PREFETCH 4

__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

/* the first loads of lane's share of weight row wr (n8 16-byte chunks; zeros past the row) */
__device__ __forceinline__ void gemv_row_start(uint4 *wv, const uint4 *wr, int n8, int lane) {
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) {
        int k8 = lane + 32 * u;
        wv[u] = k8 < n8 ? __ldg(wr + k8) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = GEMV_UNROLL; u < GEMV_UNROLL + GEMV_PREFETCH; u++)
        if (lane + 32 * u < n8) prefetch_l2(wr + lane + 32 * u);
}

/* acc[r] = (weight row wr) . (input row r), the warp's sum in every lane;
 * wv: gemv_row_start's loads of the row */
template <int R, bool NORM = false>
__device__ __forceinline__ void gemv_row_pdl(float *acc, const uint4 *wv0, const uint4 *wr, const float *in, int IC,
                                         int lane, const float *rs = nullptr, const float *nw = nullptr) {
    int n8 = IC / 8;
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    int k8 = lane;
    if (k8 + 32 * (GEMV_UNROLL - 1) < n8) {   /* a whole first group: the loop's first iteration */
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            float wf[8];
            bf16x8_unpack(wv0[u], wf);
            gemv_fma8<R, NORM>(acc, wf, in, IC, k8 + 32 * u, rs, nw);
        }
        k8 += 32 * GEMV_UNROLL;
        for (; k8 + 32 * (GEMV_UNROLL - 1) < n8; k8 += 32 * GEMV_UNROLL) {
            uint4 wv[GEMV_UNROLL];
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) wv[u] = __ldg(wr + k8 + 32 * u);
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) {
                float wf[8];
                bf16x8_unpack(wv[u], wf);
                gemv_fma8<R, NORM>(acc, wf, in, IC, k8 + 32 * u, rs, nw);
            }
        }
        for (; k8 < n8; k8 += 32) {   /* the rest: fewer than GEMV_UNROLL loads per lane */
            float wf[8];
            bf16x8_unpack(__ldg(wr + k8), wf);
            gemv_fma8<R, NORM>(acc, wf, in, IC, k8, rs, nw);
        }
    } else {   /* the row has fewer than GEMV_UNROLL chunks for this lane: all in wv0, in order */
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL - 1; u++)
            if (k8 + 32 * u < n8) {
                float wf[8];
                bf16x8_unpack(wv0[u], wf);
                gemv_fma8<R, NORM>(acc, wf, in, IC, k8 + 32 * u, rs, nw);
            }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
}

template <int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_bf16_pdl_kernel(float *out, const float *in, const __nv_bfloat16 *w, const float *b, int IC, int OC) {
    int lane = threadIdx.x & 31, o = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const uint4 *wr = (const uint4 *)(w + (size_t)o * IC);
    uint4 wv[GEMV_UNROLL];
    if (o < OC) gemv_row_start(wv, wr, IC / 8, lane);
    /* every thread waits, none leaves before: this grid then cannot complete
     * before its predecessor has, which the kernel after it relies on for
     * what earlier kernels wrote (completion is transitive through the waits) */
    pdl_wait();
    pdl_trigger();
    if (o >= OC) return;
    float acc[R];
    gemv_row_pdl<R>(acc, wv, wr, in, IC, lane);
#pragma unroll
    for (int r = 0; r < R; r++)
        if (lane == 0) out[(size_t)r * OC + o] = acc[r] + (b ? b[o] : 0.f);
}

/* ---- the decode fusions' products (ops.h "fused decode ops"), the same
 * warp-per-row arithmetic as gemv_bf16_kernel, so each output has the bits a
 * separate gemv launch would give it (the epilogues aside):
 *   GEMV_MULTI: up to three products of one input in one launch, blocks
 *     [0, blk1) for product 0, [blk1, blk2) for 1, [blk2, grid) for 2 (each
 *     block within one product);
 *   GEMV_RES: out = res + product (the residual add as the product's epilogue);
 *   GEMV_SWIGLU: a warp computes row o of the gate product and of the up
 *     product and writes silu(g) * u (swiglu_fwd's formula): the [N, I] gate and
 *     up activations never reach memory.
 * NORM (MULTI and SWIGLU): the input is RMSNorm'ed inside (a.nw, a.eps): every
 * block first sums the squares of the N input rows exactly as
 * rmsnorm_fwd_kernel does (256 threads, the same strides, block_sum), so rstd
 * and the normed operand have rmsnorm_fwd's bits; the rows (8 KB each at 1B)
 * come from L2. One launch instead of two, at the price of ~1 us of prologue
 * per block before its weight loads start. */
enum { GEMV_MULTI = 0, GEMV_RES = 1, GEMV_SWIGLU = 2 };
struct GemvArgs {
    const __nv_bfloat16 *w0, *w1, *w2;   /* SWIGLU: w0 gate, w1 up */
    float *out0, *out1, *out2;
    int OC0, OC1, OC2, blk1, blk2;
    const float *res;                    /* RES: [N, OC0] */
    const float *nw;                     /* NORM: the RMSNorm weight [IC] */
    float eps;
};

template <int R, int MODE, bool NORM, bool WAIT = false>   /* WAIT: as gemv_bf16_kernel's */
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_fused_kernel(GemvArgs a, const float *in, int IC) {
    if (WAIT) {
        pdl_wait();
        pdl_trigger();
    }
    float rs[R];
    if (NORM) {   /* before any thread leaves: block_sum needs the whole block */
        __shared__ float sh[32];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float *xi = in + (size_t)r * IC;
            float ss = 0.f;
            for (int c = threadIdx.x; c < IC; c += blockDim.x) ss += xi[c] * xi[c];
            ss = block_sum(ss, sh);
            rs[r] = rsqrtf(ss / IC + a.eps);
        }
    }
    int seg = MODE != GEMV_MULTI ? 0 : (int)blockIdx.x >= a.blk2 ? 2 : (int)blockIdx.x >= a.blk1 ? 1 : 0;
    int b0 = seg == 0 ? 0 : seg == 1 ? a.blk1 : a.blk2;
    int OC = seg == 0 ? a.OC0 : seg == 1 ? a.OC1 : a.OC2;
    const __nv_bfloat16 *w = seg == 0 ? a.w0 : seg == 1 ? a.w1 : a.w2;
    float *out = seg == 0 ? a.out0 : seg == 1 ? a.out1 : a.out2;
    int lane = threadIdx.x & 31, o = ((int)blockIdx.x - b0) * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= OC) return;
    float acc[R];
    gemv_row<R, NORM>(acc, (const uint4 *)(w + (size_t)o * IC), in, IC, lane, rs, a.nw);
    if (MODE == GEMV_SWIGLU) {
        float up[R];
        gemv_row<R, NORM>(up, (const uint4 *)(a.w1 + (size_t)o * IC), in, IC, lane, rs, a.nw);
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = acc[r] * (1.f / (1.f + expf(-acc[r]))) * up[r];
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        size_t i = (size_t)r * OC + o;
        if (lane == 0) out[i] = MODE == GEMV_RES ? acc[r] + a.res[i] : acc[r];
    }
}

template <int R, int MODE, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_fused_pdl_kernel(GemvArgs a, const float *in, int IC) {
    int seg = MODE != GEMV_MULTI ? 0 : (int)blockIdx.x >= a.blk2 ? 2 : (int)blockIdx.x >= a.blk1 ? 1 : 0;
    int b0 = seg == 0 ? 0 : seg == 1 ? a.blk1 : a.blk2;
    int OC = seg == 0 ? a.OC0 : seg == 1 ? a.OC1 : a.OC2;
    const __nv_bfloat16 *w = seg == 0 ? a.w0 : seg == 1 ? a.w1 : a.w2;
    float *out = seg == 0 ? a.out0 : seg == 1 ? a.out1 : a.out2;
    int lane = threadIdx.x & 31, o = ((int)blockIdx.x - b0) * GEMV_WARPS + (threadIdx.x >> 5);
    /* the weight rows' first loads before the wait (PDL; see gemv_row_start) */
    const uint4 *wr = (const uint4 *)(w + (size_t)o * IC), *ur = (const uint4 *)(a.w1 + (size_t)o * IC);
    uint4 wv[GEMV_UNROLL], uv[GEMV_UNROLL];
    if (o < OC) {
        gemv_row_start(wv, wr, IC / 8, lane);
        if (MODE == GEMV_SWIGLU) gemv_row_start(uv, ur, IC / 8, lane);
    }
    pdl_wait();
    pdl_trigger();
    float rs[R];
    if (NORM) {   /* before any thread leaves: block_sum needs the whole block */
        __shared__ float sh[32];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float *xi = in + (size_t)r * IC;
            float ss = 0.f;
            for (int c = threadIdx.x; c < IC; c += blockDim.x) ss += xi[c] * xi[c];
            ss = block_sum(ss, sh);
            rs[r] = rsqrtf(ss / IC + a.eps);
        }
    }
    if (o >= OC) return;
    float acc[R];
    gemv_row_pdl<R, NORM>(acc, wv, wr, in, IC, lane, rs, a.nw);
    if (MODE == GEMV_SWIGLU) {
        float up[R];
        gemv_row_pdl<R, NORM>(up, uv, ur, in, IC, lane, rs, a.nw);
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = acc[r] * (1.f / (1.f + expf(-acc[r]))) * up[r];
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        size_t i = (size_t)r * OC + o;
        if (lane == 0) out[i] = MODE == GEMV_RES ? acc[r] + a.res[i] : acc[r];
    }
}

static int gemv_enabled(void) {   /* read per call (host time ~0.1 us; replays run no host code) */
    const char *e = getenv("FLOWHN_GEMV");
    return !e || strcmp(e, "0");
}
unsigned long cuda_gemv_launches;   /* for tests: how many products took the path */

/* the gemv launch of a product of welems weights under PDL: 1 the _pdl kernel,
 * 2 main's after a wait, 0 main's plainly; auto (3, the default) picks 1 up to
 * GEMV_PDL_AUTO_MAX weights (stream.cu says why) */
#define GEMV_PDL_AUTO_MAX ((size_t)4 << 20)
static int gemv_pdl_mode(size_t welems) {
    int m = cuda_pdl_gemv_enabled();
    return m == 3 ? (welems <= GEMV_PDL_AUTO_MAX ? 1 : 0) : m;
}

/* out = in w^T (+ b) by gemv_bf16_kernel when the product qualifies; 1 if it ran */
static int gemv_try(float *out, const float *in, const float *w, const float *b, int N, int IC, int OC) {
    if (!gemv_enabled() || precision != MM_BF16 || N > GEMV_MAX_ROWS || IC % 8) return 0;
    const void *wf = frozen.bf && frozen.base ? frozen_bf16(w, (size_t)OC * IC) : NULL;
    if (!wf || ((uintptr_t)wf | (uintptr_t)in) % 16) return 0;
    /* the gemv reads in's fp32 values: never those of a bf16-only output (decode marks none; operand() decides) */
    if (n_absent && absent_overlaps(in, (size_t)N * IC)) return 0;
    unsigned long before = cuda_epoch;
    dim3 grid((OC + GEMV_WARPS - 1) / GEMV_WARPS), block(GEMV_WARPS * 32);
    int pdl = gemv_pdl_mode((size_t)OC * IC);
    const __nv_bfloat16 *wb = (const __nv_bfloat16 *)wf;
    switch (N) {
#define GEMV_CASE(R) \
    case R:                                                                                                   \
        if (pdl == 1) cuda_launch(true, gemv_bf16_pdl_kernel<R>, grid, block, 0, out, in, wb, b, IC, OC);     \
        else if (pdl == 2) cuda_launch(true, gemv_bf16_kernel<R, true>, grid, block, 0, out, in, wb, b, IC, OC); \
        else cuda_launch(false, gemv_bf16_kernel<R>, grid, block, 0, out, in, wb, b, IC, OC);                 \
        break;
        GEMV_CASE(1) GEMV_CASE(2) GEMV_CASE(3) GEMV_CASE(4) GEMV_CASE(5) GEMV_CASE(6) GEMV_CASE(7) GEMV_CASE(8)
#undef GEMV_CASE
    }
    own_launch_done(before, out, (size_t)N * OC * sizeof(float));
    cuda_gemv_launches++;
    return 1;
}

/* the frozen bf16 copy of weight w [OC, IC] when a fused gemv may read it
 * (the conditions of gemv_try), else NULL */
static const __nv_bfloat16 *gemv_weight(const float *w, int OC, int IC) {
    const void *wf = frozen.bf && frozen.base ? frozen_bf16(w, (size_t)OC * IC) : NULL;
    return wf && (uintptr_t)wf % 16 == 0 ? (const __nv_bfloat16 *)wf : NULL;
}
static int gemv_fusable(const float *in, int N, int IC, const float *norm_w) {
    return gemv_enabled() && precision == MM_BF16 && N >= 1 && N <= GEMV_MAX_ROWS && IC % 8 == 0 &&
           ((uintptr_t)in | (uintptr_t)norm_w) % 16 == 0;
}

template <int MODE, bool NORM>
static void gemv_fused_launch(const GemvArgs &a, int blocks, const float *in, int N, int IC) {
    dim3 grid(blocks), block(GEMV_WARPS * 32);
    /* the weights it streams: a row of IC per output (two matrices for SwiGLU's gate and up) */
    int pdl = gemv_pdl_mode((size_t)blocks * GEMV_WARPS * IC * (MODE == GEMV_SWIGLU ? 2 : 1));
    switch (N) {
#define GEMV_CASE(R) \
    case R:                                                                                       \
        if (pdl == 1) cuda_launch(true, gemv_fused_pdl_kernel<R, MODE, NORM>, grid, block, 0, a, in, IC);     \
        else if (pdl == 2) cuda_launch(true, gemv_fused_kernel<R, MODE, NORM, true>, grid, block, 0, a, in, IC); \
        else cuda_launch(false, gemv_fused_kernel<R, MODE, NORM>, grid, block, 0, a, in, IC);                 \
        break;
        GEMV_CASE(1) GEMV_CASE(2) GEMV_CASE(3) GEMV_CASE(4) GEMV_CASE(5) GEMV_CASE(6) GEMV_CASE(7) GEMV_CASE(8)
#undef GEMV_CASE
    }
    cuda_gemv_launches++;
}

static int gemv_blocks(int OC) { return (OC + GEMV_WARPS - 1) / GEMV_WARPS; }

/* Fused decode ops: one gemv launch when the products qualify (frozen bf16
 * weights, as gemv_try), else the composition of this backend's ops. The bf16
 * roundings cached in the scratch slots are left stale after a fused launch
 * (no own_launch_done): conservative, the next product rounds again. */
void cuda_linear3_fwd(real *out0, real *out1, real *out2, const real *in, const real *w0, const real *w1,
                      const real *w2, int N, int IC, int OC0, int OC1, int OC2, const real *norm_w, real eps,
                      real *normed, real *rstd) {
    if (N <= 0) return;
    if (OC1 < 0) OC1 = 0;
    if (OC2 < 0) OC2 = 0;
    const __nv_bfloat16 *b0 = NULL, *b1 = NULL, *b2 = NULL;
    int ok = OC0 > 0 && gemv_fusable(in, N, IC, norm_w) && (b0 = gemv_weight(w0, OC0, IC));
    if (ok && OC1) ok = (b1 = gemv_weight(w1, OC1, IC)) != NULL;
    if (ok && OC2) ok = (b2 = gemv_weight(w2, OC2, IC)) != NULL;
    if (!ok) {
        if (norm_w) {
            cuda_rmsnorm_fwd(normed, rstd, in, norm_w, N, IC, eps);
            in = normed;
        }
        if (OC0 > 0) cuda_linear_fwd(out0, in, w0, NULL, N, IC, OC0);
        if (OC1 > 0) cuda_linear_fwd(out1, in, w1, NULL, N, IC, OC1);
        if (OC2 > 0) cuda_linear_fwd(out2, in, w2, NULL, N, IC, OC2);
        return;
    }
    GemvArgs a = {b0, b1, b2, out0, out1, out2, OC0, OC1, OC2, 0, 0, NULL, norm_w, eps};
    a.blk1 = gemv_blocks(OC0);
    a.blk2 = a.blk1 + gemv_blocks(OC1);   /* OC1 = 0: no blocks, product 1 empty */
    int blocks = a.blk2 + gemv_blocks(OC2);
    if (norm_w) gemv_fused_launch<GEMV_MULTI, true>(a, blocks, in, N, IC);
    else gemv_fused_launch<GEMV_MULTI, false>(a, blocks, in, N, IC);
    fh_count_macs((uint64_t)N * IC * ((uint64_t)OC0 + OC1 + OC2));
}

void cuda_linear_res_fwd(real *out, const real *in, const real *w, const real *res, int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    const __nv_bfloat16 *wb = gemv_fusable(in, N, IC, NULL) ? gemv_weight(w, OC, IC) : NULL;
    if (!wb) {
        cuda_linear_fwd(out, in, w, NULL, N, IC, OC);
        cuda_add(out, out, res, (size_t)N * OC);
        return;
    }
    GemvArgs a = {wb, NULL, NULL, out, NULL, NULL, OC, 0, 0, 0, 0, res, NULL, 0.f};
    gemv_fused_launch<GEMV_RES, false>(a, gemv_blocks(OC), in, N, IC);
    fh_count_macs((uint64_t)N * IC * OC);
}

void cuda_swiglu_linear_fwd(real *out, real *gs, real *us, const real *in, const real *wg, const real *wu, int N,
                            int IC, int OC, const real *norm_w, real eps, real *normed, real *rstd) {
    if (N <= 0 || OC <= 0) return;
    const __nv_bfloat16 *bg = gemv_fusable(in, N, IC, norm_w) ? gemv_weight(wg, OC, IC) : NULL;
    const __nv_bfloat16 *bu = bg ? gemv_weight(wu, OC, IC) : NULL;
    if (!bu) {
        if (norm_w) {
            cuda_rmsnorm_fwd(normed, rstd, in, norm_w, N, IC, eps);
            in = normed;
        }
        cuda_linear_fwd(gs, in, wg, NULL, N, IC, OC);
        cuda_linear_fwd(us, in, wu, NULL, N, IC, OC);
        cuda_swiglu_fwd(out, gs, us, (size_t)N * OC);
        return;
    }
    GemvArgs a = {bg, bu, NULL, out, NULL, NULL, OC, 0, 0, 0, 0, NULL, norm_w, eps};
    if (norm_w) gemv_fused_launch<GEMV_SWIGLU, true>(a, gemv_blocks(OC), in, N, IC);
    else gemv_fused_launch<GEMV_SWIGLU, false>(a, gemv_blocks(OC), in, N, IC);
    fh_count_macs(2ull * N * IC * OC);
}

/* ---- the gate|up product's bf16 D (ops.h bf16_only once = 2; FLOWHN_BF16_GU=0 off) ----
 * gu [N, 2I] is read only by swiglu_packed_fwd and _bwd, which take bf16 (elementwise.cu ld_gu4). Marked so,
 * and kept (keep_bf16(gu) before the product: the kept buffer is its home until keep_bf16(NULL, 0), as an
 * owned keep, "owned keeps" above), the product writes D = bf16(fp32 accumulation) into the kept buffer
 * (the c16 plan the classifier's logits use) and no fp32 at all: 2 bytes a value written instead of 4, and
 * SwiGLU's two passes read 2 instead of 4. Not the same bits as the fp32 path (g, u rounded once more before
 * SwiGLU, as PyTorch autocast's bf16 matmul outputs): its own switch, its own A/B at the bf16 bounds. The
 * fp32 range is listed as absent (a product reading it fails) and, under FLOWHN_BF16_KEEP_VERIFY, NaN. */
static int gu_on = -1;
unsigned long cuda_bf16_gu_written;
int cuda_set_bf16_gu(int on) { return env_switch(&gu_on, "FLOWHN_BF16_GU", 1, on); }
#define GU_TAG 0x67752d6431362dull   /* the owned keep's transform: the product's bf16 D */
static int gu_d16(real *out, const void *wo, const void *io, const real *b, int N, int IC, int OC) {
    size_t n = (size_t)N * OC;
    int mk = n_only_marks ? only_mark(out, n) : -1;
    if (mk < 0 || only_marks[mk].once != 2) return 0;
    only_marks[mk] = only_marks[--n_only_marks];   /* a mark serves its producer once */
    if (!cuda_set_bf16_gu(-1) || b || !wo || !io) return 0;
    void *kb = cuda_keep_own(out, n);
    if (!kb) return 0;   /* no keep (off, no room, recording): fp32 as always (the owned entry stays unwritten) */
    if (lt_matmul_c(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wo, IC, io, IC, kb, 1, OC, 0.f, NULL)) return 0;
    /* out's fp32 is, for every rounding of it, rewritten (and, verifying, NaN): declared before the keep is
     * marked written (launch_done would end a valid keep of out, and drop an absent range inside out) */
    unsigned long before = cuda_epoch;
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);
    bf16_only_poison(out, n);
    own_launch_done(before, out, n * sizeof(float));
    cuda_keep_owned_done(out, n, GU_TAG);
    absent_add(out, n);
    cuda_bf16_only_elided++;
    cuda_bf16_gu_written++;
    return 1;
}
const void *cuda_gu_bf16(const float *gu, size_t n, int *bad) {
    *bad = 0;
    if (precision != MM_BF16) return NULL;
    const void *d = cuda_keep_owned(gu, n, GU_TAG);
    if (d) return d;
    if (n_absent && absent_overlaps(gu, n)) {
        *bad = 1;
        cuda_bf16_only_refused++;
        cuda_record_error("bf16_only", "swiglu_packed reads a gu whose fp32 was not written and whose bf16 D "
                          "cannot serve it (another branch, another extent, or after keep_bf16(NULL, 0)): the op "
                          "contract (ops.h bf16_only, once = 2) was broken", __FILE__, __LINE__);
    }
    return NULL;
}

/* ---- the packed q|k|v product's bf16 D (ops.h bf16_only once = 3; FLOWHN_BF16_QKV=0 off) ----
 * qkv [rows, P] is read only by the next attention_rope_fwd (its q, k, v windows) and that layer's
 * attention_rope_bwd. Its kept buffer is not a home for D: cuDNN's forward takes it (an owned keep) for the
 * rotated Q | K | V, dense per tensor, another layout. So D goes to a branch scratch (one a branch, reused
 * by every layer: written by the product, read by the attention's conversion right after) and one record
 * says where. attention_cudnn_fwd converts from it (cuda_qkv_d16, then cuda_qkv_d16_done after cuDNN ran);
 * every other path first writes qkv's fp32 back from D (cuda_qkv_d16_restore: qkv = bf16(D) as fp32, the
 * same values the bf16 path reads), so no fallback ever reads unwritten memory. Until then qkv's fp32 is
 * listed absent (a product reading it fails) and, verifying, NaN. Not the same bits as the switch off
 * (rope(bf16 x) rounded again, a double rounding): its own switch, its A/B at the bf16 bounds.
 * The attention's d out (ops.h bf16_only once = 5; FLOWHN_BF16_ATT_DO=0 off) is the same pattern one op
 * later in the backward: the o product's dgrad writes only its bf16 D [rows, nh hd] into a branch scratch,
 * which is exactly cuDNN's dO (dense, the same layout), read by attention_cudnn_bwd in place of the dout
 * conversion (cuda_datt_d16, cuda_datt_d16_done); every other path of attention_rope_bwd writes the fp32
 * back first (cuda_datt_d16_restore). */
static int qkv_on = -1, att_o_on = -1, att_do_on = -1;
unsigned long cuda_bf16_qkv_written, cuda_bf16_qkv_restored;
unsigned long cuda_bf16_att_o_written, cuda_bf16_att_do_written, cuda_bf16_att_do_restored;
int cuda_set_bf16_qkv(int on) { return env_switch(&qkv_on, "FLOWHN_BF16_QKV", 1, on); }
int cuda_set_bf16_att_o(int on) { return env_switch(&att_o_on, "FLOWHN_BF16_ATT_O", 1, on); }
int cuda_set_bf16_att_do(int on) { return env_switch(&att_do_on, "FLOWHN_BF16_ATT_DO", 1, on); }
typedef struct {
    const float *x;   /* NULL: no record */
    size_t n;
    int branch;
    __nv_bfloat16 *d;
    int once;   /* the mark it came from (dnorm_rec: 8 the MLP norm's, 9 the attention norm's) */
    int in_keep;   /* qkv_rec only: d is x's kept buffer, owned by the product (FLOWHN_CUDNN_VKEEP), not a scratch */
} D16Rec;
static D16Rec qkv_rec, datt_rec, dact_rec, dnorm_rec, resid_rec;
static BranchScratch qkv_scratch, datt_scratch, dact_scratch, dnorm_scratch, resid_scratch;
static void qkv_rec_end(void) {   /* all end with every bf16-only state */
    qkv_rec.x = NULL;
    datt_rec.x = NULL;
    dact_rec.x = NULL;
    dnorm_rec.x = NULL;
    resid_rec.x = NULL;
}
/* a product whose marked output (once = `once`, over exactly (out, n)) may be written as bf16 D only: the
 * mark is spent; 1 and *d set when D is to go to the branch scratch s (nothing written yet) */
static int d16_begin(const float *out, size_t n, int once, int on, const D16Rec *r, BranchScratch *s,
                     const char *what, __nv_bfloat16 **d) {
    int mk = n_only_marks ? only_mark(out, n) : -1;
    if (mk < 0 || only_marks[mk].once != once) return 0;
    only_marks[mk] = only_marks[--n_only_marks];   /* a mark serves its producer once */
    if (!on || r->x) return 0;   /* one record at a time */
    size_t bytes = n * sizeof(__nv_bfloat16);
    /* a growth during recording would free memory a recorded graph uses: fp32 as always instead */
    if (cuda_capturing() && s->cap[cuda_branch()] < bytes) return 0;
    *d = (__nv_bfloat16 *)cuda_branch_scratch(s, bytes, what);
    return *d != NULL;
}
/* after the product wrote D: out's fp32 is, for every rounding of it, rewritten (and, verifying, NaN), listed
 * absent, and the record says where D is */
static void d16_written(D16Rec *r, const float *out, size_t n, __nv_bfloat16 *d) {
    unsigned long before = cuda_epoch;
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);
    bf16_only_poison(out, n);
    own_launch_done(before, out, n * sizeof(float));
    absent_add(out, n);
    r->x = out;
    r->n = n;
    r->branch = cuda_branch();
    r->d = d;
    cuda_bf16_only_elided++;
}
/* FLOWHN_CUDNN_VKEEP (attention_cudnn.cu, default on): D's home is qkv's kept buffer itself (np values, its
 * size; the same [rows, P] layout as the scratch), taken here as an owned keep: cuDNN's forward then rotates Q
 * and K in place there and reads V where it lies (its plans bind Q, K, V with row stride P), and the backward
 * reads the same buffer. Every path that writes qkv's fp32 back from D (cuda_qkv_d16_restore) also gives the
 * keep back (keep_disown), so what follows is today's path exactly. No keep (off, no room, recording before
 * the warm-up allocated it): the scratch, as with the switch off. */
unsigned long cuda_bf16_qkv_in_keep;
static void qkv_home_freed(const void *buf) {
    if (qkv_rec.x && qkv_rec.in_keep && (const void *)qkv_rec.d == buf) qkv_rec.x = NULL;   /* a contract break */
}
static int qkv_d16(real *out, const void *wo, const void *io, const real *b, int N, int IC, int OC) {
    size_t n = (size_t)N * OC;
    __nv_bfloat16 *d = NULL, *kb = NULL;
    int on = cuda_set_bf16_qkv(-1) && !b && wo && io;
    int mk = n_only_marks ? only_mark(out, n) : -1;
    if (on && mk >= 0 && only_marks[mk].once == 3 && !qkv_rec.x && cuda_set_cudnn_vkeep(-1) > 0 &&
        (kb = (__nv_bfloat16 *)cuda_keep_own(out, n)) != NULL) {
        only_marks[mk] = only_marks[--n_only_marks];   /* a mark serves its producer once */
        d = kb;
    } else if (!d16_begin(out, n, 3, on, &qkv_rec, &qkv_scratch, "the q|k|v product's bf16 D", &d))
        return 0;
    if (lt_matmul_c(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wo, IC, io, IC, d, 1, OC, 0.f, NULL)) {
        if (kb) keep_disown(out, n);   /* fp32 as always, the keep as if not taken */
        return 0;
    }
    d16_written(&qkv_rec, out, n, d);
    qkv_rec.in_keep = kb != NULL;
    cuda_bf16_qkv_written++;
    if (kb) cuda_bf16_qkv_in_keep++;
    return 1;
}
/* A product's dgrad din [N, IC] = dout W (linear_bwd, overwritten: acc 0) as bf16 D only, when din carries the
 * mark `once` and its switch is on: into s, recorded in r (once = 5, 7, 8, 9 below). 1: written. */
static int dgrad_d16(D16Rec *r, BranchScratch *s, int once, int on, const char *what, real *din, const void *wo,
                     const void *go, int N, int IC, int OC, int acc) {
    size_t n = (size_t)N * IC;
    __nv_bfloat16 *d = NULL;
    if (!d16_begin(din, n, once, on && !acc && wo && go, r, s, what, &d)) return 0;
    if (lt_matmul_c(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, wo, IC, go, OC, d, 1, IC, 0.f, NULL)) return 0;
    d16_written(r, din, n, d);
    return 1;
}
/* the o product's dgrad din [N, IC] = dout W (linear_bwd, overwritten) as bf16 D only (once = 5) */
static int datt_d16(real *din, const void *wo, const void *go, int N, int IC, int OC, int acc) {
    if (!dgrad_d16(&datt_rec, &datt_scratch, 5, cuda_set_bf16_att_do(-1), "the attention's bf16 d out", din, wo, go,
                   N, IC, OC, acc))
        return 0;
    cuda_bf16_att_do_written++;
    return 1;
}
/* ---- the MLP's d act as the down product's bf16 D (ops.h bf16_only once = 7; FLOWHN_BF16_DACT=0 off) ----
 * The down product's dgrad din = d act [N, I] (overwritten) is read only by the swiglu_packed_bwd that follows,
 * as its dout: the product writes only D = bf16(fp32 accumulation) into a branch scratch (one a branch, reused
 * by every layer: written by the product, read by SwiGLU's backward right after) and SwiGLU's backward reads
 * it (elementwise.cu, cuda_dact_d16): 4 bytes a value fewer (perf-notes llamad16). swiglu_packed_bwd never
 * declines, so there is no write-back path; d act's fp32 stays absent after the read (nothing else reads it). */
static int dact_on = -1;
unsigned long cuda_bf16_dact_written, cuda_bf16_dact_read;
int cuda_set_bf16_dact(int on) { return env_switch(&dact_on, "FLOWHN_BF16_DACT", 1, on); }
static int dact_d16(real *din, const void *wo, const void *go, int N, int IC, int OC, int acc) {
    if (!dgrad_d16(&dact_rec, &dact_scratch, 7, cuda_set_bf16_dact(-1), "the MLP's bf16 d act", din, wo, go, N, IC,
                   OC, acc))
        return 0;
    cuda_bf16_dact_written++;
    return 1;
}
/* the MLP norm's output gradient dv as the gate|up product's bf16 D (ops.h bf16_only once = 8; FLOWHN_BF16_DNORM=0
 * off): the same, read by rmsnorm_bwd's row kernel as its dout (rmsnorm.cu, cuda_dnorm_d16); its other path
 * writes the fp32 back first (cuda_dnorm_d16_restore).
 * The attention norm's input gradient du as the q|k|v product's bf16 D (once = 9; FLOWHN_BF16_DNORM_ATT=0 off,
 * perf-notes attnorm16) is the same read by the same rmsnorm_bwd, so it shares the record and the scratch: one
 * record at a time (d16_begin declines while one is live, and the MLP norm's is read or written back by its
 * rmsnorm_bwd before the attention's backward starts); the record's once picks the counters. */
static int dnorm_on = -1, dnorm_att_on = -1;
unsigned long cuda_bf16_dnorm_written, cuda_bf16_dnorm_read, cuda_bf16_dnorm_restored;
unsigned long cuda_bf16_dnorm_att_written, cuda_bf16_dnorm_att_read, cuda_bf16_dnorm_att_restored;
int cuda_set_bf16_dnorm(int on) { return env_switch(&dnorm_on, "FLOWHN_BF16_DNORM", 1, on); }
int cuda_set_bf16_dnorm_att(int on) { return env_switch(&dnorm_att_on, "FLOWHN_BF16_DNORM_ATT", 1, on); }
static int dnorm_d16(real *din, const void *wo, const void *go, int N, int IC, int OC, int acc, int once) {
    int on = once == 9 ? cuda_set_bf16_dnorm_att(-1) : cuda_set_bf16_dnorm(-1);
    if (!dgrad_d16(&dnorm_rec, &dnorm_scratch, once, on,
                   once == 9 ? "the attention norm's bf16 d out" : "the MLP norm's bf16 d out", din, wo, go, N, IC, OC,
                   acc))
        return 0;
    dnorm_rec.once = once;
    if (once == 9) cuda_bf16_dnorm_att_written++;
    else cuda_bf16_dnorm_written++;
    return 1;
}
/* ---- a residual branch's output as its product's bf16 D (ops.h bf16_only once = 10; FLOWHN_BF16_RESID=0 off) ----
 * The o product's output (mix) and the down product's (a layer's output before its add) are read only by one
 * add_rmsnorm_fwd, as its a or b (model.c): the product (linear_fwd, no bias) writes only D = bf16(fp32
 * accumulation) into a branch scratch (one a branch: written by the product, read by the add right after) and
 * the add's row kernel reads it (rmsnorm.cu, cuda_resid_d16): 4 bytes a value fewer (perf-notes resid16). Its
 * other paths (block kernel, FLOWHN_ADD_NORM=0) get the fp32 written back first (cuda_resid_d16_restore). After
 * the read x's fp32 stays absent unless the add wrote its r over x (the down product's case). */
static int resid_on = -1;
unsigned long cuda_bf16_resid_written, cuda_bf16_resid_read, cuda_bf16_resid_restored;
int cuda_set_bf16_resid(int on) { return env_switch(&resid_on, "FLOWHN_BF16_RESID", 1, on); }
static int resid_d16(real *out, const void *wo, const void *io, const real *b, int N, int IC, int OC) {
    size_t n = (size_t)N * OC;
    __nv_bfloat16 *d = NULL;
    if (!d16_begin(out, n, 10, cuda_set_bf16_resid(-1) && !b && wo && io, &resid_rec, &resid_scratch,
                   "a residual branch's bf16 D", &d))
        return 0;
    if (lt_matmul_c(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wo, IC, io, IC, d, 1, OC, 0.f, NULL)) return 0;
    d16_written(&resid_rec, out, n, d);
    cuda_bf16_resid_written++;
    return 1;
}
static const void *d16_of(const D16Rec *r, const float *x, size_t n) {
    if (!r->x || r->x != x || r->n != n || r->branch != cuda_branch()) return NULL;
    return r->d;
}
__global__ void qkv_restore_kernel(float *out, const __nv_bfloat16 *d, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(d[i]);
}
/* x's fp32 written back from D (x = bf16(D) as fp32), the record ended; 1 when it was written back */
static int d16_restore(D16Rec *r, const float *x, const char *what) {
    if (!r->x || r->x != x) return 0;
    if (r->branch != cuda_branch()) {   /* the scratch is another stream's: no ordering with it here */
        cuda_bf16_only_refused++;
        char msg[200];
        snprintf(msg, sizeof msg, "%s is read on another branch than the one that wrote it: the op contract "
                 "(ops.h bf16_only) was broken", what);
        cuda_record_error("bf16_only", msg, __FILE__, __LINE__);
        r->x = NULL;
        return 0;
    }
    unsigned long before = cuda_epoch;
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);
    qkv_restore_kernel<<<grid_for(r->n, 256), 256, 0, cuda_stream()>>>((float *)x, r->d, r->n);
    CUDA_LAUNCHED();
    own_launch_done(before, x, r->n * sizeof(float));   /* written whole: no longer absent */
    r->x = NULL;
    return 1;
}
const void *cuda_qkv_d16(const float *x, size_t n) { return d16_of(&qkv_rec, x, n); }
void cuda_qkv_d16_done(const float *x) {
    if (qkv_rec.x == x) qkv_rec.x = NULL;   /* read: the fp32 stays absent (the attention's keep serves on) */
}
int cuda_qkv_d16_in_keep(const float *x) { return qkv_rec.x && qkv_rec.x == x && qkv_rec.in_keep; }
void cuda_qkv_d16_restore(const float *x) {
    int home = cuda_qkv_d16_in_keep(x);
    size_t n = qkv_rec.n;
    if (d16_restore(&qkv_rec, x, "the q|k|v product's bf16 D (once = 3)")) cuda_bf16_qkv_restored++;
    if (home) keep_disown(x, n);   /* after the write-back's launch (stream order): the keep is free again */
}
/* The D of record r for an op reading x [0, n) (what: the reader and the mark, for the message), or NULL where r
 * is not x's (the op reads x's fp32). A record for x over another extent or on another branch is the contract
 * broken: *bad set, the error recorded, the record ended (the caller does nothing). The record stays otherwise:
 * the caller ends it when read (_done) or written back (_restore). */
static const void *d16_claim(D16Rec *r, const float *x, size_t n, int *bad, const char *what) {
    *bad = 0;
    if (!r->x || r->x != x) return NULL;
    if (r->n != n || r->branch != cuda_branch()) {
        *bad = 1;
        cuda_bf16_only_refused++;
        char msg[256];
        snprintf(msg, sizeof msg, "%s over another extent or on another branch than the one that wrote it: the op "
                 "contract (ops.h bf16_only) was broken", what);
        cuda_record_error("bf16_only", msg, __FILE__, __LINE__);
        r->x = NULL;
        return NULL;
    }
    return r->d;
}
/* d act's bf16 D for swiglu_packed_bwd reading dout = x [0, n): the D, or NULL (read x's fp32). Read once: the
 * record ends here (the fp32 stays absent). */
const void *cuda_dact_d16(const float *x, size_t n, int *bad) {
    const void *d = d16_claim(&dact_rec, x, n, bad, "swiglu_packed_bwd reads the MLP's bf16 d act (once = 7)");
    if (d) {
        dact_rec.x = NULL;
        cuda_bf16_dact_read++;
    }
    return d;
}
/* dv's (or du's) bf16 D for rmsnorm_bwd reading dout = x [0, n), or NULL; the record stays until _done (read) or
 * _restore (fp32 written back) */
const void *cuda_dnorm_d16(const float *x, size_t n, int *bad) {
    return d16_claim(&dnorm_rec, x, n, bad, dnorm_rec.once == 9 ?
                     "rmsnorm_bwd reads the attention norm's bf16 d out (once = 9)" :
                     "rmsnorm_bwd reads the MLP norm's bf16 d out (once = 8)");
}
void cuda_dnorm_d16_done(const float *x) {
    if (dnorm_rec.x == x) {   /* read once, by the row kernel: the fp32 stays absent (nothing else reads it) */
        dnorm_rec.x = NULL;
        if (dnorm_rec.once == 9) cuda_bf16_dnorm_att_read++;
        else cuda_bf16_dnorm_read++;
    }
}
void cuda_dnorm_d16_restore(const float *x) {
    int att = dnorm_rec.once == 9;
    if (d16_restore(&dnorm_rec, x, att ? "the attention norm's bf16 d out (once = 9)" :
                                         "the MLP norm's bf16 d out (once = 8)")) {
        if (att) cuda_bf16_dnorm_att_restored++;
        else cuda_bf16_dnorm_restored++;
    }
}
/* the residual branch's bf16 D for add_rmsnorm_fwd reading x [0, n) as its a or b, or NULL; the record stays
 * until _done (read) or _restore (fp32 written back) */
const void *cuda_resid_d16(const float *x, size_t n, int *bad) {
    return d16_claim(&resid_rec, x, n, bad, "add_rmsnorm_fwd reads a residual branch's bf16 D (once = 10)");
}
void cuda_resid_d16_done(const float *x) {
    if (resid_rec.x == x) {   /* read once, by the add's row kernel */
        resid_rec.x = NULL;
        cuda_bf16_resid_read++;
    }
}
void cuda_resid_d16_restore(const float *x) {
    if (d16_restore(&resid_rec, x, "a residual branch's bf16 D (once = 10)")) cuda_bf16_resid_restored++;
}
/* ---- TEST HOOK (tests/cuda/test_cuda.cu test_bf16_d16_rc only; nothing in src/ calls it) ----
 * The bf16 D record of mark `once` (7 d act, 8 / 9 a norm's d out, 10 a residual branch) over x [0, n), made as
 * its product makes it (dact_d16, dnorm_d16, resid_d16: d16_begin spends the mark and applies the switch and
 * one-record rules, d16_written poisons and lists x's fp32 and sets the record, the same written counter), but
 * with D = a device copy of the caller's bf16 values d16 [n] in place of the cuBLASLt product. Why: the records'
 * readers (swiglu_packed_bwd, rmsnorm_bwd's row kernel, the add's row kernel) otherwise run only right after a
 * bf16 cuBLASLt product, where compute-sanitizer racecheck stops (perf-notes "Racecheck coverage, session 13").
 * 1: installed; 0: declined as the product would decline (no mark, switch off, a record live, recording
 * without room); -1: a bad once or the copy failed (the error recorded). */
int cuda_test_d16_install(int once, const float *x, size_t n, const void *d16) {
    D16Rec *r;
    BranchScratch *s;
    int on;
    const char *what;
    unsigned long *cnt;
    switch (once) {
    case 7: r = &dact_rec; s = &dact_scratch; on = cuda_set_bf16_dact(-1); what = "the MLP's bf16 d act";
        cnt = &cuda_bf16_dact_written; break;
    case 8: r = &dnorm_rec; s = &dnorm_scratch; on = cuda_set_bf16_dnorm(-1); what = "the MLP norm's bf16 d out";
        cnt = &cuda_bf16_dnorm_written; break;
    case 9: r = &dnorm_rec; s = &dnorm_scratch; on = cuda_set_bf16_dnorm_att(-1);
        what = "the attention norm's bf16 d out"; cnt = &cuda_bf16_dnorm_att_written; break;
    case 10: r = &resid_rec; s = &resid_scratch; on = cuda_set_bf16_resid(-1); what = "a residual branch's bf16 D";
        cnt = &cuda_bf16_resid_written; break;
    default:
        cuda_record_error("cuda_test_d16_install", "once must be 7, 8, 9 or 10", __FILE__, __LINE__);
        return -1;
    }
    __nv_bfloat16 *d = NULL;
    if (!d16_begin(x, n, once, on && d16, r, s, what, &d)) return 0;
    cudaError_t e = cudaMemcpyAsync(d, d16, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, cuda_stream());
    if (e != cudaSuccess) {
        cuda_record_error("cudaMemcpyAsync", cudaGetErrorString(e), __FILE__, __LINE__);
        return -1;
    }
    d16_written(r, x, n, d);
    r->once = once;
    (*cnt)++;
    return 1;
}
const void *cuda_datt_d16(const float *x, size_t n) { return d16_of(&datt_rec, x, n); }
void cuda_datt_d16_done(const float *x) {
    if (datt_rec.x == x) datt_rec.x = NULL;   /* read once, by cuDNN's backward: the fp32 stays absent */
}
void cuda_datt_d16_restore(const float *x) {
    if (d16_restore(&datt_rec, x, "the attention's bf16 d out (once = 5)")) cuda_bf16_att_do_restored++;
}
/* where cuDNN's forward may write O: out's kept buffer, when out is marked once = 4 (FLOWHN_BF16_ATT_O on)
 * and its producer's claim (cuda_shadow_claim_only, after cuDNN ran) would hand out that buffer with skip
 * set. Nothing is claimed here: cuDNN may still fail, and then the fallback's producer fills the buffer. */
void *cuda_att_o_home(const float *out, size_t n) {
    if (!n || !out || precision != MM_BF16 || only_on <= 0 || keep_on <= 0 || !cuda_set_bf16_att_o(-1)) return NULL;
    int mk = n_only_marks ? only_mark(out, n) : -1;
    if (mk < 0 || only_marks[mk].once != 4) return NULL;
    for (int i = 0; i < nkept; i++)
        if (kept[i].armed && kept[i].src == out && kept[i].n == n && !kept[i].claimed && !kept[i].valid &&
            !kept[i].owned)
            return kept[i].buf;
    return NULL;
}
/* the once of the bf16-only mark on exactly (x, n) that cuda_shadow_claim_only would honour (FLOWHN_BF16_ONLY
 * on, bf16 products), or 0; claims and spends nothing */
int cuda_bf16_only_marked(const float *x, size_t n) {
    if (!x || !n || precision != MM_BF16 || only_on <= 0 || !n_only_marks) return 0;
    int mk = only_mark(x, n);
    return mk < 0 ? 0 : only_marks[mk].once;
}
int cuda_bf16_absent(const float *x, size_t n) { return n_absent && x && n && absent_overlaps(x, n); }
int cuda_bf16_missing(const float *x, size_t n, const char *who) {
    if (!n_absent || !x || !n || !absent_overlaps(x, n)) return 0;
    cuda_bf16_only_refused++;
    char msg[160];
    snprintf(msg, sizeof msg, "%s reads fp32 values that were never written (a bf16-only output): the op contract "
             "(ops.h bf16_only) was broken", who);
    cuda_record_error("bf16_only", msg, __FILE__, __LINE__);
    return 1;
}

/* scratch slots: 0 the weight, 1 the input activation, 2 the output gradient */
void cuda_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC) {
    if (N <= 0) return;
    if (gemv_try(out, in, w, b, N, IC, OC)) {
        fh_count_macs((uint64_t)N * IC * OC);
        return;
    }
    const void *wo = operand(w, (size_t)OC * IC, 0), *io = operand(in, (size_t)N * IC, 1);
    if (gu_d16(out, wo, io, b, N, IC, OC) || qkv_d16(out, wo, io, b, N, IC, OC) ||
        resid_d16(out, wo, io, b, N, IC, OC)) {
        fh_count_macs((uint64_t)N * IC * OC);
        return;
    }
    if (!b || lt_matmul(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wo, IC, io, IC, out, OC, 0.f, b)) {
        if (lt_matmul(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wo, IC, io, IC, out, OC, 0.f, NULL))
            failed("linear_fwd");
        else if (b) {  /* no algorithm with the bias epilogue: add it separately */
            size_t total = (size_t)N * OC;
            add_bias_kernel<<<grid_for(total, 256), 256, 0, cuda_stream()>>>(out, b, total, OC);
            CUDA_LAUNCHED();
        }
    }
    fh_count_macs((uint64_t)N * IC * OC);
}

void cuda_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in, const real *w,
                     int N, int IC, int OC, int acc) {
    if (N <= 0) return;
    const void *go = (din || dw) ? operand(dout, (size_t)N * OC, 2) : NULL;  /* rounded once, used twice */
    /* beta 0 (acc FH_OVERWRITE): cuBLASLt does not read din, so it need not be zeroed first */
    const void *wo = din ? operand(w, (size_t)OC * IC, 0) : NULL;
    /* the attention's d out, marked once = 5: its bf16 D only, read by cuDNN's backward as dO */
    const int dacc = acc & FH_ACC;   /* FH_DW_OVERWRITE (ops.h) is dw's: beta 0, dw not read */
    /* the MLP's d act, marked once = 7: its bf16 D only, read by swiglu_packed_bwd as its dout; a norm's d out
     * (the MLP norm's once = 8, the attention norm's once = 9): read by rmsnorm_bwd */
    if (din && !datt_d16(din, wo, go, N, IC, OC, dacc) && !dact_d16(din, wo, go, N, IC, OC, dacc) &&
        !dnorm_d16(din, wo, go, N, IC, OC, dacc, 8) && !dnorm_d16(din, wo, go, N, IC, OC, dacc, 9) &&
        lt_matmul(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, wo, IC, go, OC, din, IC, dacc ? 1.f : 0.f, NULL))
        failed("linear_bwd din");
    if (dw && lt_matmul(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, operand(in, (size_t)N * IC, 1), IC, go, OC, dw, IC,
                        (acc & FH_DW_OVERWRITE) ? 0.f : 1.f, NULL))
        failed("linear_bwd dw");
    if (db) colsum(db, 1, N, OC, ColOf{dout, OC});
}

/* ---- for other op files (matmul.cuh) ---- */
int cuda_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                const void *B, int ldb, float *C, int ldc, float beta) {
    return lt_matmul(ta, tb, m, n, k, A, lda, B, ldb, C, ldc, beta, NULL);
}
int cuda_matmul_c16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                    const void *B, int ldb, __nv_bfloat16 *C, int ldc) {
    if (precision != MM_BF16) return -1;   /* bf16 operands only: an fp32 product keeps its fp32 output */
    return lt_matmul_c(ta, tb, m, n, k, A, lda, B, ldb, C, 1, ldc, 0.f, NULL);
}
int cuda_matmul_bf16(void) { return precision == MM_BF16; }
void cuda_round_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
    if (!n) return;
    to_bf16_kernel<<<grid_for((n + 1) / 2, 256), 256, 0, cuda_stream()>>>(dst, src, n);
    CUDA_LAUNCHED();
}
