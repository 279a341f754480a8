/* attention_cudnn.cu - bf16 causal self-attention through cuDNN's fused flash
 * attention (its C backend API), for the bf16 precision path.
 *
 * Why: our tensor-core kernels (attention_tc.cu) run at 72-80 TFLOP/s on the
 * H200 (latency-bound); cuDNN's fused SDPA engines on Hopper run several times
 * faster. The issue (#4) allows cuDNN's fused attention through its C API.
 *
 * Where (attention.cu decides the first three, this file the rest):
 *   - the bf16 matmul precision (attention_tc_applies),
 *   - causal self-attention over one token list: qpos == kpos (the same array)
 *     and nq == nk. The positions of a token list are distinct and ascending,
 *     so "key j visible to query i iff kpos[j] <= qpos[i]" is j <= i: cuDNN's
 *     top-left causal mask on indices. (The prefix context, kpos = 0..T-1 with
 *     a query subset, is not that mask: our kernels keep it.)
 *   - hd a multiple of 8, at most 128,
 *   - cuDNN loads (dlopen, no link-time dependency), FLOWHN_ATTN_CUDNN is not 0,
 *     and the shape's execution plan was built (or can be: never while a CUDA
 *     graph is recorded, see below).
 * Otherwise the caller runs our kernels, as before.
 *
 * The graphs are cuDNN's flash-attention pattern (as cudnn-frontend's
 * composite SDPA node lowers it, read from its source; written here from
 * scratch on the backend descriptors):
 *   forward  S = Q K^T (fp32) * scale; causal mask (GEN_INDEX row/col,
 *            CMP_GE, BINARY_SELECT with -inf); softmax written as max, x - max,
 *            exp, sum, div, with Stats = max + log(sum) (fp32 [B,H,S,1]);
 *            P in bf16; O = P V (bf16).
 *   backward softmax_sum = rowsum(dO * O) (fp32, an output tensor), P =
 *            exp(S*scale - Stats) masked, dV = P^T dO, dP = dO V^T,
 *            dS = P (dP - softmax_sum) * scale, dK = dS^T Q, dQ_accum (fp32) =
 *            dS K, dQ = identity(dQ_accum) in bf16. GQA: dK, dV per query head
 *            summed over each group by a reduction.
 * Stats is exactly our lse: the natural log of the sum of exp of the scaled
 * scores, the max included, fp32 [B, nh, nq]. So lse is written by cuDNN
 * directly, and the backward reads ours (from either forward).
 *
 * Layouts: q [B, n, nh, hd], k, v [B, n, nkv, hd] are cuDNN tensors of dims
 * [B, H, S, D] with strides [n*H*hd, hd, H*hd, 1] (BSHD), bf16 copies in our
 * scratch. Conversions (our activations are fp32 in memory):
 *   forward:  q, k -> RoPE -> bf16, v -> bf16 (one launch each); O (bf16) ->
 *             fp32 out, plus out's bf16 shadow for the o product (the same
 *             bits: out holds O's values exactly).
 *   backward: q, k -> RoPE -> bf16, v, dout -> bf16, out -> bf16 (exactly the
 *             forward's O, since out = float(O)); dq, dk, dv from the bf16
 *             dQ, dK, dV (dq from the fp32 dQ_accum was wrong on the H200:
 *             see attention_cudnn_bwd); RoPE's inverse on dq, dk; ops.h acc
 *             semantics.
 *
 * Plans: built once per (fwd/bwd, B, n, nh, nkv, hd) and cached, a failed build
 * cached as "declined" for that shape (one line on stderr). Building never
 * happens while a CUDA graph is recorded: finalizing a plan may allocate and
 * compile (cuDNN's runtime-compiled engines), and the workspace would need a
 * cudaMalloc. A first call of a shape during recording declines (our kernel
 * runs for that call, and is recorded); the model's op-by-op warm-up step
 * before recording builds every plan, as linear.cu's lt-tune does its timing
 * outside recording. Execution (cudnnBackendExecute on our stream) is
 * capturable. Any execution failure prints one line and turns the path off. */
#include <cuda_bf16.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.cuh"

unsigned long cuda_attn_cudnn_runs;   /* cuDNN executions (tests: a silent fallback is caught) */


static int path_on = -1;   /* FLOWHN_ATTN_CUDNN (default on), read once */
int cuda_set_attn_cudnn(int on) { return cuda_env_switch(&path_on, "FLOWHN_ATTN_CUDNN", "0", 1, on); }

#if defined(__has_include)
#if __has_include(<cudnn_graph.h>)
#define HAVE_CUDNN_GRAPH_H 1
#endif
#endif

#ifndef HAVE_CUDNN_GRAPH_H
/* built without cuDNN's headers: the path is absent, our kernels run */
int cuda_attn_cudnn_loaded(void) { return 0; }
int attention_cudnn_fwd(float *, float *, const float *, const float *, const float *, const int *, int, int, int,
                        int, int, float, int, int) { return 1; }
int attention_cudnn_bwd(float *, float *, float *, const float *, const float *, const float *, const float *,
                        const float *, const float *, const int *, int, int, int, int, int, int, float, int, int) {
    return 1;
}
int cuda_set_cudnn_conv_old(int) { return 0; }
int cuda_set_cudnn_keep(int) { return 0; }
unsigned long cuda_cudnn_kept_served;
int cuda_set_rope_cache(int) { return 0; }
unsigned long cuda_rope_tables;
int cuda_set_cudnn_dv(int) { return 0; }
unsigned long cuda_cudnn_dv_direct, cuda_cudnn_dv_planned;
int cuda_cudnn_dv_decline;
int cuda_set_cudnn_gradvec(int) { return 0; }
unsigned long cuda_cudnn_grad_rows;
int cuda_set_cudnn_vkeep(int) { return 0; }
unsigned long cuda_cudnn_vkeep_runs, cuda_cudnn_vkeep_served;
int cuda_cudnn_vkeep_decline;
const void *cuda_cudnn_kept_qkv(const float *, const int *, int, int, int, int, int, float, int *strided) {
    *strided = 0;
    return NULL;
}
#else
#include <cudnn_graph.h>

typedef __nv_bfloat16 bf16;

/* ---- run-time loading ---- */

static struct {
    cudnnStatus_t (*create)(cudnnHandle_t *);
    cudnnStatus_t (*set_stream)(cudnnHandle_t, cudaStream_t);
    cudnnStatus_t (*bcreate)(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t *);
    cudnnStatus_t (*bset)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t,
                          int64_t, const void *);
    cudnnStatus_t (*bget)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t,
                          int64_t, int64_t *, void *);
    cudnnStatus_t (*bfinalize)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*bexecute)(cudnnHandle_t, cudnnBackendDescriptor_t, cudnnBackendDescriptor_t);
    cudnnStatus_t (*bdestroy)(cudnnBackendDescriptor_t);
    const char *(*errstr)(cudnnStatus_t);
    size_t (*version)(void);
    void (*lasterr)(char *, size_t);   /* cuDNN 9: may be absent */
} dn;
static cudnnHandle_t handle;
static int load_state;   /* 0 not tried, 1 loaded, -1 failed */
static int log_on;

int cuda_attn_cudnn_loaded(void);

/* One line naming what failed, cuDNN's status and its last error message */
static void report(const char *what, cudnnStatus_t st) {
    char last[512] = "";
    if (dn.lasterr) dn.lasterr(last, sizeof last);
    fprintf(stderr, "cudnn-attn: %s failed: %s (%d)%s%s\n", what, dn.errstr ? dn.errstr(st) : "?", (int)st,
            last[0] ? ": " : "", last);
}
#define DN(call, what)                                   \
    do {                                                 \
        cudnnStatus_t st_ = (call);                      \
        if (st_ != CUDNN_STATUS_SUCCESS) {               \
            report(what, st_);                           \
            return -1;                                   \
        }                                                \
    } while (0)

int cuda_attn_cudnn_loaded(void) {
    if (load_state) return load_state > 0;
    load_state = -1;
    int log_state = -1;
    log_on = cuda_env_switch(&log_state, "FLOWHN_ATTN_CUDNN_LOG", "0", 0, -1);
    const char *names[] = {getenv("FLOWHN_CUDNN_LIB"), "libcudnn.so.9", "libcudnn.so"};
    void *lib = NULL;
    for (int i = 0; i < 3 && !lib; i++)
        if (names[i] && *names[i]) lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "cudnn-attn: cuDNN not loadable (%s): our attention kernels run (put the nvidia.cudnn "
                        "lib dir on LD_LIBRARY_PATH, or FLOWHN_CUDNN_LIB=path)\n", dlerror());
        return 0;
    }
#define SYM(field, name)                                                                  \
    do {                                                                                  \
        *(void **)&dn.field = dlsym(lib, name);                                           \
        if (!dn.field) {                                                                  \
            fprintf(stderr, "cudnn-attn: cuDNN has no %s: our attention kernels run\n", name); \
            return 0;                                                                     \
        }                                                                                 \
    } while (0)
    SYM(create, "cudnnCreate");
    SYM(set_stream, "cudnnSetStream");
    SYM(bcreate, "cudnnBackendCreateDescriptor");
    SYM(bset, "cudnnBackendSetAttribute");
    SYM(bget, "cudnnBackendGetAttribute");
    SYM(bfinalize, "cudnnBackendFinalize");
    SYM(bexecute, "cudnnBackendExecute");
    SYM(bdestroy, "cudnnBackendDestroyDescriptor");
    SYM(errstr, "cudnnGetErrorString");
    SYM(version, "cudnnGetVersion");
#undef SYM
    *(void **)&dn.lasterr = dlsym(lib, "cudnnGetLastErrorString");
    size_t ver = dn.version();
    if (log_on) fprintf(stderr, "cudnn-attn: loaded cuDNN %zu (headers %d)\n", ver, CUDNN_VERSION);
    if (ver < 90000) {
        fprintf(stderr, "cudnn-attn: cuDNN %zu is older than 9.0: our attention kernels run\n", ver);
        return 0;
    }
    cudnnStatus_t st = dn.create(&handle);
    if (st != CUDNN_STATUS_SUCCESS) {
        report("cudnnCreate", st);
        return 0;
    }
    load_state = 1;
    return 1;
}

/* ---- descriptor building ---- */

/* Every descriptor a graph build creates, destroyed together (the plan keeps
 * what it needs once finalized) */
#define MAXD 96
typedef struct {
    cudnnBackendDescriptor_t d[MAXD];
    int n;
} Pool;
static void pool_free(Pool *p) {
    for (int i = 0; i < p->n; i++) dn.bdestroy(p->d[i]);
    p->n = 0;
}
static int make(Pool *p, cudnnBackendDescriptorType_t t, cudnnBackendDescriptor_t *out, const char *what) {
    if (p->n >= MAXD) { fprintf(stderr, "cudnn-attn: descriptor pool full at %s\n", what); return -1; }
    DN(dn.bcreate(t, out), what);
    p->d[p->n++] = *out;
    return 0;
}
#define SET(d, attr, type, n, ptr, what) DN(dn.bset(d, attr, type, n, ptr), what)

/* a 4-d tensor; uid < 0: none (virtual tensors get uids from 1000 on) */
static int tensor(Pool *p, cudnnBackendDescriptor_t *t, int64_t uid, cudnnDataType_t dt, const int64_t dim[4],
                  const int64_t str[4], bool virt, bool byval, const char *name) {
    char what[160];
    snprintf(what, sizeof what, "tensor %s (uid %lld)", name, (long long)uid);
    if (make(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t, what)) return -1;
    int64_t align = 16;
    SET(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, what);
    SET(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim, what);
    SET(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str, what);
    SET(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
    SET(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, what);
    if (virt) SET(*t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, what);
    if (byval) SET(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval, what);
    DN(dn.bfinalize(*t), what);
    return 0;
}

typedef struct {
    Pool *p;
    cudnnBackendDescriptor_t ops[48];
    int nops;
    int64_t next_uid;
} Graph;

static int add_op(Graph *g, cudnnBackendDescriptor_t op, const char *what) {
    DN(dn.bfinalize(op), what);
    if (g->nops >= 48) { fprintf(stderr, "cudnn-attn: too many operations at %s\n", what); return -1; }
    g->ops[g->nops++] = op;
    return 0;
}
/* a virtual tensor of the graph */
static int vt(Graph *g, cudnnBackendDescriptor_t *t, cudnnDataType_t dt, const int64_t dim[4], const int64_t str[4],
              const char *name) {
    return tensor(g->p, t, g->next_uid++, dt, dim, str, true, false, name);
}
static int matmul(Graph *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
                  const char *name) {
    char what[128];
    snprintf(what, sizeof what, "matmul %s", name);
    cudnnBackendDescriptor_t md, op;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    if (make(g->p, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &md, what)) return -1;
    SET(md, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, what);
    DN(dn.bfinalize(md), what);
    if (make(g->p, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &op, what)) return -1;
    SET(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, what);
    SET(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, what);
    SET(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, what);
    SET(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &md, what);
    return add_op(g, op, what);
}
/* y = mode(x[, b[, t]]); axis >= 0 for GEN_INDEX */
static int pw(Graph *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
              cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis,
              const char *name) {
    char what[128];
    snprintf(what, sizeof what, "pointwise %s", name);
    cudnnBackendDescriptor_t pd, op;
    if (make(g->p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pd, what)) return -1;
    SET(pd, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what);
    SET(pd, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, what);
    if (axis >= 0) SET(pd, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, what);
    DN(dn.bfinalize(pd), what);
    if (make(g->p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, &op, what)) return -1;
    SET(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pd, what);
    SET(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    if (b) SET(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, what);
    if (t) SET(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, what);
    SET(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    return add_op(g, op, what);
}
static int reduce(Graph *g, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                  const char *name) {
    char what[128];
    snprintf(what, sizeof what, "reduction %s", name);
    cudnnBackendDescriptor_t rd, op;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    if (make(g->p, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &rd, what)) return -1;
    SET(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, what);
    SET(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, what);
    DN(dn.bfinalize(rd), what);
    if (make(g->p, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, &op, what)) return -1;
    SET(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    SET(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    SET(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd, what);
    return add_op(g, op, what);
}
static int reshape(Graph *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y, const char *name) {
    char what[128];
    snprintf(what, sizeof what, "reshape %s", name);
    cudnnBackendDescriptor_t op;
    if (make(g->p, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, &op, what)) return -1;
    SET(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what);
    SET(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what);
    return add_op(g, op, what);
}

/* the causal mask on scores x (top-left: query row i sees key columns j <= i) into y */
static int causal(Graph *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t neginf, cudnnBackendDescriptor_t y,
                  const int64_t sd[4], const int64_t ss[4]) {
    cudnnBackendDescriptor_t row, col, mask;
    if (vt(g, &row, CUDNN_DATA_INT32, sd, ss, "row index") || vt(g, &col, CUDNN_DATA_INT32, sd, ss, "col index") ||
        vt(g, &mask, CUDNN_DATA_BOOLEAN, sd, ss, "causal mask"))
        return -1;
    if (pw(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, row, 2, "gen_row_index") ||
        pw(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, col, 3, "gen_col_index") ||
        pw(g, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, NULL, mask, -1, "row>=col") ||
        pw(g, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, neginf, mask, y, -1, "causal select"))
        return -1;
    return 0;
}

/* uids of the tensors the variant pack binds */
enum { U_Q = 1, U_KT, U_V, U_O, U_STATS, U_SCALE, U_NEGINF, U_DO, U_ONE, U_DQ, U_DK, U_DV, U_SSUM, U_DQACC, U_NU };

typedef struct {
    int bwd, B, n, nh, nkv, hd;
    int dvld;    /* backward: 0 dV dense [B, n, nkv, hd]; else its rows dvld values apart (FLOWHN_CUDNN_DV) */
    int qld;     /* 0: Q, K, V dense per tensor; else all three rows qld values apart (FLOWHN_CUDNN_VKEEP: the
                  * packed q|k|v product's layout, P) */
    int state;   /* 1 built, -1 declined (the build failed) */
    cudnnBackendDescriptor_t plan;
    int64_t ws;
} Plan;
/* One entry per (direction, shape, dV layout, Q/K/V layout), never evicted (a graph may have recorded an entry's plan).
 * 64 was too few once the strided-dV plans came (session 12 call 1: test_cuda's later shapes found the table
 * full, so get_plan declined them and our kernel ran them silently); a full table now says so once. */
#define MAXPLANS 512
static Plan plans[MAXPLANS];
static int nplans;

static void dims(int64_t d[4], int64_t a, int64_t b, int64_t c, int64_t e) { d[0] = a; d[1] = b; d[2] = c; d[3] = e; }

/* the row strides of Q and of K, V: dense per tensor, or qld (> 0) for all three (cuDNN's "interleaved" BSHD) */
static void qkv_rows(int nh, int nkv, int hd, int qld, int64_t *lq, int64_t *lkv) {
    *lq = qld > 0 ? qld : (int64_t)nh * hd;
    *lkv = qld > 0 ? qld : (int64_t)nkv * hd;
}

static int build_fwd_graph(Graph *g, int B, int n, int nh, int nkv, int hd, int qld) {
    int64_t d[4], s[4], sd[4], ss[4], st[4], sts[4], one4[4] = {1, 1, 1, 1}, lq, lkv;
    cudnnBackendDescriptor_t Q, KT, V, O, Stats, scale, neginf;
    qkv_rows(nh, nkv, hd, qld, &lq, &lkv);
    dims(d, B, nh, n, hd); dims(s, (int64_t)n * nh * hd, hd, (int64_t)nh * hd, 1);
    if (tensor(g->p, &O, U_O, CUDNN_DATA_BFLOAT16, d, s, false, false, "O")) return -1;
    dims(s, (int64_t)n * lq, hd, lq, 1);
    if (tensor(g->p, &Q, U_Q, CUDNN_DATA_BFLOAT16, d, s, false, false, "Q")) return -1;
    dims(d, B, nkv, hd, n); dims(s, (int64_t)n * lkv, hd, 1, lkv);
    if (tensor(g->p, &KT, U_KT, CUDNN_DATA_BFLOAT16, d, s, false, false, "K^T")) return -1;
    dims(d, B, nkv, n, hd); dims(s, (int64_t)n * lkv, hd, lkv, 1);
    if (tensor(g->p, &V, U_V, CUDNN_DATA_BFLOAT16, d, s, false, false, "V")) return -1;
    dims(st, B, nh, n, 1); dims(sts, (int64_t)nh * n, n, 1, 1);
    if (tensor(g->p, &Stats, U_STATS, CUDNN_DATA_FLOAT, st, sts, false, false, "Stats")) return -1;
    if (tensor(g->p, &scale, U_SCALE, CUDNN_DATA_FLOAT, one4, one4, false, true, "scale")) return -1;
    if (tensor(g->p, &neginf, U_NEGINF, CUDNN_DATA_FLOAT, one4, one4, false, true, "-inf")) return -1;
    dims(sd, B, nh, n, n); dims(ss, (int64_t)nh * n * n, (int64_t)n * n, n, 1);
    cudnnBackendDescriptor_t S, Ss, Sm, mx, sub, ex, sum, lg, P;
    if (vt(g, &S, CUDNN_DATA_FLOAT, sd, ss, "S") || vt(g, &Ss, CUDNN_DATA_FLOAT, sd, ss, "S*scale") ||
        vt(g, &Sm, CUDNN_DATA_FLOAT, sd, ss, "S masked") || vt(g, &mx, CUDNN_DATA_FLOAT, st, sts, "max") ||
        vt(g, &sub, CUDNN_DATA_FLOAT, sd, ss, "S-max") || vt(g, &ex, CUDNN_DATA_FLOAT, sd, ss, "exp") ||
        vt(g, &sum, CUDNN_DATA_FLOAT, st, sts, "sum exp") || vt(g, &lg, CUDNN_DATA_FLOAT, st, sts, "log sum") ||
        vt(g, &P, CUDNN_DATA_BFLOAT16, sd, ss, "P"))
        return -1;
    if (matmul(g, Q, KT, S, "Q K^T") ||
        pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, S, scale, NULL, Ss, -1, "attn_scale") ||
        causal(g, Ss, neginf, Sm, sd, ss) || reduce(g, CUDNN_REDUCE_TENSOR_MAX, Sm, mx, "max") ||
        pw(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, Sm, mx, NULL, sub, -1, "sub max") ||
        pw(g, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, sub, NULL, NULL, ex, -1, "exp") ||
        reduce(g, CUDNN_REDUCE_TENSOR_ADD, ex, sum, "sum") ||
        pw(g, CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, sum, NULL, NULL, lg, -1, "log") ||
        pw(g, CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, mx, lg, NULL, Stats, -1, "Stats = max + log sum") ||
        pw(g, CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, ex, sum, NULL, P, -1, "P = exp / sum") ||
        matmul(g, P, V, O, "P V"))
        return -1;
    return 0;
}

static int build_bwd_graph(Graph *g, int B, int n, int nh, int nkv, int hd, int dvld, int qld) {
    int64_t d[4], s[4], st[4], sts[4], sd[4], ss[4], sdt[4], sst[4], one4[4] = {1, 1, 1, 1}, lq, lkv;
    cudnnBackendDescriptor_t Q, KT, VT, O, dO, Stats, scale, neginf, one, dQ, dK, dV, ssum, dQacc;
    int64_t qs[4], qin[4];
    qkv_rows(nh, nkv, hd, qld, &lq, &lkv);
    dims(d, B, nh, n, hd); dims(qs, (int64_t)n * nh * hd, hd, (int64_t)nh * hd, 1);
    dims(qin, (int64_t)n * lq, hd, lq, 1);   /* Q as read (qld: the packed rows); O, dO, dQ dense */
    if (tensor(g->p, &Q, U_Q, CUDNN_DATA_BFLOAT16, d, qin, false, false, "Q") ||
        tensor(g->p, &O, U_O, CUDNN_DATA_BFLOAT16, d, qs, false, false, "O") ||
        tensor(g->p, &dO, U_DO, CUDNN_DATA_BFLOAT16, d, qs, false, false, "dO") ||
        tensor(g->p, &dQ, U_DQ, CUDNN_DATA_BFLOAT16, d, qs, false, false, "dQ"))
        return -1;
    dims(s, (int64_t)nh * n * hd, (int64_t)n * hd, hd, 1);   /* BHSD, as cudnn-frontend's dQ accumulator */
    if (tensor(g->p, &dQacc, U_DQACC, CUDNN_DATA_FLOAT, d, s, false, false, "dQ_accum")) return -1;
    dims(d, B, nkv, hd, n); dims(s, (int64_t)n * lkv, hd, 1, lkv);
    if (tensor(g->p, &KT, U_KT, CUDNN_DATA_BFLOAT16, d, s, false, false, "K^T") ||
        tensor(g->p, &VT, U_V, CUDNN_DATA_BFLOAT16, d, s, false, false, "V^T"))
        return -1;
    int64_t kd[4], ks[4], kin[4];
    dims(kd, B, nkv, n, hd); dims(ks, (int64_t)n * nkv * hd, hd, (int64_t)nkv * hd, 1);
    dims(kin, (int64_t)n * lkv, hd, lkv, 1);   /* K as K^T's reshape sees it (K^T's strides, transposed back) */
    /* dV with a row stride (BSHD rows dvld values apart: the dv columns of the packed dq | dk | dv's bf16
     * rounding, cuDNN's "interleaved" layout); a layout the engines refuse fails the plan: declined */
    int64_t vs[4];
    if (dvld > 0) dims(vs, (int64_t)n * dvld, hd, dvld, 1);
    else memcpy(vs, ks, sizeof vs);
    if (tensor(g->p, &dK, U_DK, CUDNN_DATA_BFLOAT16, kd, ks, false, false, "dK") ||
        tensor(g->p, &dV, U_DV, CUDNN_DATA_BFLOAT16, kd, vs, false, false, "dV"))
        return -1;
    dims(st, B, nh, n, 1); dims(sts, (int64_t)nh * n, n, 1, 1);
    if (tensor(g->p, &Stats, U_STATS, CUDNN_DATA_FLOAT, st, sts, false, false, "Stats") ||
        tensor(g->p, &ssum, U_SSUM, CUDNN_DATA_FLOAT, st, sts, false, false, "softmax_sum") ||
        tensor(g->p, &scale, U_SCALE, CUDNN_DATA_FLOAT, one4, one4, false, true, "scale") ||
        tensor(g->p, &neginf, U_NEGINF, CUDNN_DATA_FLOAT, one4, one4, false, true, "-inf") ||
        tensor(g->p, &one, U_ONE, CUDNN_DATA_FLOAT, one4, one4, false, true, "one"))
        return -1;
    /* softmax_sum = rowsum(dO * O) (the mul's strides as cudnn-frontend gives them) */
    int64_t od[4], os[4];
    dims(od, B, nh, n, hd); dims(os, (int64_t)nh * n * hd, (int64_t)n * hd, (int64_t)nh * hd, 1);
    cudnnBackendDescriptor_t dOO, rsum;
    if (vt(g, &dOO, CUDNN_DATA_FLOAT, od, os, "dO*O") || vt(g, &rsum, CUDNN_DATA_FLOAT, st, sts, "rowsum dO*O"))
        return -1;
    if (pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dO, O, NULL, dOO, -1, "dO*O") ||
        reduce(g, CUDNN_REDUCE_TENSOR_ADD, dOO, rsum, "rowsum dO*O") ||
        pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, rsum, one, NULL, ssum, -1, "softmax_sum"))
        return -1;
    /* P = exp(S * scale - Stats), masked */
    dims(sd, B, nh, n, n); dims(ss, (int64_t)nh * n * n, (int64_t)n * n, n, 1);
    dims(sdt, B, nh, n, n); dims(sst, (int64_t)nh * n * n, (int64_t)n * n, 1, n);   /* the transposed view */
    cudnnBackendDescriptor_t S, Ss, Sl, Sm, P, PT, dP, dPs, dS, dSs, dST, K;
    if (vt(g, &S, CUDNN_DATA_FLOAT, sd, ss, "S") || vt(g, &Ss, CUDNN_DATA_FLOAT, sd, ss, "S*scale") ||
        vt(g, &Sl, CUDNN_DATA_FLOAT, sd, ss, "S-Stats") || vt(g, &Sm, CUDNN_DATA_FLOAT, sd, ss, "masked") ||
        vt(g, &P, CUDNN_DATA_FLOAT, sd, ss, "P") || vt(g, &PT, CUDNN_DATA_BFLOAT16, sdt, sst, "P^T"))
        return -1;
    if (matmul(g, Q, KT, S, "Q K^T") ||
        pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, S, scale, NULL, Ss, -1, "attn_scale") ||
        pw(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, Ss, Stats, NULL, Sl, -1, "sub Stats") ||
        causal(g, Sl, neginf, Sm, sd, ss) ||
        pw(g, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, Sm, NULL, NULL, P, -1, "exp") || reshape(g, P, PT, "P^T"))
        return -1;
    /* dV = P^T dO (GQA: per query head, then summed over each group) */
    int64_t fd[4], fs[4];
    dims(fd, B, nh, n, hd); dims(fs, (int64_t)nh * n * hd, (int64_t)n * hd, hd, 1);
    if (nh == nkv) {
        if (matmul(g, PT, dO, dV, "P^T dO")) return -1;
    } else {
        cudnnBackendDescriptor_t dVf;
        if (vt(g, &dVf, CUDNN_DATA_BFLOAT16, fd, fs, "dV per query head") || matmul(g, PT, dO, dVf, "P^T dO") ||
            reduce(g, CUDNN_REDUCE_TENSOR_ADD, dVf, dV, "dV over the group"))
            return -1;
    }
    /* dS = P (dO V^T - softmax_sum) * scale */
    if (vt(g, &dP, CUDNN_DATA_FLOAT, sd, ss, "dP") || vt(g, &dPs, CUDNN_DATA_FLOAT, sd, ss, "dP-sum") ||
        vt(g, &dS, CUDNN_DATA_FLOAT, sd, ss, "dS") || vt(g, &dSs, CUDNN_DATA_FLOAT, sd, ss, "dS*scale") ||
        vt(g, &dST, CUDNN_DATA_BFLOAT16, sdt, sst, "dS^T"))
        return -1;
    if (matmul(g, dO, VT, dP, "dO V^T") ||
        pw(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dP, ssum, NULL, dPs, -1, "sub softmax_sum") ||
        pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dPs, P, NULL, dS, -1, "mul P") ||
        pw(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dS, scale, NULL, dSs, -1, "dS attn_scale") ||
        reshape(g, dSs, dST, "dS^T"))
        return -1;
    /* dK = dS^T Q */
    if (nh == nkv) {
        if (matmul(g, dST, Q, dK, "dS^T Q")) return -1;
    } else {
        cudnnBackendDescriptor_t dKf;
        if (vt(g, &dKf, CUDNN_DATA_BFLOAT16, fd, fs, "dK per query head") || matmul(g, dST, Q, dKf, "dS^T Q") ||
            reduce(g, CUDNN_REDUCE_TENSOR_ADD, dKf, dK, "dK over the group"))
            return -1;
    }
    /* dQ = dS K: K as the reshaped K^T, into the fp32 accumulator, then bf16 dQ */
    if (vt(g, &K, CUDNN_DATA_BFLOAT16, kd, kin, "K") || reshape(g, KT, K, "K") || matmul(g, dSs, K, dQacc, "dS K") ||
        pw(g, CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, dQacc, NULL, NULL, dQ, -1, "dQ"))
        return -1;
    return 0;
}

/* Builds the plan of p (graph, heuristics, the first engine config that
 * finalizes). 0, or -1 having printed what failed. */
static int build_plan(Plan *p) {
    Pool pool = {{0}, 0};
    Graph g = {&pool, {0}, 0, 1000};
    const char *kind = p->bwd ? "backward" : "forward";
    if (log_on)
        fprintf(stderr, "cudnn-attn: building the %s graph B %d n %d nh %d nkv %d hd %d (dV rows %d, Q/K/V rows %d)\n",
                kind, p->B, p->n, p->nh, p->nkv, p->hd, p->dvld, p->qld);
    int rc = p->bwd ? build_bwd_graph(&g, p->B, p->n, p->nh, p->nkv, p->hd, p->dvld, p->qld)
                    : build_fwd_graph(&g, p->B, p->n, p->nh, p->nkv, p->hd, p->qld);
    if (rc) { pool_free(&pool); return -1; }
    if (log_on) fprintf(stderr, "cudnn-attn:   %d operations, %d descriptors\n", g.nops, pool.n);
    cudnnBackendDescriptor_t og, heur, plan = NULL;
    auto fail = [&](void) { pool_free(&pool); return -1; };
    if (make(&pool, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &og, "operation graph")) return fail();
    cudnnStatus_t st;
    if ((st = dn.bset(og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g.nops, g.ops)) ||
        (st = dn.bset(og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle))) {
        report("operation graph: set OPS/HANDLE", st);
        return fail();
    }
    st = dn.bfinalize(og);
    if (st) { report("operation graph finalize (cuDNN does not take this graph)", st); return fail(); }
    if (log_on) fprintf(stderr, "cudnn-attn:   operation graph finalized\n");
    cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int mi = 0; mi < 2 && !plan; mi++) {
        if (make(&pool, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur, "engine heuristics")) return fail();
        if ((st = dn.bset(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og)) ||
            (st = dn.bset(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[mi])) ||
            (st = dn.bfinalize(heur))) {
            report(mi ? "engine heuristics (mode FALLBACK)" : "engine heuristics (mode A)", st);
            continue;
        }
        enum { NCFG = 8 };
        cudnnBackendDescriptor_t cfg[NCFG];
        int64_t got = 0;
        for (int i = 0; i < NCFG; i++)
            if (make(&pool, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfg[i], "engine config")) return fail();
        if ((st = dn.bget(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, NCFG, &got, cfg))) {
            report("engine heuristics: get RESULTS", st);
            continue;
        }
        if (log_on) fprintf(stderr, "cudnn-attn:   heuristics mode %s: %lld engine configs\n", mi ? "FALLBACK" : "A",
                            (long long)got);
        for (int i = 0; i < got && i < NCFG && !plan; i++) {
            cudnnBackendDescriptor_t pl;
            if ((st = dn.bcreate(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &pl))) { report("execution plan create", st); break; }
            if ((st = dn.bset(pl, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)) ||
                (st = dn.bset(pl, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i])) ||
                (st = dn.bfinalize(pl))) {
                if (log_on) report("execution plan of engine config (trying the next)", st);
                dn.bdestroy(pl);
                continue;
            }
            plan = pl;
            int64_t ws = 0, cnt = 0;
            dn.bget(pl, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt, &ws);
            p->ws = ws;
            if (log_on) {
                char json[1024] = "";
                int64_t len = 0;
                if (dn.bget(pl, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, sizeof json - 1, &len,
                            json) == CUDNN_STATUS_SUCCESS)
                    json[len < (int64_t)sizeof json ? len : (int64_t)sizeof json - 1] = 0;
                fprintf(stderr, "cudnn-attn:   %s plan: engine config #%d, workspace %lld bytes, %s\n", kind, i,
                        (long long)ws, json);
            }
        }
    }
    if (!plan) {
        pool_free(&pool);
        if (p->qld)
            fprintf(stderr, "cudnn-attn: no cuDNN engine runs the %s graph of B %d n %d nh %d nkv %d hd %d with "
                            "Q, K, V rows %d values apart (dV rows %d): the dense Q, K, V path runs "
                            "(FLOWHN_CUDNN_VKEEP)\n", kind, p->B, p->n, p->nh, p->nkv, p->hd, p->qld, p->dvld);
        else if (p->dvld)
            fprintf(stderr, "cudnn-attn: no cuDNN engine runs the backward graph of B %d n %d nh %d nkv %d hd %d with "
                            "dV rows %d values apart: the dense dV plan runs (FLOWHN_CUDNN_DV)\n", p->B, p->n, p->nh,
                    p->nkv, p->hd, p->dvld);
        else
            fprintf(stderr, "cudnn-attn: no cuDNN engine runs the %s graph of B %d n %d nh %d nkv %d hd %d: our kernel "
                            "runs that shape (FLOWHN_ATTN_CUDNN_LOG=1 shows the steps)\n", kind, p->B, p->n, p->nh,
                    p->nkv, p->hd);
        return -1;
    }
    /* the graph's descriptors stay alive with the plan (cudnn-frontend keeps them too; whether a finalized plan
     * copies what it refers to is not documented): a few hundred small objects per shape */
    p->plan = plan;
    return 0;
}

/* the shape's plan, built now if need be; NULL: decline */
static Plan *get_plan(int bwd, int B, int n, int nh, int nkv, int hd, int dvld, int qld) {
    for (int i = 0; i < nplans; i++) {
        Plan *p = &plans[i];
        if (p->bwd == bwd && p->B == B && p->n == n && p->nh == nh && p->nkv == nkv && p->hd == hd &&
            p->dvld == dvld && p->qld == qld)
            return p->state > 0 ? p : NULL;
    }
    if (cuda_capturing()) return NULL;   /* no build while a graph is recorded */
    if (nplans >= MAXPLANS) {
        static int told;
        if (!told++)
            fprintf(stderr, "cudnn-attn: the plan table is full (%d shapes): new shapes run our kernel\n", MAXPLANS);
        return NULL;
    }
    Plan *p = &plans[nplans++];
    memset(p, 0, sizeof *p);
    p->bwd = bwd; p->B = B; p->n = n; p->nh = nh; p->nkv = nkv; p->hd = hd; p->dvld = dvld; p->qld = qld;
    p->state = build_plan(p) ? -1 : 1;
    return p->state > 0 ? p : NULL;
}

static int execute(Plan *p, const int64_t *uids, void *const *ptrs, int nptr, void *ws, const char *kind) {
    Pool pool = {{0}, 0};
    cudnnBackendDescriptor_t vp;
    cudnnStatus_t st;
    if (make(&pool, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp, "variant pack")) return -1;
    if ((st = dn.bset(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, nptr, uids)) ||
        (st = dn.bset(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, nptr, ptrs)) ||
        (st = dn.bset(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws)) || (st = dn.bfinalize(vp))) {
        report("variant pack", st);
        pool_free(&pool);
        return -1;
    }
    if ((st = dn.set_stream(handle, cuda_stream()))) { report("cudnnSetStream", st); pool_free(&pool); return -1; }
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);   /* device memory changes (linear.cu's roundings) */
    st = dn.bexecute(handle, p->plan, vp);
    pool_free(&pool);
    if (st) {
        char what[96];
        snprintf(what, sizeof what, "cudnnBackendExecute (%s plan)", kind);
        report(what, st);
        return -1;
    }
    cuda_attn_cudnn_runs++;
    return 0;
}

/* ---- conversion kernels ---- */

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* dst (bf16) = rope(src) or src, [rows, heads, hd] with token t = row % n;
 * one thread per rotation pair (i, i + hd/2); cs NULL: no rotation. The same
 * fp32 rotation as rope.cu's rope_kernel, then round to nearest. src's rows
 * are ld values apart (ops.h row strides), dst's dense. */
__global__ void cudnn_to_bf16_kernel(bf16 *dst, const float *src, const float2 *cs, size_t rows, int n, int heads,
                                     int hd, int ld) {
    int half = hd / 2;
    size_t total = rows * heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rh = idx / half;
        size_t base = rh * hd, sbase = (rh / heads) * ld + (rh % heads) * hd;
        float x0 = src[sbase + i], x1 = src[sbase + i + half];
        if (cs) {
            int t = (int)((rh / heads) % n);
            float2 r = cs[(size_t)t * half + i];
            float o0 = x0 * r.x - x1 * r.y, o1 = x1 * r.x + x0 * r.y;
            x0 = o0; x1 = o1;
        }
        dst[base + i] = __float2bfloat16_rn(x0);
        dst[base + i + half] = __float2bfloat16_rn(x1);
    }
}

/* out (fp32) = O (bf16), and out's bf16 shadow when claimed (the same bits as O) */
__global__ void cudnn_from_bf16_kernel(float *out, bf16 *shadow, const bf16 *o, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        bf16 v = o[i];
        out[i] = __bfloat162float(v);
        if (shadow) shadow[i] = v;
    }
}

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

/* A gradient back into our layout [B, n, heads, hd] (fp32, rows ld apart), acc or overwrite:
 * from fp32 [B, heads, n, hd] (dQ_accum, bhsd 1) or bf16 [B, n, heads, hd];
 * cs: RoPE's inverse (rotation by -angle), as rope_bwd. */
template <typename T>
__global__ void cudnn_grad_kernel(float *dst, const T *src, const float2 *cs, int B, int n, int heads, int hd,
                                  int bhsd, int acc, int ld) {
    int half = hd / 2;
    size_t total = (size_t)B * n * heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rh = idx / half;   /* (b*n + t)*heads + h */
        int h = (int)(rh % heads);
        size_t bt = rh / heads;
        int t = (int)(bt % n), b = (int)(bt / n);
        size_t sbase = bhsd ? (((size_t)b * heads + h) * n + t) * hd : rh * hd;
        float x0 = to_f(src[sbase + i]), x1 = to_f(src[sbase + i + half]);
        if (cs) {
            float2 r = cs[(size_t)t * half + i];
            float o0 = x0 * r.x + x1 * r.y, o1 = x1 * r.x - x0 * r.y;
            x0 = o0; x1 = o1;
        }
        size_t dbase = bt * ld + (size_t)h * hd;
        if (acc) { x0 += dst[dbase + i]; x1 += dst[dbase + i + half]; }
        dst[dbase + i] = x0;
        dst[dbase + i + half] = x1;
    }
}

/* ---- the vectorised conversions (FLOWHN_CUDNN_CONV=old: the kernels above) ----
 * Each thread takes 4 rotation pairs: (i..i+3, i+half..i+half+3) of one row and
 * head, so both halves are one 16-byte fp32 load each (one 8-byte bf16 load in
 * the gradient), the table's 4 (cos, sin) two 16-byte loads, and the stores 8
 * bytes of bf16 (16 of fp32). hd is a multiple of 8 (usable()), so half is a
 * multiple of 4 and every vector is aligned when the tensors are 16-byte
 * aligned (checked at the call; our blocks are 256-byte aligned). Up to three
 * tensors (q, k, v; dq, dk, dv) in one launch: a segment per tensor, its
 * items (row, head, quad) counted in turn. */
struct ConvSeg {
    void *dst;
    const void *src;
    void *sh;       /* gradients only: the fp32 result's bf16 rounding too, at dst's offsets (a shadow), or NULL */
    int heads;
    int rope;       /* rotate (cs) or not */
    int ld;         /* the fp32 side's row stride (ops.h row strides; the bf16 side is dense) */
    size_t items;   /* rows * heads * half / 4 */
};
struct ConvArgs {
    ConvSeg s[3];
    int nseg, n, hd, acc;
    int f32;        /* gradients: store the fp32 values (0: bf16-only, only sh is written) */
    const float2 *cs;
};

/* the segment of item idx and its index there; fields picked by constant indices (no local-memory copy of
 * the kernel's parameter struct) */
struct SegView {
    void *dst;
    const void *src;
    void *sh;
    int heads, rope, ld;
};
__device__ __forceinline__ SegView seg_of(const ConvArgs &a, size_t idx, size_t *j) {
    SegView v;
    if (idx < a.s[0].items || a.nseg == 1) {
        v.dst = a.s[0].dst; v.src = a.s[0].src; v.sh = a.s[0].sh; v.heads = a.s[0].heads; v.rope = a.s[0].rope;
        v.ld = a.s[0].ld;
    } else if (idx - a.s[0].items < a.s[1].items || a.nseg == 2) {
        idx -= a.s[0].items;
        v.dst = a.s[1].dst; v.src = a.s[1].src; v.sh = a.s[1].sh; v.heads = a.s[1].heads; v.rope = a.s[1].rope;
        v.ld = a.s[1].ld;
    } else {
        idx -= a.s[0].items + a.s[1].items;
        v.dst = a.s[2].dst; v.src = a.s[2].src; v.sh = a.s[2].sh; v.heads = a.s[2].heads; v.rope = a.s[2].rope;
        v.ld = a.s[2].ld;
    }
    *j = idx;
    return v;
}
__device__ __forceinline__ void rot4(float4 &x0, float4 &x1, const float2 *cs, float sgn) {
    float4 c01 = *(const float4 *)cs, c23 = *(const float4 *)(cs + 2);   /* (cos, sin) x 4 */
    float c[4] = {c01.x, c01.z, c23.x, c23.z}, sn[4] = {sgn * c01.y, sgn * c01.w, sgn * c23.y, sgn * c23.w};
    float *a = &x0.x, *b = &x1.x;
    #pragma unroll
    for (int e = 0; e < 4; e++) {
        float o0 = a[e] * c[e] - b[e] * sn[e], o1 = b[e] * c[e] + a[e] * sn[e];
        a[e] = o0; b[e] = o1;
    }
}
__device__ __forceinline__ uint2 pack4(float4 v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 r;
    r.x = *(unsigned int *)&lo;
    r.y = *(unsigned int *)&hi;
    return r;
}
__device__ __forceinline__ float4 unpack4(uint2 r) {
    __nv_bfloat162 lo = *(__nv_bfloat162 *)&r.x, hi = *(__nv_bfloat162 *)&r.y;
    float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
    return make_float4(a.x, a.y, b.x, b.y);
}

/* the vector kernels' element idx: its tensor, its row-head rh, the first of its 4 columns i (the partner
 * quad at i + hd/2), the row-head's start base */
__device__ __forceinline__ SegView quad_of(const ConvArgs &a, size_t idx, unsigned int quads, unsigned int *rh,
                                           int *i, size_t *base) {
    size_t jj;
    SegView g = seg_of(a, idx, &jj);
    unsigned int j = (unsigned int)jj;   /* 32-bit: each tensor has < 2^32 values (convert) */
    *rh = j / quads;
    *i = (int)(j % quads) * 4;
    *base = (size_t)*rh * a.hd;
    return g;
}

/* fp32 -> (rotated) bf16: the same fp32 arithmetic as cudnn_to_bf16_kernel, the same bits. S16: the source
 * is bf16 at the fp32 side's offsets (the q|k|v product's bf16 D, ops.h bf16_only once = 3): one 8-byte load
 * of 4 values, widened, then the same fp32 rotation and rounding (a second rounding of the rotated values).
 * AT: the result goes to dst at the source's offsets (rows ld apart), not dense: with dst == src, the rotation
 * in place in the product's D (FLOWHN_CUDNN_VKEEP; each thread stores exactly the 8 values it loaded) */
template <bool S16, bool AT>
__global__ void cudnn_to_bf16_vec_kernel(ConvArgs a, size_t total) {
    unsigned int half = a.hd / 2, quads = half / 4;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        unsigned int rh;
        int i;
        size_t base;
        SegView g = quad_of(a, idx, quads, &rh, &i, &base);
        unsigned int row = rh / (unsigned int)g.heads;
        size_t off = (size_t)row * g.ld + (size_t)(rh - row * g.heads) * a.hd;
        float4 x0, x1;
        if (S16) {
            const bf16 *src = (const bf16 *)g.src + off;
            x0 = unpack4(*(const uint2 *)(src + i));
            x1 = unpack4(*(const uint2 *)(src + i + half));
        } else {
            const float *src = (const float *)g.src + off;
            x0 = *(const float4 *)(src + i);
            x1 = *(const float4 *)(src + i + half);
        }
        if (g.rope) {
            int t = (int)((rh / (unsigned int)g.heads) % (unsigned int)a.n);
            rot4(x0, x1, a.cs + (size_t)t * half + i, 1.f);
        }
        bf16 *dst = (bf16 *)g.dst + (AT ? off : base);
        *(uint2 *)(dst + i) = pack4(x0);
        *(uint2 *)(dst + i + half) = pack4(x1);
    }
}

/* bf16 [B, n, heads, hd] -> fp32 gradient, RoPE's inverse where rope, acc: the same arithmetic as
 * cudnn_grad_kernel<bf16>. Where the segment has sh (the fp32 result's shadow, at the same offsets) the
 * final fp32 values' rounding goes there too (the bits linear.cu's rounding of dst would give: round to
 * nearest); a.f32 = 0 (bf16-only dq|dk|dv, see attention_cudnn_bwd) stores the rounding only. */
__global__ void cudnn_grad_vec_kernel(ConvArgs a, size_t total) {
    unsigned int half = a.hd / 2, quads = half / 4;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        unsigned int rh;
        int i;
        size_t base;
        SegView g = quad_of(a, idx, quads, &rh, &i, &base);
        const bf16 *src = (const bf16 *)g.src + base;
        float4 x0 = unpack4(*(const uint2 *)(src + i)), x1 = unpack4(*(const uint2 *)(src + i + half));
        if (g.rope) {
            int t = (int)((rh / (unsigned int)g.heads) % (unsigned int)a.n);
            rot4(x0, x1, a.cs + (size_t)t * half + i, -1.f);   /* rotation by -angle */
        }
        unsigned int row = rh / (unsigned int)g.heads;
        size_t off = (size_t)row * g.ld + (size_t)(rh - row * g.heads) * a.hd;
        float *dst = (float *)g.dst + off;
        if (a.acc) {
            float4 d0 = *(const float4 *)(dst + i), d1 = *(const float4 *)(dst + i + half);
            x0.x += d0.x; x0.y += d0.y; x0.z += d0.z; x0.w += d0.w;
            x1.x += d1.x; x1.y += d1.y; x1.z += d1.z; x1.w += d1.w;
        }
        if (a.f32) {
            *(float4 *)(dst + i) = x0;
            *(float4 *)(dst + i + half) = x1;
        }
        if (g.sh) {
            bf16 *sh = (bf16 *)g.sh + off;
            *(uint2 *)(sh + i) = pack4(x0);
            *(uint2 *)(sh + i + half) = pack4(x1);
        }
    }
}

/* FLOWHN_CUDNN_GRADVEC (default 1; 0: cudnn_grad_vec_kernel above): the same conversion by rows (perf-notes
 * "gradvec"). Block (half/8, slots, rz): threadIdx.x the octet of 8 rotation pairs (i..i+7 and
 * i+half..i+half+7), threadIdx.y the head slot over the segments in turn (s[0]'s heads, then s[1]'s, s[2]'s),
 * threadIdx.z the row within the block; the grid covers the rows once (no grid-stride loop). A thread: two
 * 16-byte bf16 loads, the table's 8 (cos, sin) as four 16-byte loads (the same 64 bytes for every head slot of a
 * row: a broadcast within the warp), 16-byte stores; no division but the token's % n (the old kernel: four per
 * 8 values). Each quad goes through the same rot4 and the same acc order as cudnn_grad_vec_kernel: the same
 * fp32 expressions, the same bits (tests compare the two bitwise). Needs hd % 16 == 0, every ld % 8 == 0 and
 * 16-byte aligned pointers (grad_rows_ok). */
__global__ void cudnn_grad_rows_kernel(ConvArgs a, unsigned int rows) {
    unsigned int row = blockIdx.x * blockDim.z + threadIdx.z;
    if (row >= rows) return;
    unsigned int half = a.hd / 2, i = threadIdx.x * 8, h = threadIdx.y;
    SegView g;   /* fields picked by constant indices (no local-memory copy of the parameter struct) */
    if (h < (unsigned int)a.s[0].heads) {
        g.dst = a.s[0].dst; g.src = a.s[0].src; g.sh = a.s[0].sh; g.heads = a.s[0].heads; g.rope = a.s[0].rope;
        g.ld = a.s[0].ld;
    } else if (h - a.s[0].heads < (unsigned int)a.s[1].heads) {
        h -= a.s[0].heads;
        g.dst = a.s[1].dst; g.src = a.s[1].src; g.sh = a.s[1].sh; g.heads = a.s[1].heads; g.rope = a.s[1].rope;
        g.ld = a.s[1].ld;
    } else {
        h -= a.s[0].heads + a.s[1].heads;
        g.dst = a.s[2].dst; g.src = a.s[2].src; g.sh = a.s[2].sh; g.heads = a.s[2].heads; g.rope = a.s[2].rope;
        g.ld = a.s[2].ld;
    }
    const bf16 *src = (const bf16 *)g.src + ((size_t)row * g.heads + h) * a.hd;
    uint4 r0 = *(const uint4 *)(src + i), r1 = *(const uint4 *)(src + i + half);
    float4 x0a = unpack4(make_uint2(r0.x, r0.y)), x0b = unpack4(make_uint2(r0.z, r0.w));
    float4 x1a = unpack4(make_uint2(r1.x, r1.y)), x1b = unpack4(make_uint2(r1.z, r1.w));
    if (g.rope) {
        const float2 *cs = a.cs + (size_t)(row % (unsigned int)a.n) * half + i;
        rot4(x0a, x1a, cs, -1.f);   /* rotation by -angle, as cudnn_grad_vec_kernel */
        rot4(x0b, x1b, cs + 4, -1.f);
    }
    size_t off = (size_t)row * g.ld + (size_t)h * a.hd;
    float *dst = (float *)g.dst + off;
    if (a.acc) {
        float4 d0a = *(const float4 *)(dst + i), d0b = *(const float4 *)(dst + i + 4);
        float4 d1a = *(const float4 *)(dst + i + half), d1b = *(const float4 *)(dst + i + half + 4);
        x0a.x += d0a.x; x0a.y += d0a.y; x0a.z += d0a.z; x0a.w += d0a.w;
        x0b.x += d0b.x; x0b.y += d0b.y; x0b.z += d0b.z; x0b.w += d0b.w;
        x1a.x += d1a.x; x1a.y += d1a.y; x1a.z += d1a.z; x1a.w += d1a.w;
        x1b.x += d1b.x; x1b.y += d1b.y; x1b.z += d1b.z; x1b.w += d1b.w;
    }
    if (a.f32) {
        *(float4 *)(dst + i) = x0a;
        *(float4 *)(dst + i + 4) = x0b;
        *(float4 *)(dst + i + half) = x1a;
        *(float4 *)(dst + i + half + 4) = x1b;
    }
    if (g.sh) {
        bf16 *sh = (bf16 *)g.sh + off;
        uint2 p0a = pack4(x0a), p0b = pack4(x0b), p1a = pack4(x1a), p1b = pack4(x1b);
        *(uint4 *)(sh + i) = make_uint4(p0a.x, p0a.y, p0b.x, p0b.y);
        *(uint4 *)(sh + i + half) = make_uint4(p1a.x, p1a.y, p1b.x, p1b.y);
    }
}

/* out (fp32) = O (bf16) and its shadow, 4 values a thread (count a multiple of 4) */
__global__ void cudnn_from_bf16_vec_kernel(float *out, bf16 *shadow, const bf16 *o, size_t count4) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count4; i += (size_t)gridDim.x * blockDim.x) {
        uint2 r = ((const uint2 *)o)[i];
        ((float4 *)out)[i] = unpack4(r);
        if (shadow) ((uint2 *)shadow)[i] = r;
    }
}

static int conv_new = -1;   /* FLOWHN_CUDNN_CONV=old: the first conversion kernels */
static int keep_on = -1;    /* FLOWHN_CUDNN_KEEP (default 1): Q, K, V kept from the forward for the backward */
int cuda_set_cudnn_conv_old(int on) {
    int was = cuda_env_switch(&conv_new, "FLOWHN_CUDNN_CONV", "old", 1, on < 0 ? -1 : !on);
    return !was;
}
int cuda_set_cudnn_keep(int on) { return cuda_env_switch(&keep_on, "FLOWHN_CUDNN_KEEP", "0", 1, on); }
unsigned long cuda_cudnn_kept_served;   /* backward inputs read from the forward's bf16 (tests) */
static int dv_on = -1;   /* FLOWHN_CUDNN_DV (default 1): dV straight into the packed dqkv's bf16 rounding */
int cuda_set_cudnn_dv(int on) { return cuda_env_switch(&dv_on, "FLOWHN_CUDNN_DV", "0", 1, on); }
unsigned long cuda_cudnn_dv_direct, cuda_cudnn_dv_planned;
int cuda_cudnn_dv_decline;
static int gradvec_on = -1;   /* FLOWHN_CUDNN_GRADVEC (default 1): cudnn_grad_rows_kernel; 0: cudnn_grad_vec_kernel */
int cuda_set_cudnn_gradvec(int on) { return cuda_env_switch(&gradvec_on, "FLOWHN_CUDNN_GRADVEC", "0", 1, on); }
unsigned long cuda_cudnn_grad_rows;   /* launches of cudnn_grad_rows_kernel (tests) */
static int vkeep_on = -1;   /* FLOWHN_CUDNN_VKEEP (default 1): Q, K rotated in place in the product's D, V read there */
int cuda_set_cudnn_vkeep(int on) { return cuda_env_switch(&vkeep_on, "FLOWHN_CUDNN_VKEEP", "0", 1, on); }
unsigned long cuda_cudnn_vkeep_runs, cuda_cudnn_vkeep_served;
int cuda_cudnn_vkeep_decline;

static int al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* the old kernels: one launch per tensor */
static void to_bf16(bf16 *dst, const float *src, const float2 *cs, int B, int n, int heads, int hd, int ld) {
    size_t total = (size_t)B * n * heads * (hd / 2);
    cudnn_to_bf16_kernel<<<grid_for(total, 256), 256, 0, cuda_stream()>>>(dst, src, cs, (size_t)B * n, n, heads, hd,
                                                                           ld);
    CUDA_LAUNCHED();
}
template <typename T>
static void grad_back(float *dst, const T *src, const float2 *cs, int B, int n, int heads, int hd, int bhsd, int acc,
                      int ld) {
    if (!dst) return;
    size_t total = (size_t)B * n * heads * (hd / 2);
    cudnn_grad_kernel<T><<<grid_for(total, 256), 256, 0, cuda_stream()>>>(dst, src, cs, B, n, heads, hd, bhsd, acc,
                                                                           ld);
    CUDA_LAUNCHED();
}

/* Conversions of up to 3 tensors [B, n, heads_i, hd]: to bf16 (grad 0; dst bf16, src fp32, rotated where
 * rope_i) or gradients back (grad 1; dst fp32, src bf16, RoPE's inverse where rope_i, acc). A NULL dst
 * skips that tensor. The fp32 side's rows are ld_i values apart, the bf16 side is dense. Vectorised unless
 * FLOWHN_CUDNN_CONV=old or a pointer is not 16-byte aligned or a stride not a multiple of 4. */
/* whether convert() takes the vectorised kernels for these tensors */
static int conv_vec(int nt, void *const *dst, const void *const *src, const int *heads, const int *ld, int B, int n,
                    int hd) {
    int vec = !cuda_set_cudnn_conv_old(-1);
    for (int t = 0; t < nt; t++)
        vec &= !dst[t] || (al16(dst[t]) && al16(src[t]) && ld[t] % 4 == 0 &&
                           (size_t)B * n * heads[t] * hd < ((size_t)1 << 32));
    return vec;
}

/* sh (gradients, vectorised only: conv_vec must hold): the fp32 results' bf16 rounding into the shadow sh of
 * the fp32 buffer that starts at sh_base (every dst inside it, at dst - sh_base there); f32 = 0 stores only
 * that rounding. sh NULL: as before. */
static void convert_sh(int grad, int nt, void *const *dst, const void *const *src, const int *heads, const int *rope,
                       const int *ld, const float2 *cs, int B, int n, int hd, int acc, void *sh, const float *sh_base,
                       int f32, const void *s16 = NULL) {
    ConvArgs a;
    memset(&a, 0, sizeof a);
    a.n = n; a.hd = hd; a.acc = acc; a.cs = cs; a.f32 = f32 || !sh;
    int vec = conv_vec(nt, dst, src, heads, ld, B, n, hd);
    size_t total = 0;
    for (int t = 0; t < nt; t++) {
        if (!dst[t]) continue;
        const float2 *c = rope[t] ? cs : NULL;
        if (!vec) {
            if (grad) grad_back<bf16>((float *)dst[t], (const bf16 *)src[t], c, B, n, heads[t], hd, 0, acc, ld[t]);
            else to_bf16((bf16 *)dst[t], (const float *)src[t], c, B, n, heads[t], hd, ld[t]);
            continue;
        }
        ConvSeg &g = a.s[a.nseg++];
        g.dst = dst[t]; g.src = src[t]; g.heads = heads[t]; g.rope = c != NULL; g.ld = ld[t];
        if (s16 && !grad) g.src = (const bf16 *)s16 + ((const float *)src[t] - sh_base);   /* D at src's offsets */
        g.sh = sh && grad ? (bf16 *)sh + ((const float *)dst[t] - sh_base) : NULL;
        g.items = (size_t)B * n * heads[t] * (hd / 8);
        total += g.items;
    }
    if (!vec || !total) return;
    /* the row kernel (FLOWHN_CUDNN_GRADVEC): hd a multiple of 16 (octets of pairs), the rounding's 16-byte
     * stores aligned (every ld a multiple of 8, shadows 16-byte aligned), one row's threads in one block */
    int oct = hd / 16, slots = 0, rowsk = grad && cuda_set_cudnn_gradvec(-1) > 0 && hd % 16 == 0;
    for (int t = 0; t < a.nseg; t++) {
        slots += a.s[t].heads;
        rowsk &= a.s[t].ld % 8 == 0 && (!a.s[t].sh || al16(a.s[t].sh));
    }
    if (rowsk && oct * slots <= 1024) {
        int rz = 256 / (oct * slots);
        if (rz < 1) rz = 1;
        if (rz > 64) rz = 64;   /* blockDim.z's limit */
        unsigned int rows = (unsigned int)((size_t)B * n);
        dim3 blk((unsigned int)oct, (unsigned int)slots, (unsigned int)rz);
        cudnn_grad_rows_kernel<<<(rows + rz - 1) / rz, blk, 0, cuda_stream()>>>(a, rows);
        CUDA_LAUNCHED();
        cuda_cudnn_grad_rows++;
        return;
    }
    if (grad) cudnn_grad_vec_kernel<<<grid_for(total, 256), 256, 0, cuda_stream()>>>(a, total);
    else if (s16) cudnn_to_bf16_vec_kernel<true, false><<<grid_for(total, 256), 256, 0, cuda_stream()>>>(a, total);
    else cudnn_to_bf16_vec_kernel<false, false><<<grid_for(total, 256), 256, 0, cuda_stream()>>>(a, total);
    CUDA_LAUNCHED();
}
static void convert(int grad, int nt, void *const *dst, const void *const *src, const int *heads, const int *rope,
                    const int *ld, const float2 *cs, int B, int n, int hd, int acc) {
    convert_sh(grad, nt, dst, src, heads, rope, ld, cs, B, n, hd, acc, NULL, NULL, 1);
}

/* what a kept Q / K / V holds: the shape, the position array and theta (0: not rotated) */
static unsigned long long keep_tag(const int *pos, int B, int n, int heads, int hd, float theta, int which) {
    unsigned int tb;
    memcpy(&tb, &theta, sizeof tb);
    unsigned long long h = 1469598103934665603ull;
    unsigned long long v[] = {(unsigned long long)(uintptr_t)pos, (unsigned long long)B, (unsigned long long)n,
                              (unsigned long long)heads, (unsigned long long)hd, tb, (unsigned long long)which};
    for (int i = 0; i < 7; i++) { h ^= v[i]; h *= 1099511628211ull; }
    return h;
}

/* RoPE's (cos, sin) table of pos (rope.cu's bits), per branch; NULL when theta <= 0.
 * FLOWHN_ROPE_CACHE (default 1): the table is made again only when its inputs may differ from the last one
 * made on this branch: another pos pointer, n, hd, theta or table buffer, or cuda_host_writes moved. Why
 * that suffices: the table is a function of (pos[0, n), n, hd, theta) only; pos is an int array, which no
 * compute op writes (ops.h: every int pointer an op takes is const), so its contents change only through
 * from_host / zero / alloc / release (a new buffer at a reused address), each of which bumps
 * cuda_host_writes (memory.cu). The buffer itself is this branch's scratch, written only here and freed only
 * when it grows, i.e. for a larger n x hd/2 than every call before, which is then a miss (n or hd differ from
 * the entry's) and replaces the entry: a hit always finds its table where it was made. A recording bumps the
 * counter at graph_begin, so a graph always contains the kernel for its first table and a replay recomputes
 * it from what pos holds then (positions uploaded between replays are seen); and at graph_end, since the
 * recorded kernel did not run (an entry made inside a recording names a table never written). Kernels that
 * read the table run on this branch's stream after the kernel that wrote it. In a LLaMA training step the
 * token upload and the zeroing of the classifier's gradients bump the counter: two tables a step (24 before
 * at gpt2small: every layer's forward and backward). 0: every call makes it (the old behaviour).
 * cuda_rope_tables counts the tables made (tests). */
static int rope_cache_on = -1;
int cuda_set_rope_cache(int on) { return cuda_env_switch(&rope_cache_on, "FLOWHN_ROPE_CACHE", "0", 1, on); }
unsigned long cuda_rope_tables;
static struct {
    const int *pos;
    const float2 *t;
    int n, hd;
    float theta;
    unsigned long gen;
    int valid;
} rope_cached[CUDA_BRANCHES];
static int rope_table(const float2 **cs, const int *pos, int n, int hd, float theta) {
    *cs = NULL;
    if (!(theta > 0.f)) return 0;
    static BranchScratch s;
    float2 *t = (float2 *)cuda_branch_scratch(&s, sizeof(float2) * (size_t)n * (hd / 2), "the cuDNN attention's RoPE table");
    if (!t) return -1;
    *cs = t;
    int br = cuda_branch();
    if (br < 0 || br >= CUDA_BRANCHES) br = 0;
    if (cuda_set_rope_cache(-1) > 0 && rope_cached[br].valid && rope_cached[br].pos == pos &&
        rope_cached[br].t == t && rope_cached[br].n == n && rope_cached[br].hd == hd &&
        rope_cached[br].theta == theta && rope_cached[br].gen == cuda_host_writes)
        return 0;
    cuda_rope_table(t, pos, n, hd, theta);
    cuda_rope_tables++;
    rope_cached[br].pos = pos; rope_cached[br].t = t; rope_cached[br].n = n; rope_cached[br].hd = hd;
    rope_cached[br].theta = theta; rope_cached[br].gen = cuda_host_writes;
    rope_cached[br].valid = 1;
    return 0;
}

/* The keep of a packed q | k | v (ops.h row strides: one [rows, P] buffer, P = (nh + 2 nkv) hd, the q/k/v
 * product's output, which the model keeps whole: model.c attn_fwd_packed): q, k, v are its column windows
 * and the one kept bf16 buffer of B n P values holds Q, K, V dense one after the other (its size is theirs).
 * 1 when q, k, v are that layout. */
static int packed_qkv(const float *q, const float *k, const float *v, int nh, int nkv, int hd, int ldq, int ldkv) {
    int qd = nh * hd, kvd = nkv * hd, P = qd + 2 * kvd;
    return ldq == P && ldkv == P && k == q + qd && v == k + kvd;
}
static unsigned long long packed_tag(const int *pos, int B, int n, int nh, int nkv, int hd, float theta) {
    return keep_tag(pos, B, n, nh * 65536 + nkv, hd, theta, 3);
}
/* FLOWHN_CUDNN_VKEEP: the same keep holding the product's D laid out as q | k | v ([rows, P]) with Q and K
 * rotated in place; its own tag, so neither layout is ever read as the other */
static unsigned long long vkeep_tag(const int *pos, int B, int n, int nh, int nkv, int hd, float theta) {
    return keep_tag(pos, B, n, nh * 65536 + nkv, hd, theta, 4);
}
/* tests: the attention's owned keep of the packed q | k | v (either layout), *strided saying which */
const void *cuda_cudnn_kept_qkv(const float *q, const int *pos, int B, int n, int nh, int nkv, int hd, float theta,
                                int *strided) {
    size_t np = (size_t)B * n * (nh + 2 * nkv) * hd;
    float th = theta > 0.f ? theta : 0.f;
    const void *k = cuda_keep_owned(q, np, packed_tag(pos, B, n, nh, nkv, hd, th));
    *strided = 0;
    if (k) return k;
    k = cuda_keep_owned(q, np, vkeep_tag(pos, B, n, nh, nkv, hd, th));
    *strided = k != NULL;
    return k;
}
/* Q and K rotated in place in the packed [rows, P] bf16 buffer kb (the product's D): Q's nh heads at column 0,
 * K's nkv at nh hd, rows P apart; V (after them) untouched. The S16 vector kernel's arithmetic (the same bits
 * as its dense output). Needs conv_vec's conditions (checked by the caller). */
static void rotate_in_place(bf16 *kb, const float2 *cs, int B, int n, int nh, int nkv, int hd, int P) {
    if (!cs) return;   /* nothing to rotate: D is Q, K, V already */
    ConvArgs a;
    memset(&a, 0, sizeof a);
    a.n = n; a.hd = hd; a.cs = cs; a.f32 = 1;
    bf16 *at[2] = {kb, kb + (size_t)nh * hd};
    int heads[2] = {nh, nkv};
    size_t total = 0;
    for (int t = 0; t < 2; t++) {
        ConvSeg &g = a.s[a.nseg++];
        g.dst = at[t]; g.src = at[t]; g.heads = heads[t]; g.rope = 1; g.ld = P;
        g.items = (size_t)B * n * heads[t] * (hd / 8);
        total += g.items;
    }
    if (!total) return;
    cudnn_to_bf16_vec_kernel<true, true><<<grid_for(total, 256), 256, 0, cuda_stream()>>>(a, total);
    CUDA_LAUNCHED();
}

/* the masked scores' value: -inf, but cuDNN before 9.10 wants the lowest float there (cudnn-frontend does so) */
static float mask_value(void) { return dn.version() < 91000 ? -3.402823466e38f : -INFINITY; }

static int usable(int hd) {
    if (cuda_set_attn_cudnn(-1) <= 0) return 0;
    if (hd % 8 || hd > 128 || hd < 8) return 0;
    return cuda_attn_cudnn_loaded();
}

static void path_off(const char *why) {
    fprintf(stderr, "cudnn-attn: %s: the cuDNN attention path is off from here on (our kernels run)\n", why);
    path_on = 0;
}

int attention_cudnn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *pos, int B,
                        int n, int nh, int nkv, int hd, float theta, int ldq, int ldkv) {
    if (!usable(hd)) return 1;
    size_t nq = (size_t)B * n * nh * hd, nk = (size_t)B * n * nkv * hd;
    int keep = cuda_set_cudnn_keep(-1) > 0;
    int packed = packed_qkv(q, k, v, nh, nkv, hd, ldq, ldkv), dense = ldq == nh * hd && ldkv == nkv * hd;
    size_t np = nq + 2 * nk;   /* the packed buffer's values */
    /* FLOWHN_CUDNN_VKEEP: the product wrote its bf16 D into q|k|v's kept buffer (linear.cu qkv_d16, which owns
     * that keep now). With the keep and the vector kernel on and cuDNN's plans for Q, K, V at row stride P
     * (the forward's, and the backward's: built here, so the backward can always read the keep, q|k|v's fp32
     * being absent), Q and K are rotated in place there and V is read where it lies. Otherwise D is written
     * back to the fp32 (which also gives the keep back) and today's path runs from it: float(D), the values
     * the S16 kernel would widen, the same bits. */
    bf16 *vk = NULL;
    Plan *p = NULL;
    if (packed && cuda_qkv_d16_in_keep(q)) {
        bf16 *d = (bf16 *)cuda_qkv_d16(q, np);
        void *dst[2] = {d, d ? d + (size_t)nh * hd : NULL};
        const void *src[2] = {dst[0], dst[1]};
        int heads[2] = {nh, nkv}, ld[2] = {ldq, ldkv};
        if (d && keep && cuda_set_cudnn_vkeep(-1) > 0 && !cuda_cudnn_vkeep_decline &&
            conv_vec(2, dst, src, heads, ld, B, n, hd) && (p = get_plan(0, B, n, nh, nkv, hd, 0, ldq)) != NULL &&
            get_plan(1, B, n, nh, nkv, hd, 0, ldq) != NULL)
            vk = d;
        else {
            p = NULL;
            cuda_qkv_d16_restore(q);
        }
    }
    if (!vk) p = get_plan(0, B, n, nh, nkv, hd, 0, 0);
    if (!p) return 1;   /* (with vk: D is untouched yet; attention.cu writes it back) */
    size_t bq = align256(nq * sizeof(bf16)), bk = align256(nk * sizeof(bf16));
    size_t wsb = align256((size_t)p->ws);
    static BranchScratch s;
    /* a growth during recording would free memory a recorded graph uses: decline instead */
    if (cuda_capturing() && s.cap[cuda_branch()] < 2 * bq + 2 * bk + wsb) return 1;
    unsigned char *m = (unsigned char *)cuda_branch_scratch(&s, 2 * bq + 2 * bk + wsb, "the cuDNN attention scratch");
    if (!m) return 1;
    bf16 *Qh = (bf16 *)m, *Oh = (bf16 *)(m + bq), *Kh = (bf16 *)(m + 2 * bq), *Vh = (bf16 *)(m + 2 * bq + bk);
    void *ws = p->ws ? m + 2 * bq + 2 * bk : NULL;
    const float2 *cs;
    if (rope_table(&cs, pos, n, hd, theta)) return 1;
    /* Q, K, V into the kept buffers of q, k, v when the model keeps them (linear.cu "owned keeps"): the
     * backward then reads them instead of converting again */
    bf16 *kq = NULL, *kk = NULL, *kv = NULL;
    if (vk) {   /* the product's D: Q | K | V in its rows, P apart */
        Qh = vk;
        Kh = vk + (size_t)nh * hd;
        Vh = Kh + (size_t)nkv * hd;
    } else if (keep && packed && (kq = (bf16 *)cuda_keep_own(q, np)) != NULL) {   /* Q, K, V one after the other */
        kk = kq + nq;
        kv = kk + nk;
    } else if (keep && dense) {
        kq = (bf16 *)cuda_keep_own(q, nq);
        kk = (bf16 *)cuda_keep_own(k, nk);
        kv = (bf16 *)cuda_keep_own(v, nk);
    }
    if (kq) Qh = kq;
    if (kk) Kh = kk;
    if (kv) Vh = kv;
    /* out marked bf16-only (ops.h once = 4, FLOWHN_BF16_ATT_O): cuDNN writes O straight into out's kept buffer,
     * which is then out's bf16 rounding (round(float(O)) = O: the same bits); no fp32 out, no from_bf16 pass */
    bf16 *oh = keep ? (bf16 *)cuda_att_o_home(out, nq) : NULL;   /* the backward reads it only with the keep */
    if (oh) Oh = oh;
    const void *d16 = NULL;   /* the q|k|v product's bf16 D (linear.cu qkv_d16), read instead of q, k, v's fp32 */
    if (vk) rotate_in_place(vk, cs, B, n, nh, nkv, hd, ldq);
    else {
        void *dst[3] = {Qh, Kh, Vh};
        const void *src[3] = {q, k, v};
        int heads[3] = {nh, nkv, nkv}, rope[3] = {1, 1, 0}, ld[3] = {ldq, ldkv, ldkv};
        d16 = packed ? cuda_qkv_d16(q, np) : NULL;
        /* only with the packed keep (the backward then reads it, never the fp32) and the vector kernel (which
         * alone reads bf16); else the fp32 written back first, and everything as before */
        if (d16 && !(kq && packed && conv_vec(3, dst, src, heads, ld, B, n, hd))) {
            cuda_qkv_d16_restore(q);
            d16 = NULL;
        }
        convert_sh(0, 3, dst, src, heads, rope, ld, cs, B, n, hd, 0, NULL, q, 1, d16);
    }
    float scale = 1.f / sqrtf((float)hd), neginf = mask_value();
    int64_t uids[] = {U_Q, U_KT, U_V, U_O, U_STATS, U_SCALE, U_NEGINF};
    void *ptrs[] = {Qh, Kh, Vh, Oh, lse, &scale, &neginf};
    if (execute(p, uids, ptrs, 7, ws, "forward")) {
        path_off("the forward failed");
        if (!vk) return 1;
        /* D's Q and K are rotated in place: no write-back can give the product's values now; the step fails
         * (the error is recorded), nothing reads D again */
        cuda_record_error("cudnn-attn", "the forward failed after Q, K were rotated in the q|k|v product's D",
                          __FILE__, __LINE__);
        cuda_qkv_d16_done(q);
        return 0;
    }
    if (d16 || vk) cuda_qkv_d16_done(q);   /* read: from here the kept Q | K | V serves (the fp32 stays absent) */
    /* out (and its bf16 shadow for the o product) only after cuDNN ran: a claim is never left unwritten. With
     * a once = 4 mark the claim hands out the kept buffer cuDNN just wrote (oh) and skip: nothing to launch.
     * Without oh, a claim that cannot skip (the mark, if any, is spent: fp32 written as always) */
    int oskip = 0;
    bf16 *ob = (bf16 *)cuda_shadow_claim_only(out, nq, oh ? &oskip : NULL);
    unsigned long before = cuda_epoch;
    int direct = oh && ob == oh && oskip;
    if (!direct) {   /* (ob == Oh == oh without skip: each value read, then written back, by its own thread) */
        if (!cuda_set_cudnn_conv_old(-1) && al16(out) && al16(Oh) && (!ob || al16(ob)))
            cudnn_from_bf16_vec_kernel<<<grid_for(nq / 4, 256), 256, 0, cuda_stream()>>>(out, ob, Oh, nq / 4);
        else
            cudnn_from_bf16_kernel<<<grid_for(nq, 256), 256, 0, cuda_stream()>>>(out, ob, Oh, nq);
        CUDA_LAUNCHED();
    } else cuda_bf16_att_o_written++;
    CudaRange wr[3] = {{out, direct ? 0 : nq * sizeof(float)}, {lse, sizeof(float) * B * nh * n},
                       {ob, ob ? nq * sizeof(bf16) : 0}};
    cuda_shadow_done(before, wr, 3);
    /* the kept Q, K, V are written (after cuda_shadow_done: out and lse, declared there, do not overlap them) */
    float th = theta > 0.f ? theta : 0.f;
    if (vk) {
        cuda_keep_owned_done(q, np, vkeep_tag(pos, B, n, nh, nkv, hd, th));
        cuda_cudnn_vkeep_runs++;
        return 0;
    }
    if (kq && packed) {
        cuda_keep_owned_done(q, np, packed_tag(pos, B, n, nh, nkv, hd, th));
        return 0;
    }
    if (kq) cuda_keep_owned_done(q, nq, keep_tag(pos, B, n, nh, hd, th, 0));
    if (kk) cuda_keep_owned_done(k, nk, keep_tag(pos, B, n, nkv, hd, th, 1));
    if (kv) cuda_keep_owned_done(v, nk, keep_tag(pos, B, n, nkv, hd, 0.f, 2));
    return 0;
}

int attention_cudnn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                        const float *q, const float *k, const float *v, const int *pos, int B, int n, int nh, int nkv,
                        int hd, int acc, float theta, int ldq, int ldkv) {
    if (!usable(hd)) return 1;
    size_t nq = (size_t)B * n * nh * hd, nk = (size_t)B * n * nkv * hd, np = nq + 2 * nk;
    /* the forward's Q, K, V where still kept (linear.cu "owned keeps", the keep contract: q, k, v, out
     * unchanged since), else converted again below: Q, K rotated. Looked up first: the layout picks the plans
     * (qld: FLOWHN_CUDNN_VKEEP's strided keep, the product's D with Q, K rotated in place, rows P apart) */
    float th = theta > 0.f ? theta : 0.f;
    int keep = cuda_set_cudnn_keep(-1) > 0;
    int packed = packed_qkv(q, k, v, nh, nkv, hd, ldq, ldkv), dense = ldq == nh * hd && ldkv == nkv * hd;
    const bf16 *kq = NULL, *kk = NULL, *kv = NULL;
    int qld = 0;
    if (keep && packed &&
        (kq = (const bf16 *)cuda_keep_owned(q, nq + 2 * nk, packed_tag(pos, B, n, nh, nkv, hd, th))) != NULL) {
        kk = kq + nq;   /* as the forward laid them out */
        kv = kk + nk;
    } else if (keep && packed &&
               (kq = (const bf16 *)cuda_keep_owned(q, np, vkeep_tag(pos, B, n, nh, nkv, hd, th))) != NULL) {
        kk = kq + (size_t)nh * hd;   /* the product's columns */
        kv = kk + (size_t)nkv * hd;
        qld = ldq;
    } else if (keep && dense) {
        kq = (const bf16 *)cuda_keep_owned(q, nq, keep_tag(pos, B, n, nh, hd, th, 0));
        kk = (const bf16 *)cuda_keep_owned(k, nk, keep_tag(pos, B, n, nkv, hd, th, 1));
        kv = (const bf16 *)cuda_keep_owned(v, nk, keep_tag(pos, B, n, nkv, hd, 0.f, 2));
    }
    /* (qld: built by the forward that wrote the keep; NULL only if the table was full then, and then q|k|v's
     * fp32 is absent: attention.cu's fallback says so loudly) */
    Plan *p = get_plan(1, B, n, nh, nkv, hd, 0, qld);
    if (!p) return 1;
    /* dq from the graph's bf16 dQ: reading the fp32 accumulator as [B, nh, n, hd] gave
     * 0.1-0.4 relative errors on the H200 (cuDNN 9.19, session 8 call 1) while dk, dv
     * passed, so its layout or finality is not what cudnn-frontend's graph suggests.
     * FLOWHN_CUDNN_DQ=acc reads the accumulator again (for that investigation). */
    static int dq_acc = -1;
    if (dq_acc < 0) { const char *e = getenv("FLOWHN_CUDNN_DQ"); dq_acc = e && !strcmp(e, "acc"); }
    /* FLOWHN_CUDNN_DV: when only the bf16 rounding of the packed dq | dk | dv is to be stored (marked bf16-only
     * once = 1: the q|k|v product's one read; overwritten), cuDNN writes dV straight into that rounding's dv
     * columns (the plan pv binds dV with the row stride P) and the conversion handles dq, dk only. The same
     * bits: the conversion's dv was float(dV) rounded to nearest again, i.e. dV. pv NULL: off, not that case,
     * or cuDNN declines the strided layout (then the dense plan p, as before). */
    Plan *pv = NULL;
    if (cuda_set_cudnn_dv(-1) > 0 && !cuda_set_cudnn_conv_old(-1) && !acc && !dq_acc && dq && dk && dv &&
        packed_qkv(dq, dk, dv, nh, nkv, hd, ldq, ldkv) && cuda_bf16_only_marked(dq, np) == 1 && !cuda_cudnn_dv_decline)
        pv = get_plan(1, B, n, nh, nkv, hd, ldq, qld);
    size_t bq = align256(nq * sizeof(bf16)), bk = align256(nk * sizeof(bf16)), bacc = align256(nq * sizeof(float));
    size_t bsum = align256(sizeof(float) * B * nh * n);
    size_t wsb = align256((size_t)(pv && pv->ws > p->ws ? pv->ws : p->ws));
    /* Q, O, dO, dQ (bf16), K, V, dK, dV (bf16), dQ_accum (fp32), softmax_sum, workspace */
    size_t total = 4 * bq + 4 * bk + bacc + bsum + wsb;
    static BranchScratch s;
    if (cuda_capturing() && s.cap[cuda_branch()] < total) return 1;
    unsigned char *m = (unsigned char *)cuda_branch_scratch(&s, total, "the cuDNN attention backward scratch");
    if (!m) return 1;
    bf16 *Qh = (bf16 *)m, *Oh = (bf16 *)(m + bq), *dOh = (bf16 *)(m + 2 * bq), *dQh = (bf16 *)(m + 3 * bq);
    unsigned char *mk = m + 4 * bq;
    bf16 *Kh = (bf16 *)mk, *Vh = (bf16 *)(mk + bk), *dKh = (bf16 *)(mk + 2 * bk), *dVh = (bf16 *)(mk + 3 * bk);
    float *dQacc = (float *)(mk + 4 * bk), *ssum = (float *)(mk + 4 * bk + bacc);
    void *ws = wsb ? mk + 4 * bk + bacc + bsum : NULL;
    const float2 *cs;
    if (rope_table(&cs, pos, n, hd, theta)) return 1;
    /* O from out's kept rounding, else converted again (exactly the forward's O: out holds its values); dO
     * always (but where the o product wrote it as bf16 D) */
    const bf16 *ko = keep ? (const bf16 *)cuda_keep_rounding(out, nq) : NULL;
    /* out's fp32 never written (ops.h bf16_only once = 4: cuDNN's forward wrote O into its kept buffer): only
     * that kept rounding can serve; loud otherwise (another branch, keeps off), as for q | k | v below */
    int oabs = cuda_bf16_absent(out, nq);
    if (oabs && !ko) {
        cuda_bf16_missing(out, nq, "the cuDNN attention backward (its out)");
        return 0;
    }
    /* d out written by the o product as bf16 D only (ops.h once = 5): that is dO itself (dense, cuDNN's layout) */
    const bf16 *dd = (const bf16 *)cuda_datt_d16(dout, nq);
    /* q | k | v's fp32 never written (the product's bf16 D read by the forward, ops.h bf16_only once = 3): only
     * the kept Q | K | V can serve, and the verification has no fp32 to convert */
    size_t qext = (size_t)(B * n - 1) * ldq + (size_t)nh * hd;
    int qabs = cuda_bf16_absent(q, qext);
    if (qabs && !kq) {   /* loud: the error is recorded (cuda_ops_check fails the step); nothing is computed */
        cuda_bf16_missing(q, qext, "the cuDNN attention backward");
        return 0;
    }
    int verify = (kq || kk || kv || ko) && cuda_keep_verify_on();
    /* the strided keep (qld) holds the product's D: it exists only while q|k|v's fp32 is absent (a write-back
     * gives the keep back before any attention takes it), so there is nothing to convert and compare, as for
     * the dense keep made from D (qabs); the condition is stated for the case the contract rules out */
    int vqkv = verify && !qabs && !qld;
    {
        /* under FLOWHN_BF16_KEEP_VERIFY the kept ones are converted too (into the scratch) and compared */
        void *dst[5] = {dd ? NULL : dOh, (!kq || vqkv) ? Qh : NULL, (!ko || (verify && !oabs)) ? Oh : NULL,
                        (!kk || vqkv) ? Kh : NULL, (!kv || vqkv) ? Vh : NULL};
        const void *src[5] = {dout, q, out, k, v};
        int heads[5] = {nh, nh, nh, nkv, nkv}, rope[5] = {0, 1, 0, 1, 0};
        int ld[5] = {nh * hd, ldq, nh * hd, ldkv, ldkv};   /* dout and out are dense */
        convert(0, 3, dst, src, heads, rope, ld, cs, B, n, hd, 0);
        convert(0, 2, dst + 3, src + 3, heads + 3, rope + 3, ld + 3, cs, B, n, hd, 0);
    }
    if (verify) {
        if (kq && vqkv) cuda_keep_verify_pair(kq, Qh, nq);
        if (ko && !oabs) cuda_keep_verify_pair(ko, Oh, nq);
        if (kk && vqkv) cuda_keep_verify_pair(kk, Kh, nk);
        if (kv && vqkv) cuda_keep_verify_pair(kv, Vh, nk);
    }
    cuda_cudnn_kept_served += (kq != NULL) + (kk != NULL) + (kv != NULL) + (ko != NULL);
    if (qld) cuda_cudnn_vkeep_served++;
    if (kq) Qh = (bf16 *)kq;
    if (kk) Kh = (bf16 *)kk;
    if (kv) Vh = (bf16 *)kv;
    if (ko) Oh = (bf16 *)ko;
    if (dd) dOh = (bf16 *)dd;
    /* dq | dk | dv packed (one [rows, P] buffer, the q|k|v product's backward dout, model.c attn_bwd_packed),
     * overwritten, vectorised: their bf16 rounding goes into a shadow of the whole buffer, so the product reads
     * it instead of rounding dqkv again; if the model marked dqkv bf16-only (once: that product is its one
     * reader) and the shadow can be pinned, the fp32 values are not stored at all (linear.cu "bf16-only
     * outputs"). The shadow is claimed only after cuDNN ran (a claim is never left unwritten), except with pv:
     * then before, so cuDNN can write dV into it; a failure of cuDNN after that claim is loud (below). */
    void *dst[3] = {dq_acc ? NULL : dq, dk, dv};
    const void *src[3] = {dQh, dKh, dVh};
    int heads[3] = {nh, nkv, nkv}, rope[3] = {1, 1, 0}, ld[3] = {ldq, ldkv, ldkv};
    bf16 *sh = NULL;
    int skip = 0;
    /* shadows and kept buffers are cudaMalloc'd (256-byte aligned) and every offset is a multiple of 4 values
     * (P, hd multiples of 8), so the vector kernel's 8-byte bf16 stores are aligned; so are cuDNN's dV rows
     * (16-byte aligned: hd x 2 and P x 2 bytes are multiples of 16) */
    int shok = !acc && !dq_acc && dq && dk && dv && packed_qkv(dq, dk, dv, nh, nkv, hd, ldq, ldkv) &&
               conv_vec(3, dst, src, heads, ld, B, n, hd);
    int early = pv && shok, direct = 0;
    if (early) {
        cuda_cudnn_dv_planned++;
        sh = (bf16 *)cuda_shadow_claim_only(dq, np, &skip);
        if (!sh) skip = 0;
        direct = sh && skip;
        if (direct) {
            dVh = sh + (dv - dq);   /* the dv columns of the rounding, rows P values apart */
            dst[2] = NULL;          /* the conversion: dq, dk only */
            p = pv;
        }
    }
    unsigned long before = cuda_epoch;   /* with the early claim: cuDNN's writes are this producer's too */
    CudaRange wr[3] = {{dq, np * sizeof(float)}, {sh, np * sizeof(bf16)}, {m, total}};
    /* cuDNN before 9.6 expects the dQ accumulator zeroed (cudnn-frontend memsets it there) */
    if (dn.version() < 90600) CUDA_CALL(cudaMemsetAsync(dQacc, 0, nq * sizeof(float), cuda_stream()));
    float scale = 1.f / sqrtf((float)hd), neginf = mask_value(), one = 1.f;
    int64_t uids[] = {U_Q, U_KT, U_V, U_O, U_DO, U_STATS, U_SCALE, U_NEGINF, U_ONE, U_DQ, U_DK, U_DV, U_SSUM, U_DQACC};
    void *ptrs[] = {Qh, Kh, Vh, Oh, dOh, (void *)lse, &scale, &neginf, &one, dQh, dKh, dVh, ssum, dQacc};
    if (execute(p, uids, ptrs, 14, ws, "backward")) {
        path_off("the backward failed");
        if (!sh) return 1;   /* nothing claimed (a spent mark without a home: the fallback writes fp32) */
        /* the rounding was claimed (and, with skip, dqkv's mark spent): no fallback can write it now; the step
         * fails (the error is recorded) and the claim is settled */
        cuda_record_error("cudnn-attn", "the backward failed after dq | dk | dv's rounding was claimed for dV",
                          __FILE__, __LINE__);
        cuda_shadow_done(before, wr, 3);
        return 0;
    }
    if (dd) cuda_datt_d16_done(dout);   /* read: d out's fp32 stays absent (nothing else reads it) */
    if (direct) cuda_cudnn_dv_direct++;
    if (dq_acc) grad_back<float>(dq, dQacc, cs, B, n, nh, hd, 1, acc, ldq);
    if (!early && shok) {
        sh = (bf16 *)cuda_shadow_claim_only(dq, np, &skip);
        if (!sh) skip = 0;
        wr[1].p = sh;
        before = cuda_epoch;
    }
    convert_sh(1, 3, dst, src, heads, rope, ld, cs, B, n, hd, acc, sh, dq, !skip);
    if (sh) cuda_shadow_done(before, wr, early ? 3 : 2);
    return 0;
}
#endif
