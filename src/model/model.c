/* model.c - the one model definition: every architecture, forward and
 * backward side by side, written against the op interface (ops/ops.h).
 *
 * Building blocks, each with a forward and its backward below it:
 *   attention mixer, Mamba-1 mixer, Mamba-2 mixer, SwiGLU MLP (+ residual),
 *   decoder layer (norm -> mixer -> residual -> MLP), FlowHN parallel block,
 *   Hymba block, and the model (embedding, layers, head, loss).
 * Activations are allocated on first use for the current (B, T) and kept for
 * the backward pass. Gradient scratch is not zeroed: the first op writing a
 * buffer in the step overwrites it (FH_OVERWRITE, ops.h), those after it
 * accumulate (FH_ACC); each *_bwd below names its buffers' first writers. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/error.h"
#include "flops.h"

/* ------------------------------------------------------------------------ */
/* activation storage                                                        */

typedef struct { real *q, *k, *v, *qr, *kr, *att, *lse, *uk, *uk_rstd, *qkv;
                 real *dq, *dk, *dv, *dqr, *dkr, *datt, *duk, *dqkv;
                 int roped;    /* the forward ran attention_rope_fwd: qr, kr were not written */
                 int packed;   /* the forward ran one q/k/v product into qkv (attn_packed) */
                 int only;     /* the forward kept (keep_acts): qkv, att, datt, dqkv may be bf16-only */
                 int out16;    /* set by the caller: the output (o product) is read only by the MLP's
                                * add_rmsnorm_fwd right after (bf16_only once = 10) */ } AttnActs;
typedef struct { real *xm, *zm, *xconv, *xc, *dtr, *br, *cr, *dtn, *bn, *cn, *dt_rstd, *b_rstd, *c_rstd,
                 *dtraw, *hs, *y;
                 real *dxm, *dzm, *dxconv, *dxc, *ddtr, *dbr, *dcr, *ddtn, *dbn, *dcn, *ddtraw, *dy; } M1Acts;
/* zxd, dzxd: the packed in_proj output and its gradient [N, E + CX + nh] (m2_packed); then z,
 * xbc_pre (dz, dxbc_pre) are not allocated: the ops read their column windows in place */
typedef struct { real *z, *xbc_pre, *dtr, *xbc_conv, *xbc, *y, *states, *yn, *g_rstd, *zxd;
                 real *dz, *dxbc_pre, *ddtr, *dxbc_conv, *dxbc, *dy, *dyn, *dzxd;
                 int only;   /* the forward kept (keep_acts): backward_trunk's keep_end follows the backward, so
                              * dzxd may be declared a pack (pack_bf16) */ } M2Acts;
typedef struct { const real *h; real *v, *v_rstd, *g, *up, *act, *gu;
                 real *dv, *dg, *dup, *dact, *dgu;
                 int packed;   /* the forward ran one gate|up product into gu (mlp_packed) */
                 int only;     /* the forward ran with keeps (a backward follows, then keep_end): the
                                * backward's dgu (dg, dup) may be bf16-only (bf16_only below) */ } MlpActs;
typedef struct {
    const real *x_in, *x_full;   /* inputs (not owned); x_full: all T tokens, prefix attention only */
    const int *pos; int B, n, T;
    real *u, *u_rstd, *mix, *h;
    real *du, *dmix;
    AttnActs at; M1Acts m1; M2Acts m2; MlpActs mlp;
} DecActs;
typedef struct {
    DecActs dec;                                     /* decoder layers */
    DecActs ab, sb;                                  /* FlowHN branches */
    real *xa, *xs, *ya, *ys, *y, *zz, *zn, *zn_rstd; /* FlowHN fusion */
    real *dya, *dys, *dy, *dzn;
    real *u, *u_rstd, *a, *s, *an, *an_rstd, *sn, *sn_rstd, *c, *h; /* Hymba */
    real *du, *da, *ds, *dan, *dc;
    AttnActs at; M1Acts m1; MlpActs mlp;
} LayerActs;

struct ModelActs {
    void **allocs; int n_allocs, cap_allocs;
    real **x;                    /* [L+1] layer inputs/outputs [B, T, H] */
    LayerActs *layers;
    real *xf, *xf_rstd, *logits, *losses, *lse, *dlosses;
    real *dxf, *dlogits, *dcur;
};

/* Returns a zeroed backend buffer of n reals in *p, allocating it on first
 * use for the current shape. All of them are freed when the shape changes. */
static int ens(Model *m, real **p, size_t n) {
    if (*p) return 0;
    ModelActs *A = m->acts;
    if (A->n_allocs == A->cap_allocs) {
        int cap = A->cap_allocs ? 2 * A->cap_allocs : 256;
        void **a = realloc(A->allocs, sizeof(void *) * cap);
        if (!a) return fh_error("out of memory for activations");
        A->allocs = a;
        A->cap_allocs = cap;
    }
    *p = m->ops->alloc(sizeof(real) * (n ? n : 1));
    if (!*p) return fh_error("out of memory for activations (%zu reals): reduce batch size or sequence length", n);
    A->allocs[A->n_allocs++] = *p;
    if (m->poison_acts) {   /* test hook (model.h): NaN, so that reading what nothing wrote shows */
        real *nan = malloc(sizeof(real) * (n ? n : 1));
        if (!nan) return fh_error("out of memory");
        for (size_t i = 0; i < (n ? n : 1); i++) nan[i] = (real)NAN;
        m->ops->from_host(*p, nan, sizeof(real) * (n ? n : 1));
        free(nan);
    }
    return 0;
}
#define ENS(ptr, n) do { if (ens(m, &(ptr), (size_t)(n))) return -1; } while (0)
#define ZERO(ptr, n) m->ops->zero((ptr), sizeof(real) * (size_t)(n))
/* The acc argument of a gradient buffer's first writer: FH_OVERWRITE. The
 * reference mode (model.h zero_first, for tests) instead zeroes every buffer
 * up front (REF_ZERO) and lets the first writer accumulate, as the backward
 * did before the ops could overwrite: the two must give the same bits. */
#define FIRST (m->zero_first ? FH_ACC : FH_OVERWRITE)
#define REF_ZERO(ptr, n) do { if (m->zero_first) ZERO(ptr, n); } while (0)
#define W(off) (m->params + (off))

/* Ops.keep_bf16: x, written by the next op, is a product input (or an
 * attention's q, k, v) saved for the backward; nothing writes it again until
 * keep_end. Each buffer passed here
 * belongs to one layer's activations for the whole step (ENS: its own
 * allocation), is written once in the forward by that next op and only read
 * after (by the forward's products and the backward). keep_end runs before
 * anything may write such a buffer again: at the start of trunk_compute (the
 * next forward) and of a prefill (which runs the layers on shared buffers),
 * and at the end of the backward. Releasing a buffer also ends its keep (the
 * backend sees the release). */
static void keep_bf16(Model *m, const real *x, size_t n) {
    if (m->keep_acts && m->ops->keep_bf16) m->ops->keep_bf16(x, n);
}
static void keep_end(Model *m) {
    if (m->ops->keep_bf16) m->ops->keep_bf16(NULL, 0);
}
/* Ops.bf16_only: x, written by the next op, is read by bf16 products only
 * (linear_fwd's in, linear_bwd's in / dout over exactly x[0, n)), so a backend
 * with bf16 products may skip its fp32 values (ops.h). Marked here, each call
 * with the reason no other op reads x:
 *   once = 0, x just kept (keep_bf16 above it): the decoder's first-norm
 *     output u (read by the mixer's input products: q|k|v or q, k, v; Mamba's
 *     in_proj; rmsnorm_bwd reads x_in and the FlowHN gathers read x, never u),
 *     the prefix attention's uk (k, v), the MLP norm's v (gate|up; rmsnorm_bwd
 *     reads h) and act (down; swiglu's backward reads gu or g, up). Hymba's u
 *     is not marked: its two heads read it on two branches, and a kept
 *     rounding serves only the branch that wrote it.
 *   once = 1: swiglu's backward dgu (or dg, dup), the dout of the one gate|up
 *     (gate, up) backward product right after it; only when the forward kept
 *     (MlpActs.only: backward_trunk's keep_end then follows); the packed
 *     attention's dqkv, the dout of the one q|k|v backward product right
 *     after the attention backward that writes it (AttnActs.only, likewise).
 *   once = 2: the packed MLP's gu (kept just before), read only by
 *     swiglu_packed_fwd and swiglu_packed_bwd (MlpActs.only): the gate|up
 *     product may write it in bf16 only (one more rounding; CUDA
 *     FLOWHN_BF16_GU=0 keeps fp32).
 *   once = 3: the packed attention's qkv (kept just before), read only by
 *     the fused RoPE attention's forward and backward (AttnActs.only): the
 *     q|k|v product may write it in bf16 only (one more rounding; CUDA
 *     FLOWHN_BF16_QKV=0 keeps fp32).
 *   once = 4: the fused RoPE attention's out (att, kept just before), read
 *     only by the o product (forward, dW) and by that attention's backward
 *     (AttnActs.only; not Hymba's: forward and backward on two branches);
 *     CUDA: cuDNN writes O into the kept buffer, FLOWHN_BF16_ATT_O=0 keeps
 *     fp32.
 *   once = 5: the fused RoPE attention's d out (datt, the o product's
 *     dgrad), read only by the attention backward right after, once (a
 *     declining backward gets the fp32 written back); CUDA: the product
 *     writes bf16 D, cuDNN reads it as dO, FLOWHN_BF16_ATT_DO=0 keeps fp32.
 *   once = 6: Mamba-2's packed in_proj gradient dzxd, declared a pack just
 *     before (pack_bf16), read only by the in_proj backward product through
 *     the pack (M2Acts.only); its three window writers may store only their
 *     rounding (the same bits; CUDA FLOWHN_DZXD_FP32=1 keeps fp32).
 *   once = 7, 8: the packed MLP's d act (the down product's dgrad, read only
 *     by swiglu_packed_bwd) and the MLP norm's d out dv (the gate|up
 *     product's dgrad, read only by the norm's rmsnorm_bwd): mlp_bwd.
 *   once = 9: the attention norm's d out du, the packed q|k|v product's
 *     dgrad (attn_bwd_packed's last op, overwriting du), read only by the
 *     first norm's rmsnorm_bwd that decoder_bwd runs right after, once, on
 *     the same branch. Only where that holds: a decoder's attention mixer
 *     without prefix keys (else the non-packed products accumulate into
 *     du) and without the fused split's gather (rmsnorm_gather_bwd reads du
 *     there), packed, kept (AttnActs.only); not Hymba (its Mamba head
 *     accumulates into du). CUDA FLOWHN_BF16_DNORM_ATT=0 keeps fp32.
 *   once = 10: a residual branch's output, read only by the add_rmsnorm_fwd
 *     that makes the residual: the attention's o product output (mix) in a
 *     decoder layer with an MLP (mlp_fwd's add, AttnActs.out16), and the
 *     MLP's down product output when the layer's output add is left to the
 *     next decoder / Hymba layer's first norm or to the final norm
 *     (Residual.norm). The product may write it in bf16 only (one more
 *     rounding; CUDA FLOWHN_BF16_RESID=0 keeps fp32). Nothing else reads
 *     them: the products' backwards read their inputs, mlp_bwd reads h and
 *     the first norm's backward x_in (the adds' r, written in fp32).
 * Only while keeping (a backward follows, which ends with keep_end): the
 * evaluation forward and the prefill write fp32 as always. The CPU backend
 * has no bf16_only (it is the oracle: fp32 everywhere). */
static void bf16_only(Model *m, const real *x, size_t n, int once) {
    if (m->ops->bf16_only) m->ops->bf16_only(x, n, once);
}
/* Ops.pack_bf16: x [n / ld, ld] is filled next by column-window writers that tile its columns, then read by
 * one product as its dout (nothing else writes it in between). Used for Mamba-2's packed in_proj gradient
 * dzxd (mamba2_bwd: gated_rmsnorm_bwd's dz, conv1d_silu_bwd's dx|B|C, copy_rows' ddt, then the in_proj
 * backward product), only in a backward whose forward kept (M2Acts.only: backward_trunk's keep_end follows
 * and ends the hint; the next pack on the branch ends it too). */
static void pack_bf16(Model *m, const real *x, size_t n, int ld) {
    if (m->ops->pack_bf16) m->ops->pack_bf16(x, n, ld);
}
#define G(off) (m->grads + (off))

/* ---- gradient zeroing (model.h zero_grad_full) ----
 * The product weights are most of the parameters (~90% at flowhn-fac-1b), and
 * every one of their gradients is written by linear_bwd calls over whole rows:
 * the first call of an accumulation overwrites (FH_DW_OVERWRITE), so only the
 * other tensors need the memset. A weight may be written in parts (Mamba's
 * x_proj, unpacked in_proj: row blocks in ascending order) or together with
 * its neighbours (packed q|k|v, gate|up): lazy_done[i] counts the reals of
 * tensor i written from its start, and a call overwrites only when it
 * continues exactly there in every tensor it touches. Any other call into a
 * lazy tensor first zeroes what is not written yet and accumulates, as does
 * every call once the accumulation's first backward is done. */
static int lazy_first(const Model *m, size_t lo) {   /* first lazy tensor ending after lo */
    int a = 0, b = m->n_lazy;
    while (a < b) {
        int c = (a + b) / 2;
        if (m->lazy_off[c] + m->lazy_n[c] <= lo) a = c + 1;
        else b = c;
    }
    return a;
}
static int dw_flag(Model *m, const real *dw, size_t n) {
    if (!m->grad_fresh || !n) return 0;
    size_t lo = (size_t)(dw - m->grads), hi = lo + n, pos = lo;
    int i0 = lazy_first(m, lo), ok = 1, j;
    for (j = i0; j < m->n_lazy && m->lazy_off[j] < hi; j++) {
        size_t a = lo > m->lazy_off[j] ? lo : m->lazy_off[j];
        size_t e = m->lazy_off[j] + m->lazy_n[j], b = hi < e ? hi : e;
        if (a != pos || a != m->lazy_off[j] + m->lazy_done[j]) ok = 0;
        pos = b;
    }
    if (j == i0) return 0;   /* no lazy tensor: zeroed by model_zero_grad, accumulate */
    if (pos != hi) ok = 0;   /* a tail outside the lazy tensors */
    for (j = i0; j < m->n_lazy && m->lazy_off[j] < hi; j++) {
        size_t e = m->lazy_off[j] + m->lazy_n[j], b = (hi < e ? hi : e) - m->lazy_off[j];
        if (ok) m->lazy_done[j] = b;
        else if (m->lazy_done[j] < b) {   /* not written yet: zero the rest, then it accumulates */
            ZERO(G(m->lazy_off[j] + m->lazy_done[j]), m->lazy_n[j] - m->lazy_done[j]);
            m->lazy_done[j] = m->lazy_n[j];
        }
    }
    return ok ? FH_DW_OVERWRITE : 0;
}
/* The lazy tensors in [off, total) are final: zero what no product wrote (a FlowHN branch with no tokens). */
static void lazy_finish(Model *m, size_t off) {
    if (!m->grad_fresh) return;
    for (int j = lazy_first(m, off); j < m->n_lazy; j++)
        if (m->lazy_done[j] < m->lazy_n[j]) {
            ZERO(G(m->lazy_off[j] + m->lazy_done[j]), m->lazy_n[j] - m->lazy_done[j]);
            m->lazy_done[j] = m->lazy_n[j];
        }
    if (off == 0) m->grad_fresh = 0;   /* the accumulation's later backwards add */
}
/* linear_bwd with dw's first write of an accumulation overwriting (an N = 0 call writes nothing) */
static void lin_bwd(Model *m, real *din, real *dw, real *db, const real *dout, const real *in, const real *w,
                    int N, int IC, int OC, int acc) {
    if (N > 0 && dw) acc |= dw_flag(m, dw, (size_t)OC * IC);
    m->ops->linear_bwd(din, dw, db, dout, in, w, N, IC, OC, acc);
}
/* A scatter into a lazy tensor (the tied head's embedding_bwd) cannot overwrite: whatever of
 * [off, + n)'s lazy tensors no product has written yet is zeroed first, then it accumulates. */
static void lazy_fill(Model *m, size_t off, size_t n) {
    if (!m->grad_fresh) return;
    for (int j = lazy_first(m, off); j < m->n_lazy && m->lazy_off[j] < off + n; j++)
        if (m->lazy_done[j] < m->lazy_n[j]) {
            ZERO(G(m->lazy_off[j] + m->lazy_done[j]), m->lazy_n[j] - m->lazy_done[j]);
            m->lazy_done[j] = m->lazy_n[j];
        }
}
/* Which tensors are lazy: the product weights (PK_MATRIX but the conv1d
 * kernels, written by the conv ops) and the head (unless FLOWHN_LAZY_HEAD=0),
 * whose first writer is the classifier (or the unfused head product) over
 * whole rows, before the backward; tied, it is the embedding, whose scatter
 * comes last and accumulates (lazy_fill). An untied embedding is not lazy:
 * its only writer is the scatter. */
static int lazy_build(Model *m) {
    const ParamLayout *L = &m->layout;
    m->lazy_off = malloc(sizeof(size_t) * (L->n + 1));
    m->lazy_n = malloc(sizeof(size_t) * (L->n + 1));
    m->lazy_done = calloc(L->n + 1, sizeof(size_t));
    m->zrun = malloc(sizeof(size_t) * 2 * (L->n + 1));
    if (!m->lazy_off || !m->lazy_n || !m->lazy_done || !m->zrun) return fh_error("out of memory");
    size_t pos = 0;
    for (int i = 0; i < L->n; i++) {
        const ParamEntry *p = &L->entries[i];
        int head = p->offset == L->lm_head && m->lazy_head;
        if (!p->numel || (!head && (p->kind != PK_MATRIX || strstr(p->name, "conv1d") || p->offset == L->lm_head ||
                                    p->offset == L->embed)))
            continue;
        if (p->offset > pos) {
            m->zrun[2 * m->n_zruns] = pos;
            m->zrun[2 * m->n_zruns + 1] = p->offset - pos;
            m->n_zruns++;
        }
        m->lazy_off[m->n_lazy] = p->offset;
        m->lazy_n[m->n_lazy++] = p->numel;
        pos = p->offset + p->numel;
    }
    if (L->total > pos) {
        m->zrun[2 * m->n_zruns] = pos;
        m->zrun[2 * m->n_zruns + 1] = L->total - pos;
        m->n_zruns++;
    }
    return 0;
}

static void acts_release(Model *m) {
    ModelActs *A = m->acts;
    if (!A) return;
    for (int i = 0; i < A->n_allocs; i++) m->ops->release(A->allocs[i]);
    free(A->allocs);
    free(A->x);
    free(A->layers);
    free(A);
    m->acts = NULL;
}

static int acts_reset(Model *m) {
    acts_release(m);
    m->acts = calloc(1, sizeof(ModelActs));
    if (!m->acts) return fh_error("out of memory for activations");
    m->acts->x = calloc(m->cfg.num_layers + 1, sizeof(real *));
    m->acts->layers = calloc(m->cfg.num_layers, sizeof(LayerActs));
    if (!m->acts->x || !m->acts->layers) return fh_error("out of memory for activations");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* attention mixer: queries from uq at qpos, keys/values from ukv at kpos     */

/* RoPE inside the attention op (ops.h attention_rope_*) when the backend has
 * it, the model uses RoPE, and neither FLOWHN_ATTN_ROPE=0 (Model.
 * unfused_attn_rope) nor the prefill (which hands the rotated keys kr to the
 * KV cache, so they must be stored) asks for the separate rope passes */
static int attn_rope_fused(const Model *m) {
    return m->cfg.use_rope && m->ops->attention_rope_fwd && m->ops->attention_rope_bwd && !m->unfused_attn_rope &&
           !m->prefilling;
}

/* q, k, v as ONE product (perf-notes, fuse-proj; Model.unfused_proj: FLOWHN_FUSE_PROJ=0 keeps three): for
 * self-attention (queries and keys from the same input at the same positions) the weights Wq, Wk, Wv are
 * adjacent in the parameter and gradient buffers (layout.c), so W(w->q) with qd + 2 kvd rows is the stacked
 * [Wq; Wk; Wv] and G(w->q) its gradient. The product writes qkv [rows, qd + 2 kvd]; the attention reads q, k,
 * v as its column windows (ops.h row strides), writes dq, dk, dv into dqkv alike, and one backward product
 * (K = qd + 2 kvd) gives du and the three weight gradients. Not in the prefill (its KV cache takes k, v as
 * dense tensors). */
static int attn_packed(const Model *m, const AttnW *w, int nq, const int *qpos, const real *uq, int nk,
                       const int *kpos, const real *ukv) {
    const Config *c = &m->cfg;
    size_t qd = (size_t)c->num_heads * c->head_dim, kvd = (size_t)c->num_kv_heads * c->head_dim;
    return !m->unfused_proj && !m->prefilling && uq == ukv && nq == nk && qpos == kpos && m->ops->copy_rows &&
           w->k == w->q + qd * c->hidden_size && w->v == w->k + kvd * c->hidden_size;
}

/* The packed path's fallback when a fused RoPE attention op declines: dense copies a->q, a->k, a->v of the
 * packed q | k | v in a->qkv, and their rotations a->qr, a->kr (the separate rope passes, as attn_fwd's) */
static int dense_roped_qkv(Model *m, AttnActs *a, int B, int n, const int *pos) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd, P = qd + 2 * kvd, rows = B * n;
    size_t nqd = (size_t)rows * qd, nkd = (size_t)rows * kvd;
    real theta = (real)c->rope_theta;
    const real *q = a->qkv, *k = q + qd, *v = k + kvd;
    ENS(a->q, nqd); ENS(a->k, nkd); ENS(a->v, nkd); ENS(a->qr, nqd); ENS(a->kr, nkd);
    o->copy_rows(a->q, qd, q, P, rows, qd);
    o->copy_rows(a->k, kvd, k, P, rows, kvd);
    o->copy_rows(a->v, kvd, v, P, rows, kvd);
    o->rope_fwd(a->qr, a->q, pos, B, n, nh, hd, theta);
    o->rope_fwd(a->kr, a->k, pos, B, n, nkv, hd, theta);
    return 0;
}

/* attn_fwd's packed path: see attn_packed */
static int attn_fwd_packed(Model *m, const AttnW *w, AttnActs *a, int B, int n, const int *pos, const real *u,
                           real *out) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd, P = qd + 2 * kvd, rows = B * n;
    real theta = (real)c->rope_theta;
    ENS(a->qkv, (size_t)rows * P); ENS(a->att, (size_t)rows * qd); ENS(a->lse, (size_t)B * nh * n);
    a->only = m->keep_acts;   /* backward_trunk's keep_end follows: a once-mark there ends with it */
    /* the attention may keep its bf16 Q, K, V for the backward under the keep contract (as attn_fwd's self):
     * qkv has one writer (the product) and is only read after */
    if (attn_rope_fused(m) || !c->use_rope) keep_bf16(m, a->qkv, (size_t)rows * P);
    /* qkv's fp32 is read only by the fused RoPE attention below (its q, k, v windows) and by its backward
     * (attn_bwd_packed: the same op's backward, or, if it declines, the dense fallback, which a backend that
     * elided must refuse loudly): a backend may have the product write only bf16 (bf16_only, once = 3), on
     * the branch that runs both. Not Hymba's: its attention runs forward on branch 1 and backward on branch 0
     * (hymba_bwd), where a backend's copy kept on branch 1 does not serve (test_bf16_only_marks caught it). */
    if (a->only && attn_rope_fused(m) && c->arch != ARCH_HYMBA) bf16_only(m, a->qkv, (size_t)rows * P, 3);
    o->linear_fwd(a->qkv, u, W(w->q), NULL, rows, H, P);   /* [Wq; Wk; Wv]: q | k | v in each row */
    const real *q = a->qkv, *k = q + qd, *v = k + kvd;
    a->roped = 0;
    if (attn_rope_fused(m)) keep_bf16(m, a->att, (size_t)rows * qd);
    /* att is read by the o product (below, and its dW) and the fused attention's backward only (the dense
     * fallback there reads it only if the fused backward declines, which a backend that elided must refuse
     * loudly): bf16_only once = 4, on the branch that runs both (not Hymba's, as qkv above) */
    if (a->only && attn_rope_fused(m) && c->arch != ARCH_HYMBA) bf16_only(m, a->att, (size_t)rows * qd, 4);
    if (attn_rope_fused(m) && o->attention_rope_fwd(a->att, a->lse, q, k, v, pos, pos, B, n, n, nh, nkv, hd, theta,
                                                    P, P) == 0) {
        a->roped = 1;
    } else if (c->use_rope) {
        /* the fused op declined (CUDA: fp32, or a head size it does not take): dense copies of q, k, v, then
         * the separate rope passes as attn_fwd's (a rare path: the copies cost what the packing saved) */
        if (dense_roped_qkv(m, a, B, n, pos)) return -1;
        keep_bf16(m, a->att, (size_t)rows * qd);
        o->attention_fwd(a->att, a->lse, a->qr, a->kr, a->v, pos, pos, B, n, n, nh, nkv, hd, qd, kvd);
    } else {
        keep_bf16(m, a->att, (size_t)rows * qd);   /* the o product's input, again in its backward */
        o->attention_fwd(a->att, a->lse, q, k, v, pos, pos, B, n, n, nh, nkv, hd, P, P);
    }
    if (a->out16) bf16_only(m, out, (size_t)rows * H, 10);   /* read only by the caller's add (AttnActs.out16) */
    o->linear_fwd(out, a->att, W(w->o), NULL, rows, qd, H);
    return 0;
}

/* attn_bwd's packed path (du overwritten when acc is FH_OVERWRITE). norm_only: the caller's next op is the norm's
 * rmsnorm_bwd reading du as its dout, on this branch, and nothing else reads or writes du (attn_bwd) */
static int attn_bwd_packed(Model *m, const AttnW *w, AttnActs *a, int B, int n, const int *pos, const real *u,
                           const real *dout, real *du, int acc, int norm_only) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd, P = qd + 2 * kvd, rows = B * n;
    size_t nqd = (size_t)rows * qd, nkd = (size_t)rows * kvd;
    real theta = (real)c->rope_theta;
    ENS(a->datt, nqd); ENS(a->dqkv, (size_t)rows * P);
    REF_ZERO(a->datt, nqd); REF_ZERO(a->dqkv, (size_t)rows * P);
    /* datt is read only by the fused attention backward right below (its dout), once (bf16_only once = 5; if
     * that op declines, the backend writes the fp32 back for the dense path) */
    if (a->only && a->roped) bf16_only(m, a->datt, nqd, 5);
    lin_bwd(m, a->datt, G(w->o), NULL, dout, a->att, W(w->o), rows, qd, H, FIRST);
    const real *q = a->qkv, *k = q + qd, *v = k + kvd;
    real *dq = a->dqkv, *dk = dq + qd, *dv = dk + kvd;
    /* dqkv is read by one op only, the q|k|v backward product below (its dout), once: the fused attention
     * backward that writes it whole (FIRST) may store only its bf16 rounding (bf16_only, once). Marked only
     * where that op writes dqkv itself; if it declines, the mark finds no producer (the dense path below
     * writes dqkv with copy_rows, which never claims) and keep_end drops it. */
    if (a->only && (a->roped || !c->use_rope)) bf16_only(m, a->dqkv, (size_t)rows * P, 1);
    if (a->roped && o->attention_rope_bwd(dq, dk, dv, a->datt, a->att, a->lse, q, k, v, pos, pos, B, n, n, nh, nkv,
                                          hd, theta, FIRST, P, P) == 0) {
        /* dq, dk, dv written into dqkv by the fused op */
    } else if (c->use_rope) {   /* dense, as attn_fwd_packed's declined path; then copied into dqkv */
        /* the fused backward declined: the dense copies are needed after all */
        if (a->roped && dense_roped_qkv(m, a, B, n, pos)) return -1;
        ENS(a->dq, nqd); ENS(a->dk, nkd); ENS(a->dv, nkd); ENS(a->dqr, nqd); ENS(a->dkr, nkd);
        REF_ZERO(a->dq, nqd); REF_ZERO(a->dk, nkd); REF_ZERO(a->dv, nkd); REF_ZERO(a->dqr, nqd);
        REF_ZERO(a->dkr, nkd);
        o->attention_bwd(a->dqr, a->dkr, a->dv, a->datt, a->att, a->lse, a->qr, a->kr, a->v, pos, pos, B, n, n, nh,
                         nkv, hd, FIRST, qd, kvd);
        o->rope_bwd(a->dq, a->dqr, pos, B, n, nh, hd, theta, FIRST);
        o->rope_bwd(a->dk, a->dkr, pos, B, n, nkv, hd, theta, FIRST);
        o->copy_rows(dq, P, a->dq, qd, rows, qd);
        o->copy_rows(dk, P, a->dk, kvd, rows, kvd);
        o->copy_rows(dv, P, a->dv, kvd, rows, kvd);
    } else {
        o->attention_bwd(dq, dk, dv, a->datt, a->att, a->lse, q, k, v, pos, pos, B, n, n, nh, nkv, hd, FIRST, P, P);
    }
    /* du is written whole by the product below (overwritten: acc FH_OVERWRITE) and, by norm_only, read only by
     * the caller's rmsnorm_bwd right after, once, on this branch: the product may write only its bf16 rounding
     * (bf16_only once = 9; ops.h). Marked here, after every fallback above (they write dqkv, never du), so
     * nothing runs between the mark's producer and its reader. a->only: backward_trunk's keep_end follows. */
    if (a->only && norm_only && acc == FH_OVERWRITE) bf16_only(m, du, (size_t)rows * H, 9);
    /* one product: du and the gradients of Wq, Wk, Wv (adjacent: G(w->q) with P rows) */
    lin_bwd(m, du, G(w->q), NULL, a->dqkv, u, W(w->q), rows, H, P, acc);
    return 0;
}

static int attn_fwd(Model *m, const AttnW *w, AttnActs *a, int B, int nq, const int *qpos, const real *uq,
                    int nk, const int *kpos, const real *ukv, real *out) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd;
    a->packed = attn_packed(m, w, nq, qpos, uq, nk, kpos, ukv);
    if (a->packed) return attn_fwd_packed(m, w, a, B, nq, qpos, uq, out);
    ENS(a->q, (size_t)B * nq * qd); ENS(a->k, (size_t)B * nk * kvd); ENS(a->v, (size_t)B * nk * kvd);
    ENS(a->att, (size_t)B * nq * qd); ENS(a->lse, (size_t)B * nh * nq);
    /* causal self-attention reading q, k, v as written here (RoPE inside the op, or none): a backend's fused
     * attention may keep its bf16 Q, K, V for the backward (CUDA: cuDNN's, attention_cudnn.cu) under the
     * keep contract. q, k, v have one writer each (the products below) and are only read after. */
    int self = uq == ukv && nq == nk && qpos == kpos && (attn_rope_fused(m) || !c->use_rope);
    if (self) keep_bf16(m, a->q, (size_t)B * nq * qd);
    o->linear_fwd(a->q, uq, W(w->q), NULL, B * nq, H, qd);
    if (self) keep_bf16(m, a->k, (size_t)B * nk * kvd);
    o->linear_fwd(a->k, ukv, W(w->k), NULL, B * nk, H, kvd);
    if (self) keep_bf16(m, a->v, (size_t)B * nk * kvd);
    o->linear_fwd(a->v, ukv, W(w->v), NULL, B * nk, H, kvd);
    const real *q = a->q, *k = a->k;
    a->roped = 0;
    /* att is the o product's input, again in its backward: kept right before the op that writes it (the
     * fused one; again before attention_fwd should it decline) */
    if (attn_rope_fused(m)) keep_bf16(m, a->att, (size_t)B * nq * qd);
    /* as attn_fwd_packed's (once = 4; only where a backend's fused self-attention may serve it, as the keeps
     * above; a->only: backward_trunk's keep_end follows) */
    a->only = m->keep_acts && self;
    if (a->only && attn_rope_fused(m) && c->arch != ARCH_HYMBA) bf16_only(m, a->att, (size_t)B * nq * qd, 4);
    if (attn_rope_fused(m) &&
        o->attention_rope_fwd(a->att, a->lse, a->q, a->k, a->v, qpos, kpos, B, nq, nk, nh, nkv, hd,
                              (real)c->rope_theta, qd, kvd) == 0) {
        a->roped = 1;   /* RoPE inside the attention op: no qr, kr */
        if (a->out16) bf16_only(m, out, (size_t)B * nq * H, 10);   /* as attn_fwd_packed's */
        o->linear_fwd(out, a->att, W(w->o), NULL, B * nq, qd, H);
        return 0;
    }
    if (c->use_rope) {
        ENS(a->qr, (size_t)B * nq * qd); ENS(a->kr, (size_t)B * nk * kvd);
        o->rope_fwd(a->qr, a->q, qpos, B, nq, nh, hd, (real)c->rope_theta);
        o->rope_fwd(a->kr, a->k, kpos, B, nk, nkv, hd, (real)c->rope_theta);
        q = a->qr; k = a->kr;
    }
    keep_bf16(m, a->att, (size_t)B * nq * qd);   /* the o product's input, again in its backward */
    o->attention_fwd(a->att, a->lse, q, k, a->v, qpos, kpos, B, nq, nk, nh, nkv, hd, qd, kvd);
    if (a->out16) bf16_only(m, out, (size_t)B * nq * H, 10);   /* as attn_fwd_packed's */
    o->linear_fwd(out, a->att, W(w->o), NULL, B * nq, qd, H);
    return 0;
}

/* duq, dukv: overwritten when acc is FH_OVERWRITE, else accumulated (they may
 * be the same buffer when uq == ukv: the query product writes it first).
 * norm_only: duq == dukv and the caller's next op is the first norm's
 * rmsnorm_bwd reading it as its dout (once, on this branch; nothing else
 * reads or writes it): the packed path may mark it (bf16_only once = 9) */
static int attn_bwd(Model *m, const AttnW *w, AttnActs *a, int B, int nq, const int *qpos, const real *uq,
                    int nk, const int *kpos, const real *ukv, const real *dout, real *duq, real *dukv, int acc,
                    int norm_only) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd;
    if (a->packed)   /* duq == dukv there */
        return attn_bwd_packed(m, w, a, B, nq, qpos, uq, dout, duq, acc, norm_only && duq == dukv);
    size_t nqd = (size_t)B * nq * qd, nkd = (size_t)B * nk * kvd;
    ENS(a->datt, nqd); ENS(a->dq, nqd); ENS(a->dk, nkd); ENS(a->dv, nkd);
    REF_ZERO(a->datt, nqd); REF_ZERO(a->dq, nqd); REF_ZERO(a->dk, nkd); REF_ZERO(a->dv, nkd);
    /* every buffer here has one writer; datt is read only by the attention backward (once = 5, as packed; only
     * for the self-attention the forward marked: where a backend's fused path may read the bf16 D) */
    if (a->only && a->roped) bf16_only(m, a->datt, nqd, 5);
    lin_bwd(m, a->datt, G(w->o), NULL, dout, a->att, W(w->o), B * nq, qd, H, FIRST);
    if (a->roped &&
        o->attention_rope_bwd(a->dq, a->dk, a->dv, a->datt, a->att, a->lse, a->q, a->k, a->v, qpos, kpos, B, nq,
                              nk, nh, nkv, hd, (real)c->rope_theta, FIRST, qd, kvd) == 0) {
        /* dq, dk written by the fused op */
    } else if (c->use_rope) {
        if (a->roped) {   /* the fused backward declined: the forward's rotated q, k are needed after all */
            ENS(a->qr, nqd); ENS(a->kr, nkd);
            o->rope_fwd(a->qr, a->q, qpos, B, nq, nh, hd, (real)c->rope_theta);
            o->rope_fwd(a->kr, a->k, kpos, B, nk, nkv, hd, (real)c->rope_theta);
        }
        ENS(a->dqr, nqd); ENS(a->dkr, nkd);
        REF_ZERO(a->dqr, nqd); REF_ZERO(a->dkr, nkd);
        o->attention_bwd(a->dqr, a->dkr, a->dv, a->datt, a->att, a->lse, a->qr, a->kr, a->v, qpos, kpos,
                         B, nq, nk, nh, nkv, hd, FIRST, qd, kvd);
        o->rope_bwd(a->dq, a->dqr, qpos, B, nq, nh, hd, (real)c->rope_theta, FIRST);
        o->rope_bwd(a->dk, a->dkr, kpos, B, nk, nkv, hd, (real)c->rope_theta, FIRST);
    } else {
        o->attention_bwd(a->dq, a->dk, a->dv, a->datt, a->att, a->lse, a->q, a->k, a->v, qpos, kpos,
                         B, nq, nk, nh, nkv, hd, FIRST, qd, kvd);
    }
    lin_bwd(m, duq, G(w->q), NULL, a->dq, uq, W(w->q), B * nq, H, qd, acc);
    lin_bwd(m, dukv, G(w->k), NULL, a->dk, ukv, W(w->k), B * nk, H, kvd, dukv == duq ? FH_ACC : acc);
    lin_bwd(m, dukv, G(w->v), NULL, a->dv, ukv, W(w->v), B * nk, H, kvd, FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mamba-1 mixer (Jamba flavour: RMSNorm on dt, B, C)                         */

/* The selective scan saves its state only every M1_SCAN_CHUNK steps (the
 * backward recomputes the rest): hs holds [B, nchunks+1, E, S]. */
#define M1_SCAN_CHUNK 32

/* the short conv and its SiLU as one op (ops.h conv1d_silu_*) when the
 * backend has it and the model does not ask for the composition
 * (Model.unfused_conv_silu: FLOWHN_CONV_SILU=0, or tests) */
static int conv_silu_fused(const Model *m) {
    return m->ops->conv1d_silu_fwd && m->ops->conv1d_silu_bwd && !m->unfused_conv_silu;
}
/* FlowHN's split gathers in the branches' first norms (ops.h rmsnorm_gather_*)
 * when the backend has them and the model does not ask for the separate ops
 * (Model.unfused_split: FLOWHN_SPLIT_FUSE=0, or tests) */
static int split_fused(const Model *m) {
    return m->ops->rmsnorm_gather_fwd && m->ops->rmsnorm_gather_bwd && !m->unfused_split;
}
static size_t m1_hs_len(int B, int n, int E, int S) {
    return (size_t)B * ((n + M1_SCAN_CHUNK - 1) / M1_SCAN_CHUNK + 1) * E * S;
}

static int mamba1_fwd(Model *m, const Mamba1W *w, M1Acts *a, int B, int n, const real *u, real *out) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, E = cfg_E(c), S = c->d_state, R = c->dt_rank, K = c->d_conv;
    size_t N = (size_t)B * n;
    int fuse = conv_silu_fused(m);
    ENS(a->xm, N * E); ENS(a->zm, N * E); ENS(a->xc, N * E);
    if (!fuse) ENS(a->xconv, N * E);
    ENS(a->dtr, N * R); ENS(a->br, N * S); ENS(a->cr, N * S);
    ENS(a->dtn, N * R); ENS(a->bn, N * S); ENS(a->cn, N * S);
    ENS(a->dt_rstd, N); ENS(a->b_rstd, N); ENS(a->c_rstd, N);
    ENS(a->dtraw, N * E); ENS(a->hs, m1_hs_len(B, n, E, S)); ENS(a->y, N * E);
    /* in_proj rows [0, E) give x, rows [E, 2E) the gate z */
    o->linear_fwd(a->xm, u, W(w->in_proj), NULL, (int)N, H, E);
    o->linear_fwd(a->zm, u, W(w->in_proj) + (size_t)E * H, NULL, (int)N, H, E);
    if (fuse) {
        o->conv1d_silu_fwd(a->xc, a->xm, W(w->conv_w), W(w->conv_b), B, n, E, K, E);
    } else {
        o->conv1d_fwd(a->xconv, a->xm, W(w->conv_w), W(w->conv_b), B, n, E, K);
        o->silu_fwd(a->xc, a->xconv, N * E);
    }
    /* x_proj rows: dt [0, R), B [R, R+S), C [R+S, R+2S) */
    o->linear_fwd(a->dtr, a->xc, W(w->x_proj), NULL, (int)N, E, R);
    o->linear_fwd(a->br, a->xc, W(w->x_proj) + (size_t)R * E, NULL, (int)N, E, S);
    o->linear_fwd(a->cr, a->xc, W(w->x_proj) + (size_t)(R + S) * E, NULL, (int)N, E, S);
    real eps = (real)c->norm_eps;
    o->rmsnorm_fwd(a->dtn, a->dt_rstd, a->dtr, W(w->dt_norm), (int)N, R, eps);
    o->rmsnorm_fwd(a->bn, a->b_rstd, a->br, W(w->b_norm), (int)N, S, eps);
    o->rmsnorm_fwd(a->cn, a->c_rstd, a->cr, W(w->c_norm), (int)N, S, eps);
    o->linear_fwd(a->dtraw, a->dtn, W(w->dt_w), W(w->dt_b), (int)N, R, E);
    o->selective_scan_fwd(a->y, a->hs, a->xc, a->dtraw, W(w->A_log), a->bn, a->cn, W(w->D), a->zm, B, n, E, S,
                          M1_SCAN_CHUNK);
    o->linear_fwd(out, a->y, W(w->out_proj), NULL, (int)N, E, H);
    return 0;
}

/* du: overwritten when acc is FH_OVERWRITE, else accumulated */
static int mamba1_bwd(Model *m, const Mamba1W *w, M1Acts *a, int B, int n, const real *u, const real *dout,
                      real *du, int acc) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, E = cfg_E(c), S = c->d_state, R = c->dt_rank, K = c->d_conv;
    size_t N = (size_t)B * n;
    ENS(a->dy, N * E); ENS(a->dxc, N * E); ENS(a->dzm, N * E); ENS(a->ddtraw, N * E);
    int fuse = conv_silu_fused(m);
    ENS(a->dxm, N * E);
    if (!fuse) ENS(a->dxconv, N * E);
    ENS(a->ddtn, N * R); ENS(a->dbn, N * S); ENS(a->dcn, N * S);
    ENS(a->ddtr, N * R); ENS(a->dbr, N * S); ENS(a->dcr, N * S);
    REF_ZERO(a->dy, N * E); REF_ZERO(a->dxc, N * E); REF_ZERO(a->dzm, N * E); REF_ZERO(a->ddtraw, N * E);
    if (!fuse) REF_ZERO(a->dxconv, N * E);
    REF_ZERO(a->dxm, N * E);
    REF_ZERO(a->ddtn, N * R); REF_ZERO(a->dbn, N * S); REF_ZERO(a->dcn, N * S);
    REF_ZERO(a->ddtr, N * R); REF_ZERO(a->dbr, N * S); REF_ZERO(a->dcr, N * S);
    /* one writer each, but dxc: the scan first, then the three x_proj products */
    lin_bwd(m, a->dy, G(w->out_proj), NULL, dout, a->y, W(w->out_proj), (int)N, E, H, FIRST);
    o->selective_scan_bwd(a->dxc, a->ddtraw, G(w->A_log), a->dbn, a->dcn, G(w->D), a->dzm, a->dy, a->hs, a->xc,
                          a->dtraw, W(w->A_log), a->bn, a->cn, W(w->D), a->zm, B, n, E, S, M1_SCAN_CHUNK, FIRST);
    lin_bwd(m, a->ddtn, G(w->dt_w), G(w->dt_b), a->ddtraw, a->dtn, W(w->dt_w), (int)N, R, E, FIRST);
    o->rmsnorm_bwd(a->ddtr, G(w->dt_norm), a->ddtn, a->dtr, W(w->dt_norm), a->dt_rstd, (int)N, R, FIRST);
    o->rmsnorm_bwd(a->dbr, G(w->b_norm), a->dbn, a->br, W(w->b_norm), a->b_rstd, (int)N, S, FIRST);
    o->rmsnorm_bwd(a->dcr, G(w->c_norm), a->dcn, a->cr, W(w->c_norm), a->c_rstd, (int)N, S, FIRST);
    lin_bwd(m, a->dxc, G(w->x_proj), NULL, a->ddtr, a->xc, W(w->x_proj), (int)N, E, R, FH_ACC);
    lin_bwd(m, a->dxc, G(w->x_proj) + (size_t)R * E, NULL, a->dbr, a->xc, W(w->x_proj) + (size_t)R * E,
                  (int)N, E, S, FH_ACC);
    lin_bwd(m, a->dxc, G(w->x_proj) + (size_t)(R + S) * E, NULL, a->dcr, a->xc,
                  W(w->x_proj) + (size_t)(R + S) * E, (int)N, E, S, FH_ACC);
    if (fuse) {
        o->conv1d_silu_bwd(a->dxm, G(w->conv_w), G(w->conv_b), a->dxc, a->xm, W(w->conv_w), W(w->conv_b), B, n, E,
                           K, FIRST, E);
    } else {
        o->silu_bwd(a->dxconv, a->dxc, a->xconv, N * E, FIRST);
        o->conv1d_bwd(a->dxm, G(w->conv_w), G(w->conv_b), a->dxconv, a->xm, W(w->conv_w), B, n, E, K, FIRST);
    }
    lin_bwd(m, du, G(w->in_proj), NULL, a->dxm, u, W(w->in_proj), (int)N, H, E, acc);
    lin_bwd(m, du, G(w->in_proj) + (size_t)E * H, NULL, a->dzm, u, W(w->in_proj) + (size_t)E * H, (int)N, H, E,
                  FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mamba-2 mixer (SSD, gated RMSNorm)                                        */

/* Mamba-2's in_proj as ONE product (perf-notes, fuse-inproj; Model.unfused_inproj: FLOWHN_FUSE_INPROJ=0
 * keeps three): its rows z [0, E), x|B|C [E, E+CX), dt [E+CX, E+CX+nh) are one [E+CX+nh, H] weight, so
 * the product writes zxd [N, E+CX+nh] (z | x|B|C | dt in each row); the gated norm reads z and the conv
 * x|B|C as column windows (ops.h row strides ldz, ldx) and write dz, dx|B|C into dzxd alike; dt is
 * copied out to a dense [N, nh] (and its gradient back: copy_rows), nh = 24 columns, a few hundred
 * kilobytes, so the SSD kernels keep their dense dt. One backward product (K = E+CX+nh) gives du and
 * the whole weight gradient: no accumulation of du over three products, no 24-wide products. Needs the
 * fused conv + SiLU op (the only conv op with a stride) and copy_rows; not in the prefill (its cache
 * takes x|B|C as a dense tensor). */
static int m2_packed(const Model *m) {
    return !m->unfused_inproj && !m->prefilling && conv_silu_fused(m) && m->ops->copy_rows;
}

static int mamba2_fwd(Model *m, const Mamba2W *w, M2Acts *a, int B, int n, const real *u, real *out) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, E = cfg_m2_E(c), nh = cfg_m2_heads(c), P = c->m2_headdim;
    int G_ = c->m2_ngroups, Ns = c->m2_d_state, L = c->m2_chunk_size, K = c->d_conv;
    int CX = E + 2 * G_ * Ns, nchunks = (n + L - 1) / L, PW = E + CX + nh;
    size_t N = (size_t)B * n;
    int fuse = conv_silu_fused(m), packed = m2_packed(m);
    a->only = m->keep_acts;   /* a backward follows, then keep_end (pack_bf16 in mamba2_bwd) */
    if (packed) ENS(a->zxd, N * PW);
    else { ENS(a->z, N * E); ENS(a->xbc_pre, N * CX); }
    ENS(a->dtr, N * nh);
    if (!fuse) ENS(a->xbc_conv, N * CX);
    ENS(a->xbc, N * CX); ENS(a->y, N * E); ENS(a->states, (size_t)B * (nchunks + 1) * nh * P * Ns);
    ENS(a->yn, N * E); ENS(a->g_rstd, N);
    /* in_proj rows: z [0, E), x|B|C [E, E+CX), dt [E+CX, E+CX+nh) */
    const real *z = a->z, *xbc_pre = a->xbc_pre;
    int ld = E, ldx = CX;   /* z's and x|B|C's row strides */
    if (packed) {
        o->linear_fwd(a->zxd, u, W(w->in_proj), NULL, (int)N, H, PW);
        z = a->zxd; xbc_pre = a->zxd + E; ld = ldx = PW;
        o->copy_rows(a->dtr, nh, a->zxd + E + CX, PW, (int)N, nh);
    } else {
        o->linear_fwd(a->z, u, W(w->in_proj), NULL, (int)N, H, E);
        o->linear_fwd(a->xbc_pre, u, W(w->in_proj) + (size_t)E * H, NULL, (int)N, H, CX);
        o->linear_fwd(a->dtr, u, W(w->in_proj) + (size_t)(E + CX) * H, NULL, (int)N, H, nh);
    }
    if (fuse) {
        o->conv1d_silu_fwd(a->xbc, xbc_pre, W(w->conv_w), W(w->conv_b), B, n, CX, K, ldx);
    } else {
        o->conv1d_fwd(a->xbc_conv, a->xbc_pre, W(w->conv_w), W(w->conv_b), B, n, CX, K);
        o->silu_fwd(a->xbc, a->xbc_conv, N * CX);
    }
    o->ssd_fwd(a->y, a->states, a->xbc, a->dtr, W(w->dt_bias), W(w->A_log), W(w->D), B, n, nh, P, G_, Ns, L);
    keep_bf16(m, a->yn, N * E);   /* out_proj's input, again in its backward (the norm writes the rounding) */
    o->gated_rmsnorm_fwd(a->yn, a->g_rstd, a->y, z, W(w->gate_norm), (int)N, E, (real)c->norm_eps, ld);
    o->linear_fwd(out, a->yn, W(w->out_proj), NULL, (int)N, E, H);
    return 0;
}

/* du: overwritten when acc is FH_OVERWRITE, else accumulated */
static int mamba2_bwd(Model *m, const Mamba2W *w, M2Acts *a, int B, int n, const real *u, const real *dout,
                      real *du, int acc) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, E = cfg_m2_E(c), nh = cfg_m2_heads(c), P = c->m2_headdim;
    int G_ = c->m2_ngroups, Ns = c->m2_d_state, L = c->m2_chunk_size, K = c->d_conv;
    int CX = E + 2 * G_ * Ns, PW = E + CX + nh;
    size_t N = (size_t)B * n;
    int fuse = conv_silu_fused(m), packed = m2_packed(m);
    ENS(a->dyn, N * E); ENS(a->dy, N * E); ENS(a->dxbc, N * CX); ENS(a->ddtr, N * nh);
    if (packed) ENS(a->dzxd, N * PW);
    else { ENS(a->dz, N * E); ENS(a->dxbc_pre, N * CX); }
    if (!fuse) ENS(a->dxbc_conv, N * CX);
    REF_ZERO(a->dyn, N * E); REF_ZERO(a->dy, N * E); REF_ZERO(a->dxbc, N * CX);
    if (!fuse) REF_ZERO(a->dxbc_conv, N * CX);
    REF_ZERO(a->ddtr, N * nh);
    if (packed) REF_ZERO(a->dzxd, N * PW);
    else { REF_ZERO(a->dz, N * E); REF_ZERO(a->dxbc_pre, N * CX); }
    /* the packed path's windows (mamba2_fwd): z, x|B|C in zxd, their gradients in dzxd */
    const real *z = packed ? a->zxd : a->z, *xbc_pre = packed ? a->zxd + E : a->xbc_pre;
    real *dz = packed ? a->dzxd : a->dz, *dxbc_pre = packed ? a->dzxd + E : a->dxbc_pre;
    int ld = packed ? PW : E, ldx = packed ? PW : CX;
    /* every buffer here has one writer (dzxd: three, each its own columns) */
    lin_bwd(m, a->dyn, G(w->out_proj), NULL, dout, a->yn, W(w->out_proj), (int)N, E, H, FIRST);
    /* dzxd's three writers below (dz [0, E), dx|B|C [E, E+CX), ddt [E+CX, PW): its columns, tiled) and then
     * its one reader, the in_proj backward product (ssd_bwd in between writes dxbc and ddtr, not dzxd): a
     * backend may have the writers round their windows into one bf16 copy the product reads (ops.h pack_bf16) */
    if (packed && a->only) pack_bf16(m, a->dzxd, N * PW, PW);
    /* and dzxd's fp32 is read by no one (the product reads the pack; nothing after it reads dzxd): a backend
     * may have those writers store only their rounding (ops.h bf16_only once = 6) */
    if (packed && a->only) bf16_only(m, a->dzxd, N * PW, 6);
    o->gated_rmsnorm_bwd(a->dy, dz, G(w->gate_norm), a->dyn, a->y, z, W(w->gate_norm), a->g_rstd, (int)N, E,
                         FIRST, ld);
    o->ssd_bwd(a->dxbc, a->ddtr, G(w->dt_bias), G(w->A_log), G(w->D), a->dy, a->states, a->xbc, a->dtr,
               W(w->dt_bias), W(w->A_log), W(w->D), B, n, nh, P, G_, Ns, L, FIRST);
    if (fuse) {
        o->conv1d_silu_bwd(dxbc_pre, G(w->conv_w), G(w->conv_b), a->dxbc, xbc_pre, W(w->conv_w),
                           W(w->conv_b), B, n, CX, K, FIRST, ldx);
    } else {
        o->silu_bwd(a->dxbc_conv, a->dxbc, a->xbc_conv, N * CX, FIRST);
        o->conv1d_bwd(a->dxbc_pre, G(w->conv_w), G(w->conv_b), a->dxbc_conv, a->xbc_pre, W(w->conv_w), B, n, CX,
                      K, FIRST);
    }
    if (packed) {   /* ddtr into its columns: copy_rows overwrites, so under zero_first too (REF_ZERO above) */
        o->copy_rows(a->dzxd + E + CX, PW, a->ddtr, nh, (int)N, nh);
        lin_bwd(m, du, G(w->in_proj), NULL, a->dzxd, u, W(w->in_proj), (int)N, H, PW, acc);
        return 0;
    }
    lin_bwd(m, du, G(w->in_proj), NULL, a->dz, u, W(w->in_proj), (int)N, H, E, acc);
    lin_bwd(m, du, G(w->in_proj) + (size_t)E * H, NULL, a->dxbc_pre, u, W(w->in_proj) + (size_t)E * H,
                  (int)N, H, CX, FH_ACC);
    lin_bwd(m, du, G(w->in_proj) + (size_t)(E + CX) * H, NULL, a->ddtr, u,
                  W(w->in_proj) + (size_t)(E + CX) * H, (int)N, H, nh, FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A residual add left for the next op: r = a + b, where r is the buffer the
 * add would have written. A block's output add is left to the next layer
 * (or the final norm), which makes it in one op with its input norm
 * (ops.h add_rmsnorm_fwd): the same operands in the same order, the same bits. */
typedef struct {
    const real *a, *b;
    /* set by the caller before the producer runs: the add will be made by an add_rmsnorm_fwd (the next decoder or
     * Hymba layer's first norm, or the final norm) with nothing in between, so a product writing a or b may mark
     * it bf16-only (once = 10; producers keep this field when they fill a, b) */
    int norm;
} Residual;

/* ------------------------------------------------------------------------ */
/* MLP with its norm and residual: out = h + down(silu(gate(v)) * up(v)), v = RMSNorm(h).
 * h = ha + hb is the residual the MLP follows: made here (written to h, which
 * may be ha or hb) with the norm in one op (ops.h add_rmsnorm_fwd). */

/* gate and up as ONE product (Model.unfused_proj: FLOWHN_FUSE_PROJ=0 keeps two):
 * their weights are adjacent in the parameter and gradient buffers (layout.c),
 * so W(w->gate) with 2I rows is the stacked [Wgate; Wup] and G(w->gate) its
 * gradient; the product writes gu [N, 2I] (gate | up in each row), read by
 * swiglu_packed_fwd. The backward's input gradient is then one product over
 * K = 2I instead of two accumulating ones (fp32 rounding apart, the same). */
static int mlp_packed(const Model *m, const MlpW *w) {
    return !m->unfused_proj && m->ops->swiglu_packed_fwd && m->ops->swiglu_packed_bwd &&
           w->up == w->gate + (size_t)m->cfg.intermediate_size * m->cfg.hidden_size;
}

static int mlp_fwd(Model *m, const MlpW *w, size_t norm, MlpActs *a, int N, const real *ha, const real *hb, real *h,
                   real *out, Residual *defer) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, I = c->intermediate_size;
    a->packed = mlp_packed(m, w);
    ENS(a->v, (size_t)N * H); ENS(a->v_rstd, N); ENS(a->act, (size_t)N * I);
    if (a->packed) ENS(a->gu, (size_t)N * 2 * I);
    else { ENS(a->g, (size_t)N * I); ENS(a->up, (size_t)N * I); }
    a->h = h;
    a->only = m->keep_acts;   /* kept inputs may be bf16-only (bf16_only) */
    keep_bf16(m, a->v, (size_t)N * H);   /* gate and up's input, again in their backward */
    if (a->only) bf16_only(m, a->v, (size_t)N * H, 0);   /* read by those products only */
    o->add_rmsnorm_fwd(h, a->v, a->v_rstd, ha, hb, W(norm), N, H, (real)c->norm_eps);
    if (a->packed) {
        if (a->only) {   /* gu is read by swiglu_packed_fwd / _bwd only: the product may write it in bf16 */
            keep_bf16(m, a->gu, (size_t)N * 2 * I);
            bf16_only(m, a->gu, (size_t)N * 2 * I, 2);
        }
        o->linear_fwd(a->gu, a->v, W(w->gate), NULL, N, H, 2 * I);   /* [Wgate; Wup]: gate | up */
        keep_bf16(m, a->act, (size_t)N * I);   /* down's input, again in its backward */
        if (a->only) bf16_only(m, a->act, (size_t)N * I, 0);   /* read by down's products only */
        o->swiglu_packed_fwd(a->act, a->gu, N, I);
    } else {
        o->linear_fwd(a->g, a->v, W(w->gate), NULL, N, H, I);
        o->linear_fwd(a->up, a->v, W(w->up), NULL, N, H, I);
        keep_bf16(m, a->act, (size_t)N * I);   /* down's input, again in its backward */
        if (a->only) bf16_only(m, a->act, (size_t)N * I, 0);
        o->swiglu_fwd(a->act, a->g, a->up, (size_t)N * I);
    }
    /* out is read only by the deferred add (defer->norm: an add_rmsnorm_fwd, out its a, r written over it): the
     * down product may write only its bf16 rounding (bf16_only once = 10; ops.h) */
    if (a->only && defer && defer->norm) bf16_only(m, out, (size_t)N * H, 10);
    o->linear_fwd(out, a->act, W(w->down), NULL, N, I, H);
    if (defer) defer->a = out, defer->b = h;   /* out = out + h, made by the next op */
    else o->add(out, out, h, (size_t)N * H);
    return 0;
}

/* In place: d holds the gradient at out on entry, at h on return. The
 * residual's share (dout itself) is already in d, so the norm's gradient is
 * added to it (FH_ACC) with no separate accumulate pass: dout + dnorm, the
 * same bits as the old dnorm, then += dout (x + y = y + x). */
static int mlp_bwd(Model *m, const MlpW *w, size_t norm, MlpActs *a, int N, real *d) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, I = c->intermediate_size;
    ENS(a->dv, (size_t)N * H); ENS(a->dact, (size_t)N * I);
    REF_ZERO(a->dv, (size_t)N * H); REF_ZERO(a->dact, (size_t)N * I);
    /* d act is read only by swiglu_packed_bwd right below (its dout), once: the down product may write only its
     * bf16 rounding (bf16_only once = 7; ops.h). Not on the unpacked path (swiglu_bwd has no such reader). */
    if (a->only && a->packed) bf16_only(m, a->dact, (size_t)N * I, 7);
    lin_bwd(m, a->dact, G(w->down), NULL, d, a->act, W(w->down), N, I, H, FIRST);
    if (a->packed) {   /* one product for gate and up (mlp_packed): dgu [N, 2I] in gu's layout */
        ENS(a->dgu, (size_t)N * 2 * I);
        REF_ZERO(a->dgu, (size_t)N * 2 * I);
        if (a->only) bf16_only(m, a->dgu, (size_t)N * 2 * I, 1);   /* the next product's dout, read once */
        o->swiglu_packed_bwd(a->dgu, a->dact, a->gu, N, I, FIRST);
        /* dv is read only by the norm's backward below (its dout), once: the gate|up product may write only its
         * bf16 rounding (bf16_only once = 8; ops.h) */
        if (a->only) bf16_only(m, a->dv, (size_t)N * H, 8);
        lin_bwd(m, a->dv, G(w->gate), NULL, a->dgu, a->v, W(w->gate), N, H, 2 * I, FIRST);
    } else {
        ENS(a->dg, (size_t)N * I); ENS(a->dup, (size_t)N * I);
        REF_ZERO(a->dg, (size_t)N * I); REF_ZERO(a->dup, (size_t)N * I);
        if (a->only) {   /* the two products' douts, each read once */
            bf16_only(m, a->dg, (size_t)N * I, 1);
            bf16_only(m, a->dup, (size_t)N * I, 1);
        }
        o->swiglu_bwd(a->dg, a->dup, a->dact, a->g, a->up, (size_t)N * I, FIRST);
        lin_bwd(m, a->dv, G(w->gate), NULL, a->dg, a->v, W(w->gate), N, H, I, FIRST);
        lin_bwd(m, a->dv, G(w->up), NULL, a->dup, a->v, W(w->up), N, H, I, FH_ACC);
    }
    o->rmsnorm_bwd(d, G(norm), a->dv, a->h, W(norm), a->v_rstd, N, H, FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* decoder layer on n tokens at positions pos (of a length-T sequence).
 * x_full != NULL selects prefix attention: keys/values from all T tokens.
 * x_src != NULL (FlowHN branch, fused split): x_in is gathered here from rows
 * pos of x_src [B, T, H], in one op with the first norm (ops.h rmsnorm_gather_fwd).
 * in != NULL: x_in = in->a + in->b is made here, with the first norm (x_in is
 * written). defer != NULL: the output's residual add is left to the caller. */

static int decoder_fwd(Model *m, const DecoderW *w, DecActs *a, int B, int n, const int *pos, int T,
                       const real *x_in, const real *x_full, real *out, const Residual *in, Residual *defer,
                       const real *x_src) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size;
    size_t N = (size_t)B * n;
    real eps = (real)c->norm_eps;
    a->x_in = x_in; a->x_full = x_full; a->pos = pos; a->B = B; a->n = n; a->T = T;
    ENS(a->u, N * H); ENS(a->u_rstd, N); ENS(a->mix, N * H);
    keep_bf16(m, a->u, N * H);   /* the mixer's input products (q, k, v; in_proj), again in their backward */
    if (m->keep_acts) bf16_only(m, a->u, N * H, 0);   /* read by those products only */
    if (in) o->add_rmsnorm_fwd((real *)x_in, a->u, a->u_rstd, in->a, in->b, W(w->mixer_norm), (int)N, H, eps);
    else if (x_src) o->rmsnorm_gather_fwd((real *)x_in, a->u, a->u_rstd, x_src, pos, W(w->mixer_norm), B, T, n, H, eps);
    else o->rmsnorm_fwd(a->u, a->u_rstd, x_in, W(w->mixer_norm), (int)N, H, eps);
    /* mix (the o product's output) is read only by the MLP's add below (its b, h = x_in + mix): bf16_only once
     * = 10 there (attn_fwd) */
    a->at.out16 = m->keep_acts && w->has_mlp;
    if (w->mixer == MIXER_ATTN) {
        if (x_full) {
            ENS(a->at.uk, (size_t)B * T * H); ENS(a->at.uk_rstd, (size_t)B * T);
            keep_bf16(m, a->at.uk, (size_t)B * T * H);   /* k and v's input, again in their backward */
            if (m->keep_acts) bf16_only(m, a->at.uk, (size_t)B * T * H, 0);   /* read by k, v's products only */
            o->rmsnorm_fwd(a->at.uk, a->at.uk_rstd, x_full, W(w->mixer_norm), B * T, H, eps);
            if (attn_fwd(m, &w->attn, &a->at, B, n, pos, a->u, T, m->iota_dev, a->at.uk, a->mix)) return -1;
        } else if (attn_fwd(m, &w->attn, &a->at, B, n, pos, a->u, n, pos, a->u, a->mix)) return -1;
    } else if (w->mixer == MIXER_MAMBA1) {
        if (mamba1_fwd(m, &w->m1, &a->m1, B, n, a->u, a->mix)) return -1;
    } else if (mamba2_fwd(m, &w->m2, &a->m2, B, n, a->u, a->mix)) return -1;
    if (!w->has_mlp) {
        if (defer) defer->a = x_in, defer->b = a->mix;   /* out = x_in + mix, made by the next op */
        else o->add(out, x_in, a->mix, N * H);
        return 0;
    }
    ENS(a->h, N * H);
    return mlp_fwd(m, &w->mlp, w->mlp_norm, &a->mlp, (int)N, x_in, a->mix, a->h, out, defer);   /* h = x_in + mix */
}

/* In place: d holds the gradient at out on entry, at x_in on return (the
 * residuals' shares are already in it, so each norm's gradient is added to it
 * with FH_ACC: no accumulate pass, the same bits, see mlp_bwd). dx_full
 * (prefix attention) accumulates the keys' share. d_dst != NULL (FlowHN
 * branch, fused split): the gradient at x_in is added to rows pos of d_dst
 * [B, T, H] instead (d is left holding the residual's share only). */
static int decoder_bwd(Model *m, const DecoderW *w, DecActs *a, real *d, real *dx_full, real *d_dst) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, B = a->B, n = a->n, T = a->T;
    size_t N = (size_t)B * n;
    const real *dmix = d;   /* the gradient at h = x_in + mix (after the MLP's backward) */
    if (w->has_mlp && mlp_bwd(m, &w->mlp, w->mlp_norm, &a->mlp, (int)N, d)) return -1;
    ENS(a->du, N * H);
    REF_ZERO(a->du, N * H);
    if (w->mixer == MIXER_ATTN) {
        if (a->x_full) {
            ENS(a->at.duk, (size_t)B * T * H);
            REF_ZERO(a->at.duk, (size_t)B * T * H);
            if (attn_bwd(m, &w->attn, &a->at, B, n, a->pos, a->u, T, m->iota_dev, a->at.uk, dmix, a->du, a->at.duk,
                         FIRST, 0))
                return -1;
            o->rmsnorm_bwd(dx_full, G(w->mixer_norm), a->at.duk, a->x_full, W(w->mixer_norm), a->at.uk_rstd, B * T, H,
                           FH_ACC);
        } else if (attn_bwd(m, &w->attn, &a->at, B, n, a->pos, a->u, n, a->pos, a->u, dmix, a->du, a->du, FIRST,
                            /* du is read next only by the norm's backward below, as its dout: by rmsnorm_bwd
                             * (not the fused split's rmsnorm_gather_bwd, d_dst) */
                            !d_dst))
            return -1;
    } else if (w->mixer == MIXER_MAMBA1) {
        if (mamba1_bwd(m, &w->m1, &a->m1, B, n, a->u, dmix, a->du, FIRST)) return -1;
    } else if (mamba2_bwd(m, &w->m2, &a->m2, B, n, a->u, dmix, a->du, FIRST)) return -1;
    if (d_dst)   /* d + the norm's share, added to rows pos of d_dst (the split's gather_bwd, fused) */
        o->rmsnorm_gather_bwd(d_dst, G(w->mixer_norm), d, a->du, a->x_in, W(w->mixer_norm), a->u_rstd, a->pos, B, T,
                              n, H);
    else o->rmsnorm_bwd(d, G(w->mixer_norm), a->du, a->x_in, W(w->mixer_norm), a->u_rstd, (int)N, H, FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* FlowHN parallel block: split tokens, two decoder branches, fuse, project   */

/* The two branches are independent: a backend may run them at once (ops.h set_branch) */
static void branch(const Ops *o, int b) {
    if (o->set_branch) o->set_branch(b);
}

/* defer != NULL: the output's residual add is left to the caller */
static int flowhn_fwd(Model *m, int l, LayerActs *a, const real *x, real *out, Residual *defer) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    const LayerW *w = &m->layout.layers[l];
    const LayerSplit *ls = &m->plan.layers[l];
    int B = m->B, T = m->T, H = c->hidden_size, na = ls->na, ns = ls->ns;
    int Hin = c->split == SPLIT_NONE ? 2 * H : H;
    size_t BT = (size_t)B * T;
    const int *pa = m->pa_dev[l], *ps = m->ps_dev[l];
    ENS(a->xa, (size_t)B * na * H); ENS(a->xs, (size_t)B * ns * H); ENS(a->ya, (size_t)B * na * H);
    ENS(a->ys, (size_t)B * ns * H); ENS(a->y, BT * Hin); ENS(a->zz, BT * H); ENS(a->zn, BT * H);
    ENS(a->zn_rstd, BT);
    int fuse = split_fused(m);   /* the gathers in the branches' first norms */
    if (!fuse) {
        o->gather_fwd(a->xa, x, pa, B, T, na, H, H, 0);
        o->gather_fwd(a->xs, x, ps, B, T, ns, H, H, 0);
    }
    const real *x_full = c->context == CONTEXT_PREFIX ? x : NULL;
    /* a branch may get no tokens when a window's plan is used on a short prefix */
    int rc = 0;
    branch(o, 1);
    if (na) rc = decoder_fwd(m, &w->attn_branch, &a->ab, B, na, pa, T, a->xa, x_full, a->ya, NULL, NULL,
                             fuse ? x : NULL);
    branch(o, 2);
    if (!rc && ns) rc = decoder_fwd(m, &w->ssm_branch, &a->sb, B, ns, ps, T, a->xs, NULL, a->ys, NULL, NULL,
                                    fuse ? x : NULL);
    branch(o, 0);
    if (rc) return -1;
    if (c->split == SPLIT_NONE) {   /* y = concat(ys, ya) along channels */
        o->scatter_fwd(a->y, a->ys, ps, B, T, ns, H, 2 * H, 0);
        o->scatter_fwd(a->y, a->ya, pa, B, T, na, H, 2 * H, H);
    } else {                        /* y = each token's branch output at its position */
        o->scatter_fwd(a->y, a->ya, pa, B, T, na, H, H, 0);
        o->scatter_fwd(a->y, a->ys, ps, B, T, ns, H, H, 0);
    }
    o->linear_fwd(a->zz, a->y, W(w->fuse), NULL, (int)BT, Hin, H);
    o->add_rmsnorm_fwd(a->zz, a->zn, a->zn_rstd, a->zz, x, W(w->out_norm), (int)BT, H, (real)c->norm_eps);   /* zz += x */
    o->linear_fwd(out, a->zn, W(w->out_proj), NULL, (int)BT, H, H);
    if (defer) defer->a = out, defer->b = a->zz;   /* out = out + zz, made by the next op */
    else o->add(out, out, a->zz, BT * H);
    return 0;
}

/* In place: d holds the gradient at the block's output on entry, at its input on return */
static int flowhn_bwd(Model *m, int l, real *d) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    const LayerW *w = &m->layout.layers[l];
    LayerActs *a = &m->acts->layers[l];
    const LayerSplit *ls = &m->plan.layers[l];
    int B = m->B, T = m->T, H = c->hidden_size, na = ls->na, ns = ls->ns;
    int Hin = c->split == SPLIT_NONE ? 2 * H : H;
    size_t BT = (size_t)B * T;
    const int *pa = m->pa_dev[l], *ps = m->ps_dev[l];
    ENS(a->dzn, BT * H); ENS(a->dy, BT * Hin);
    ENS(a->dya, (size_t)B * na * H); ENS(a->dys, (size_t)B * ns * H);
    REF_ZERO(a->dzn, BT * H); REF_ZERO(a->dy, BT * Hin);
    REF_ZERO(a->dya, (size_t)B * na * H); REF_ZERO(a->dys, (size_t)B * ns * H);
    /* dzz, the gradient at zz = fuse(y) + x, is the input gradient's first
     * share, so it is made in d itself: the output residual's share (dout) is
     * there, the norm's is added (dout + dnorm: the same bits as the norm's
     * first, then += dout). d then gets the prefix keys' share (attention
     * branch) and, row by row, the branches' inputs' (the gathers write only
     * their branch's rows, so they accumulate). */
    const real *dzz = d;
    lin_bwd(m, a->dzn, G(w->out_proj), NULL, d, a->zn, W(w->out_proj), (int)BT, H, H, FIRST);
    o->rmsnorm_bwd(d, G(w->out_norm), a->dzn, a->zz, W(w->out_norm), a->zn_rstd, (int)BT, H, FH_ACC);
    lin_bwd(m, a->dy, G(w->fuse), NULL, dzz, a->y, W(w->fuse), (int)BT, Hin, H, FIRST);
    /* each scatter_bwd writes all of its branch's rows: dya and dys have one writer */
    if (c->split == SPLIT_NONE) {
        o->scatter_bwd(a->dys, a->dy, ps, B, T, ns, H, 2 * H, 0, FIRST);
        o->scatter_bwd(a->dya, a->dy, pa, B, T, na, H, 2 * H, H, FIRST);
    } else {
        o->scatter_bwd(a->dya, a->dy, pa, B, T, na, H, H, 0, FIRST);
        o->scatter_bwd(a->dys, a->dy, ps, B, T, ns, H, H, 0, FIRST);
    }
    /* the branches write disjoint memory: their own activations and gradients
     * (dya, dys: in place, the gradients at their inputs on return), and
     * (prefix context) the attention branch alone adds its keys' share to d */
    /* fused split: each branch's last norm adds its input gradient into its own
     * rows of d (disjoint rows). With prefix context the attention branch adds
     * its keys' share into every row of d on its stream, so the SSM branch's
     * stays in dys and is gathered after the join. */
    int prefix = c->context == CONTEXT_PREFIX, fa = split_fused(m), fs = fa && !prefix;
    int rc = 0;
    branch(o, 1);
    if (na) rc = decoder_bwd(m, &w->attn_branch, &a->ab, a->dya, prefix ? d : NULL, fa ? d : NULL);
    branch(o, 2);
    if (!rc && ns) rc = decoder_bwd(m, &w->ssm_branch, &a->sb, a->dys, NULL, fs ? d : NULL);
    branch(o, 0);
    if (rc) return -1;
    if (!fa) o->gather_bwd(d, a->dya, pa, B, T, na, H, H, 0);
    if (!fs) o->gather_bwd(d, a->dys, ps, B, T, ns, H, H, 0);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Hymba block: attention and Mamba heads on all tokens, normalised, averaged */

/* in, defer: as decoder_fwd's */
static int hymba_fwd(Model *m, int l, LayerActs *a, const real *x, real *out, const Residual *in, Residual *defer) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    const LayerW *w = &m->layout.layers[l];
    int B = m->B, T = m->T, H = c->hidden_size;
    size_t BT = (size_t)B * T;
    real eps = (real)c->norm_eps;
    ENS(a->u, BT * H); ENS(a->u_rstd, BT); ENS(a->a, BT * H); ENS(a->s, BT * H); ENS(a->an, BT * H);
    ENS(a->an_rstd, BT); ENS(a->sn, BT * H); ENS(a->sn_rstd, BT); ENS(a->c, BT * H); ENS(a->h, BT * H);
    keep_bf16(m, a->u, BT * H);   /* both heads' input products, again in their backward */
    if (in) o->add_rmsnorm_fwd((real *)x, a->u, a->u_rstd, in->a, in->b, W(w->mixer_norm), (int)BT, H, eps);
    else o->rmsnorm_fwd(a->u, a->u_rstd, x, W(w->mixer_norm), (int)BT, H, eps);
    /* attention and Mamba heads read u and write their own outputs: two branches
     * (the backward adds both into du, so it stays in order) */
    branch(o, 1);
    a->at.out16 = 0;   /* its output is read by the out norm, not an add */
    int rc = attn_fwd(m, &w->attn, &a->at, B, T, m->iota_dev, a->u, T, m->iota_dev, a->u, a->a);
    branch(o, 2);
    if (!rc) rc = mamba1_fwd(m, &w->m1, &a->m1, B, T, a->u, a->s);
    branch(o, 0);
    if (rc) return -1;
    o->rmsnorm_fwd(a->an, a->an_rstd, a->a, W(w->attn_out_norm), (int)BT, H, eps);
    o->rmsnorm_fwd(a->sn, a->sn_rstd, a->s, W(w->ssm_out_norm), (int)BT, H, eps);
    o->zero(a->c, sizeof(real) * BT * H);
    o->accumulate(a->c, a->an, (real)0.5, BT * H);
    o->accumulate(a->c, a->sn, (real)0.5, BT * H);
    o->linear_fwd(a->h, a->c, W(w->out_proj), NULL, (int)BT, H, H);
    return mlp_fwd(m, &w->mlp, w->mlp_norm, &a->mlp, (int)BT, a->h, x, a->h, out, defer);   /* h = h + x */
}

/* In place: d holds the gradient at the block's output on entry, at its input x on return */
static int hymba_bwd(Model *m, int l, const real *x, real *d) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    const LayerW *w = &m->layout.layers[l];
    LayerActs *a = &m->acts->layers[l];
    int B = m->B, T = m->T, H = c->hidden_size;
    size_t BT = (size_t)B * T, n = BT * H;
    ENS(a->dc, n); ENS(a->dan, n); ENS(a->da, n); ENS(a->ds, n); ENS(a->du, n);
    REF_ZERO(a->dc, n); REF_ZERO(a->da, n); REF_ZERO(a->ds, n); REF_ZERO(a->du, n);
    if (mlp_bwd(m, &w->mlp, w->mlp_norm, &a->mlp, (int)BT, d)) return -1;   /* d: the gradient at h */
    lin_bwd(m, a->dc, G(w->out_proj), NULL, d, a->c, W(w->out_proj), (int)BT, H, H, FIRST);
    /* c = 0.5 an + 0.5 sn: both norms get 0 + 0.5 dc, one buffer (the zero stays:
     * there is no scaled copy op, and it is Hymba's only one) */
    ZERO(a->dan, n);
    o->accumulate(a->dan, a->dc, (real)0.5, n);
    o->rmsnorm_bwd(a->da, G(w->attn_out_norm), a->dan, a->a, W(w->attn_out_norm), a->an_rstd, (int)BT, H, FIRST);
    o->rmsnorm_bwd(a->ds, G(w->ssm_out_norm), a->dan, a->s, W(w->ssm_out_norm), a->sn_rstd, (int)BT, H, FIRST);
    /* du: the attention's products write it first, the Mamba's add */
    /* not norm_only: the Mamba head's dgrad accumulates into du before the norm reads it */
    if (attn_bwd(m, &w->attn, &a->at, B, T, m->iota_dev, a->u, T, m->iota_dev, a->u, a->da, a->du, a->du, FIRST, 0))
        return -1;
    if (mamba1_bwd(m, &w->m1, &a->m1, B, T, a->u, a->ds, a->du, FH_ACC)) return -1;
    /* d: the residual's share (dh) is there, the norm's is added (see mlp_bwd) */
    o->rmsnorm_bwd(d, G(w->mixer_norm), a->du, x, W(w->mixer_norm), a->u_rstd, (int)BT, H, FH_ACC);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the model                                                                 */

int model_split_na(const Config *c, int T) {
    if (c->arch != ARCH_FLOWHN || c->split == SPLIT_NONE) return T;
    if (c->split == SPLIT_AE) return T / 2;
    if (c->ratio_rule == RATIO_FIXED) return split_na_for_ratio(c, T, c->split_ratio);
    return flops_solve_na(c, T);   /* "measured" is resolved into a number before the model is built */
}

int model_create(Model *m, const Config *c, const Ops *ops) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->ops = ops;
    const char *cs = getenv("FLOWHN_CONV_SILU");
    m->unfused_conv_silu = cs && !strcmp(cs, "0");
    const char *ar = getenv("FLOWHN_ATTN_ROPE");
    m->unfused_attn_rope = ar && !strcmp(ar, "0");
    const char *sf = getenv("FLOWHN_SPLIT_FUSE");
    m->unfused_split = sf && !strcmp(sf, "0");
    const char *fp = getenv("FLOWHN_FUSE_PROJ");
    m->unfused_proj = fp && !strcmp(fp, "0");
    const char *fi = getenv("FLOWHN_FUSE_INPROJ");
    m->unfused_inproj = fi && !strcmp(fi, "0");
    const char *zg = getenv("FLOWHN_ZERO_GRAD");
    m->zero_grad_full = zg && !strcmp(zg, "1");
    const char *lh = getenv("FLOWHN_LAZY_HEAD");
    m->lazy_head = !(lh && !strcmp(lh, "0"));
    if (layout_build(&m->layout, c)) return -1;
    if (lazy_build(m)) {
        model_free(m);
        return -1;
    }
    m->params = ops->alloc(sizeof(real) * m->layout.total);
    m->grads = ops->alloc(sizeof(real) * m->layout.total);
    if (!m->params || !m->grads) {
        model_free(m);
        return fh_error("cannot allocate %zu parameters (%.1f MiB each for weights and gradients)", m->layout.total,
                        sizeof(real) * m->layout.total / 1048576.0);
    }
    /* the zeroing runs' table, where the step reads it (a recorded step holds its pointer: written once, here) */
    const char *zr = getenv("FLOWHN_ZERO_RUNS");
    if (ops->zero_runs && m->n_zruns && !(zr && !strcmp(zr, "0"))) {
        size_t bytes = sizeof(size_t) * 2 * (size_t)m->n_zruns;
        m->zrun_dev = ops->alloc(bytes);
        if (!m->zrun_dev) {
            model_free(m);
            return -1;
        }
        ops->from_host(m->zrun_dev, m->zrun, bytes);
    }
    return 0;
}

static void plan_release(Model *m) {
    for (int l = 0; m->pa_dev && l < m->plan.num_layers; l++) {
        m->ops->release(m->pa_dev[l]);
        m->ops->release(m->ps_dev[l]);
    }
    free(m->pa_dev);
    free(m->ps_dev);
    m->pa_dev = m->ps_dev = NULL;
    split_plan_free(&m->plan);
}

void model_free(Model *m) {
    acts_release(m);
    plan_release(m);
    if (m->ops) {
        m->ops->release(m->params);
        m->ops->release(m->grads);
        m->ops->release(m->zrun_dev);
        m->ops->release(m->iota_dev);
        m->ops->release(m->tokens_dev);
        m->ops->release(m->targets_dev);
    }
    free(m->targets_host);
    free(m->lazy_off);
    free(m->lazy_n);
    free(m->lazy_done);
    free(m->zrun);
    layout_free(&m->layout);
    memset(m, 0, sizeof *m);
}

int model_init_params(Model *m, uint64_t seed) {
    real *host = fh_malloc(sizeof(real) * m->layout.total, "parameter initialisation");
    if (!host) return -1;
    params_init(host, &m->layout, &m->cfg, seed);
    m->ops->from_host(m->params, host, sizeof(real) * m->layout.total);
    free(host);
    return 0;
}

void model_zero_grad(Model *m) {
    m->grad_fresh = 0;
    if (m->zero_grad_full || m->zero_first) {   /* the old path (model.h zero_grad_full) */
        m->ops->zero(m->grads, sizeof(real) * m->layout.total);
        return;
    }
    if (m->zrun_dev && m->ops->zero_runs)   /* one launch for every run (ops.h zero_runs) */
        m->ops->zero_runs(m->grads, m->layout.total, m->zrun_dev, m->n_zruns);
    else
        for (int i = 0; i < m->n_zruns; i++) ZERO(G(m->zrun[2 * i]), m->zrun[2 * i + 1]);
    memset(m->lazy_done, 0, sizeof(size_t) * (m->n_lazy ? m->n_lazy : 1));
    m->grad_fresh = 1;
}

const real *model_logits(const Model *m) { return m->acts ? m->acts->logits : NULL; }
const real *model_token_losses(const Model *m) { return m->acts ? m->acts->losses : NULL; }

static int *dev_ints(Model *m, const int *host, int n) {
    int *d = m->ops->alloc(sizeof(int) * (n ? n : 1));
    if (d) m->ops->from_host(d, host, sizeof(int) * n);
    return d;
}

/* (Re)builds shape-dependent state when (B, T) changes. */
static int prepare_shape(Model *m, int B, int T) {
    if (m->acts && m->B == B && m->T == T && m->plan_len == m->plan_len_used) return 0;
    m->plan_len_used = m->plan_len;
    const Ops *o = m->ops;
    plan_release(m);
    o->release(m->iota_dev); o->release(m->tokens_dev); o->release(m->targets_dev);
    m->iota_dev = m->tokens_dev = m->targets_dev = NULL;
    free(m->targets_host);
    m->targets_host = NULL;
    if (acts_reset(m)) return -1;
    m->B = B; m->T = T;
    int *iota = malloc(sizeof(int) * T);
    if (!iota) return fh_error("out of memory");
    for (int t = 0; t < T; t++) iota[t] = t;
    m->iota_dev = dev_ints(m, iota, T);
    free(iota);
    m->tokens_dev = o->alloc(sizeof(int) * (size_t)B * T);
    m->targets_dev = o->alloc(sizeof(int) * (size_t)B * T);
    m->targets_host = malloc(sizeof(int) * (size_t)B * T);
    if (!m->iota_dev || !m->tokens_dev || !m->targets_dev || !m->targets_host) return fh_error("out of memory");
    if (m->cfg.arch == ARCH_FLOWHN) {
        int W = m->plan_len > T ? m->plan_len : T;
        if (split_plan_build(&m->plan, &m->cfg, W, model_split_na(&m->cfg, W))) return -1;
        split_plan_restrict(&m->plan, T);
        m->pa_dev = calloc(m->cfg.num_layers, sizeof(int *));
        m->ps_dev = calloc(m->cfg.num_layers, sizeof(int *));
        if (!m->pa_dev || !m->ps_dev) return fh_error("out of memory");
        for (int l = 0; l < m->cfg.num_layers; l++) {
            m->pa_dev[l] = dev_ints(m, m->plan.layers[l].pa, m->plan.layers[l].na);
            m->ps_dev[l] = dev_ints(m, m->plan.layers[l].ps, m->plan.layers[l].ns);
            if (!m->pa_dev[l] || !m->ps_dev[l]) return fh_error("out of memory");
        }
    }
    return 0;
}

static int needs_measured_split(const Config *c) {
    return c->arch == ARCH_FLOWHN && (c->split == SPLIT_FA || c->split == SPLIT_FAC) && c->ratio_rule == RATIO_MEASURED;
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int model_measure_split(Model *m, int T, int reps, FILE *log) {
    if (!needs_measured_split(&m->cfg)) return 0;
    if (T < 2 || T > m->cfg.max_seq_len) return fh_error("split measurement needs 2 <= T <= %d, got %d", m->cfg.max_seq_len, T);
    int *tok = calloc(T, sizeof(int));
    if (!tok) return fh_error("out of memory");
    int step = split_multiple_at(&m->cfg, T), best = -1;
    while ((T - 2 * step) / step + 1 > 32) step += split_multiple_at(&m->cfg, T);   /* at most ~32 candidates */
    double best_t = 0;
    if (log) fprintf(log, "measuring the FlowHN split at T = %d on %s (forward, best of %d):\n", T, m->ops->name, reps);
    for (int na = split_multiple_at(&m->cfg, T); na <= T - split_multiple_at(&m->cfg, T); na += step) {
        m->cfg.ratio_rule = RATIO_FIXED;
        m->cfg.split_ratio = (double)na / T;
        acts_release(m);   /* the plan and buffers are rebuilt for this n_a */
        double t_min = 1e30;
        for (int r = 0; r <= reps; r++) {   /* the first run warms up */
            double t0 = seconds_now();
            if (model_forward(m, tok, tok, 1, T)) { free(tok); return -1; }
            double dt = seconds_now() - t0;
            if (r && dt < t_min) t_min = dt;
        }
        if (log) fprintf(log, "  n_a %5d  %8.3f ms\n", na, 1e3 * t_min);
        if (best < 0 || t_min < best_t) { best = na; best_t = t_min; }
    }
    free(tok);
    m->cfg.ratio_rule = RATIO_FIXED;
    m->cfg.split_ratio = (double)best / T;
    acts_release(m);
    if (log) fprintf(log, "measured split: n_a = %d of %d (split_ratio %.6g), stored as a fixed ratio\n", best, T,
                     m->cfg.split_ratio);
    return 0;
}

/* Checks the input, (re)builds the shape's state, copies the tokens to the backend. */
static int stage_tokens(Model *m, const int *tokens, const int *targets, int B, int T) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int V = c->vocab_size;
    if (needs_measured_split(c))
        return fh_error("split_ratio \"measured\" has not been measured yet: call model_measure_split first "
                        "(flowhn train and flowhn bench do)");
    if (B < 1 || T < 1) return fh_error("batch size (%d) and sequence length (%d) must be at least 1", B, T);
    if (T > c->max_seq_len)
        return fh_error("sequence length %d exceeds the model's max_position_embeddings %d; use a shorter "
                        "sequence or a config with a larger max_position_embeddings", T, c->max_seq_len);
    for (long i = 0; i < (long)B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return fh_error("token id %d at batch %ld position %ld is outside the vocabulary [0, %d); the data "
                            "and the model's vocab_size do not match", tokens[i], i / T, i % T, V);
        if (targets && (targets[i] < -1 || targets[i] >= V))
            return fh_error("target id %d at batch %ld position %ld is outside the vocabulary [0, %d) (-1 means "
                            "ignored)", targets[i], i / T, i % T, V);
    }
    if (prepare_shape(m, B, T)) return -1;
    o->from_host(m->tokens_dev, tokens, sizeof(int) * (size_t)B * T);
    return 0;
}

/* Layer l's forward on x -> out with the activations a (the layer's own in
 * training; model_prefill shares them between layers). in != NULL: x is
 * in->a + in->b, the previous layer's deferred output add, made here (x is
 * written). defer != NULL: this layer's output add is left to the caller
 * (*defer). */
static int layer_fwd(Model *m, int l, LayerActs *a, real *x, real *out, const Residual *in, Residual *defer) {
    const LayerW *w = &m->layout.layers[l];
    if (w->kind == LAYER_FLOWHN) {   /* it starts with gathers, not a norm: the add on its own */
        if (in) m->ops->add(x, in->a, in->b, (size_t)m->B * m->T * m->cfg.hidden_size);
        return flowhn_fwd(m, l, a, x, out, defer);
    }
    if (w->kind == LAYER_HYMBA) return hymba_fwd(m, l, a, x, out, in, defer);
    return decoder_fwd(m, &w->dec, &a->dec, m->B, m->T, m->iota_dev, m->T, x, NULL, out, in, defer, NULL);
}

/* embedding -> layers -> final norm (A->xf), from the staged tokens */
/* keep: a backward follows (model_forward_backward, model_step_body): the
 * layers keep their saved product inputs' bf16 roundings (Ops.keep_bf16) */
static int trunk_compute(Model *m, int keep) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    ModelActs *A = m->acts;
    int B = m->B, T = m->T, H = c->hidden_size;
    size_t BT = (size_t)B * T;
    for (int l = 0; l <= c->num_layers; l++) ENS(A->x[l], BT * H);
    o->embedding_fwd(A->x[0], m->tokens_dev, W(m->layout.embed), (int)BT, H);
    keep_end(m);   /* this forward rewrites the saved inputs */
    m->keep_acts = keep;
    /* each layer's output add is made by the next layer with its input norm
     * (x[l + 1] = res.a + res.b), the last one's by the final norm */
    Residual res = {0}, next;
    for (int l = 0; l < c->num_layers; l++) {
        /* the next layer makes this one's output add with its first norm, unless it is FlowHN's (a plain add):
         * then, and for the final norm, the add is an add_rmsnorm_fwd right after the layer (Residual.norm) */
        next = (Residual){0};
        next.norm = l + 1 == c->num_layers || m->layout.layers[l + 1].kind != LAYER_FLOWHN;
        if (layer_fwd(m, l, &A->layers[l], A->x[l], A->x[l + 1], l ? &res : NULL, &next)) return -1;
        res = next;
    }
    m->keep_acts = 0;
    ENS(A->xf, BT * H); ENS(A->xf_rstd, BT);
    if (c->num_layers)
        o->add_rmsnorm_fwd(A->x[c->num_layers], A->xf, A->xf_rstd, res.a, res.b, W(m->layout.norm_f), (int)BT, H,
                           (real)c->norm_eps);
    else o->rmsnorm_fwd(A->xf, A->xf_rstd, A->x[0], W(m->layout.norm_f), (int)BT, H, (real)c->norm_eps);
    return 0;
}

/* Checks the input, then embedding -> layers -> final norm (A->xf). */
static int forward_trunk(Model *m, const int *tokens, const int *targets, int B, int T, int keep) {
    if (stage_tokens(m, tokens, targets, B, T)) return -1;
    return trunk_compute(m, keep);
}

/* ---- the generator's prefill (model.h model_prefill) ---- */

/* The activations layer l runs on: layers with the same buffer sizes share
 * one set (every layer but FlowHN's, whose branch sizes follow the plan's
 * counts), so the prefill holds about one layer's activations. */
static LayerActs *prefill_acts(Model *m, int l) {
    int s = 0;
    if (m->cfg.arch == ARCH_FLOWHN)
        while (m->plan.layers[s].na != m->plan.layers[l].na || m->plan.layers[s].ns != m->plan.layers[l].ns) s++;
    return &m->acts->layers[s];
}

/* The prefix keys/values of a FlowHN attention branch that got no query
 * token (no attn_fwd to compute them): as decoder_fwd's prefix path does. */
static int prefix_kv_fwd(Model *m, const DecoderW *w, AttnActs *a, const real *x) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int H = c->hidden_size, kvd = cfg_kv_dim(c), BT = m->B * m->T;
    ENS(a->uk, (size_t)BT * H); ENS(a->uk_rstd, BT); ENS(a->k, (size_t)BT * kvd); ENS(a->v, (size_t)BT * kvd);
    o->rmsnorm_fwd(a->uk, a->uk_rstd, x, W(w->mixer_norm), BT, H, (real)c->norm_eps);
    o->linear_fwd(a->k, a->uk, W(w->attn.k), NULL, BT, H, kvd);
    o->linear_fwd(a->v, a->uk, W(w->attn.v), NULL, BT, H, kvd);
    if (c->use_rope) {
        ENS(a->kr, (size_t)BT * kvd);
        o->rope_fwd(a->kr, a->k, m->iota_dev, m->B, m->T, c->num_kv_heads, c->head_dim, (real)c->rope_theta);
    }
    return 0;
}

/* Hands one mixer's cache-relevant tensors (n tokens; nk keys) to take. */
static int take_mixer(Model *m, int l, int part, MixerKind k, const AttnActs *at, const M1Acts *m1,
                      const M2Acts *m2, int n, int nk, ModelCacheFn take, void *ctx) {
    const Config *c = &m->cfg;
    MixerCache mc = {.n = n};
    if (k == MIXER_ATTN) {
        mc.n = nk;
        mc.k = c->use_rope ? at->kr : at->k;
        mc.v = at->v;
    } else if (k == MIXER_MAMBA1) {   /* hs [B, nc+1, E, S]: slot nc is the state after the last token */
        size_t nc = (n + M1_SCAN_CHUNK - 1) / M1_SCAN_CHUNK;
        mc.C = cfg_E(c);
        mc.conv_in = m1->xm;
        mc.state_n = (size_t)cfg_E(c) * c->d_state;
        mc.state = m1->hs + nc * mc.state_n;
        mc.state_ld = (nc + 1) * mc.state_n;
    } else {                          /* states [B, nc+1, nh, P, N]: the same */
        size_t nc = (n + c->m2_chunk_size - 1) / c->m2_chunk_size;
        mc.C = cfg_m2_E(c) + 2 * c->m2_ngroups * c->m2_d_state;
        mc.conv_in = m2->xbc_pre;
        mc.state_n = (size_t)cfg_m2_E(c) * c->m2_d_state;
        mc.state = m2->states + nc * mc.state_n;
        mc.state_ld = (nc + 1) * mc.state_n;
    }
    return take(ctx, l, part, &mc);
}

/* Layer l's mixers after its forward on x (a: its activations), in the
 * generator's parts: 0 a decoder layer's mixer, 1 attention, 2 the SSM. */
static int take_layer(Model *m, int l, LayerActs *a, const real *x, ModelCacheFn take, void *ctx) {
    const LayerW *w = &m->layout.layers[l];
    int T = m->T;
    if (w->kind == LAYER_DECODER)
        return take_mixer(m, l, 0, w->dec.mixer, &a->dec.at, &a->dec.m1, &a->dec.m2, T, T, take, ctx);
    if (w->kind == LAYER_HYMBA)
        return take_mixer(m, l, 1, MIXER_ATTN, &a->at, NULL, NULL, T, T, take, ctx) ||
               take_mixer(m, l, 2, MIXER_MAMBA1, NULL, &a->m1, NULL, T, T, take, ctx);
    /* FlowHN: each branch's own tokens; prefix context: every token's keys */
    int na = m->plan.layers[l].na, ns = m->plan.layers[l].ns, prefix = m->cfg.context == CONTEXT_PREFIX;
    if (prefix && !na && prefix_kv_fwd(m, &w->attn_branch, &a->ab.at, x)) return -1;
    if ((na || prefix) && take_mixer(m, l, 1, w->attn_branch.mixer, &a->ab.at, &a->ab.m1, &a->ab.m2, na,
                                     prefix ? T : na, take, ctx))
        return -1;
    return ns ? take_mixer(m, l, 2, w->ssm_branch.mixer, &a->sb.at, &a->sb.m1, &a->sb.m2, ns, ns, take, ctx) : 0;
}

int model_prefill(Model *m, const int *tokens, int B, int T, ModelCacheFn take, void *ctx, const real **out) {
    if (stage_tokens(m, tokens, NULL, B, T)) return -1;
    const Config *c = &m->cfg;
    ModelActs *A = m->acts;
    size_t BTH = (size_t)B * T * c->hidden_size;
    m->has_targets = 0;
    m->keep_acts = 0;
    keep_end(m);   /* the prefill's layers write the first layers' buffers: no keep outlives that */
    ENS(A->x[0], BTH); ENS(A->x[1], BTH);   /* the layers' inputs and outputs, in turn */
    m->ops->embedding_fwd(A->x[0], m->tokens_dev, W(m->layout.embed), B * T, c->hidden_size);
    m->prefilling = 1;   /* the caches take the rotated keys: attention with the separate rope passes */
    for (int l = 0; l < c->num_layers; l++) {
        LayerActs *a = prefill_acts(m, l);
        if (layer_fwd(m, l, a, A->x[l & 1], A->x[(l + 1) & 1], NULL, NULL) || take_layer(m, l, a, A->x[l & 1], take, ctx)) {
            m->prefilling = 0;
            return -1;
        }
    }
    m->prefilling = 0;
    *out = A->x[c->num_layers & 1];
    return 0;
}

/* Targets to the backend and the host copy; counts the scored tokens. */
static int set_targets(Model *m, const int *targets, size_t BT) {
    memcpy(m->targets_host, targets, sizeof(int) * BT);
    m->ops->from_host(m->targets_dev, targets, sizeof(int) * BT);
    m->n_valid = 0;
    for (size_t i = 0; i < BT; i++) m->n_valid += targets[i] >= 0;
    return 0;
}

/* m->loss = mean of A->losses over the scored tokens; an error naming the
 * first non-finite parameter tensor if it is not finite. */
static int loss_check(Model *m);
static int mean_loss(Model *m, size_t BT) {
    const Ops *o = m->ops;
    real *losses = malloc(sizeof(real) * BT);
    if (!losses) return fh_error("out of memory");
    o->to_host(losses, m->acts->losses, sizeof(real) * BT);
    double sum = 0;
    for (size_t i = 0; i < BT; i++)
        if (m->targets_host[i] >= 0) sum += losses[i];
    free(losses);
    m->loss = m->n_valid ? sum / m->n_valid : 0;
    return loss_check(m);
}

/* 0 if m->loss is finite, else the error naming the cause */
static int loss_check(Model *m) {
    const Ops *o = m->ops;
    if (!isfinite(m->loss)) {
        /* name the first parameter tensor holding a NaN/Inf, if any */
        for (int i = 0; i < m->layout.n; i++) {
            const ParamEntry *e = &m->layout.entries[i];
            if (!isfinite(o->sum_squares(m->params + e->offset, e->numel)))
                return fh_error("the loss is not finite (%g): parameter %s holds NaN/Inf", m->loss, e->name);
        }
        return fh_error("the loss is not finite (%g): the parameters are finite, so an activation overflowed "
                        "(lower the learning rate or check the data)", m->loss);
    }
    return 0;
}

int model_forward(Model *m, const int *tokens, const int *targets, int B, int T) {
    if (forward_trunk(m, tokens, targets, B, T, 0)) return -1;
    const Ops *o = m->ops;
    ModelActs *A = m->acts;
    int H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    size_t BT = (size_t)B * T;
    ENS(A->logits, BT * V);
    o->linear_fwd(A->logits, A->xf, W(m->layout.lm_head), NULL, (int)BT, H, V);
    m->has_targets = targets != NULL;
    if (!targets) return 0;
    ENS(A->losses, BT); ENS(A->lse, BT);
    set_targets(m, targets, BT);
    o->xent_fwd(A->losses, A->lse, A->logits, m->targets_dev, (int)BT, V);
    return mean_loss(m, BT);
}

static int backward_trunk(Model *m);

int model_backward(Model *m) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    if (!m->acts || !m->has_targets) return fh_error("model_backward needs a forward pass with targets first");
    ModelActs *A = m->acts;
    int B = m->B, T = m->T, H = c->hidden_size, V = c->vocab_size;
    size_t BT = (size_t)B * T;
    ENS(A->dlosses, BT); ENS(A->dlogits, BT * V); ENS(A->dxf, BT * H);
    /* d(mean loss)/d(loss_i) = 1/n_valid for counted tokens */
    real *dl = malloc(sizeof(real) * BT);
    if (!dl) return fh_error("out of memory");
    for (size_t i = 0; i < BT; i++) dl[i] = m->targets_host[i] >= 0 && m->n_valid ? (real)1 / m->n_valid : 0;
    o->from_host(A->dlosses, dl, sizeof(real) * BT);
    free(dl);
    ZERO(A->dlogits, BT * V); REF_ZERO(A->dxf, BT * H);
    o->xent_bwd(A->dlogits, A->dlosses, A->logits, A->lse, m->targets_dev, (int)BT, V);
    lin_bwd(m, A->dxf, G(m->layout.lm_head), NULL, A->dlogits, A->xf, W(m->layout.lm_head), (int)BT, H, V, FIRST);
    return backward_trunk(m);
}

int model_grad_frontiers(const Model *m, size_t *out, int cap) {
    int n = 0, L = m->layout.num_layers;
    if (n < cap) out[n] = m->layout.norm_f;
    n++;
    for (int l = L - 1; l >= 0; l--, n++)
        if (n < cap) out[n] = m->layout.layers[l].begin;
    if (n < cap) out[n] = 0;
    return n + 1;
}

/* Tells the hook that the gradients of [off, total) are final. */
static int grads_ready(Model *m, size_t off) {
    lazy_finish(m, off);
    if (!m->grads_ready || !m->grads_ready(m->grads_ready_ctx, off)) return 0;
    char why[512];   /* copied: fh_error formats into the buffer fh_last_error returns */
    snprintf(why, sizeof why, "%s", fh_last_error());
    return fh_error("after the backward of the tensors from offset %zu: %s", off, why);
}

/* From A->dxf (the gradient at the final norm's output) down to the embedding.
 * The head's gradient is final on entry (it is the last tensor, or the tied
 * embedding, which is the first and is finished last). */
static int backward_trunk(Model *m) {
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    ModelActs *A = m->acts;
    int B = m->B, T = m->T, H = c->hidden_size;
    size_t BT = (size_t)B * T;
    ENS(A->dcur, BT * H);
    REF_ZERO(A->dcur, BT * H);
    o->rmsnorm_bwd(A->dcur, G(m->layout.norm_f), A->dxf, A->x[c->num_layers], W(m->layout.norm_f), A->xf_rstd,
                   (int)BT, H, FIRST);
    if (grads_ready(m, m->layout.norm_f)) return -1;
    for (int l = c->num_layers - 1; l >= 0; l--) {
        const LayerW *w = &m->layout.layers[l];
        int rc;   /* every layer kind works in place: dcur becomes the gradient at the layer's input */
        if (w->kind == LAYER_FLOWHN) rc = flowhn_bwd(m, l, A->dcur);
        else if (w->kind == LAYER_HYMBA) rc = hymba_bwd(m, l, A->x[l], A->dcur);
        else rc = decoder_bwd(m, &w->dec, &A->layers[l].dec, A->dcur, NULL, NULL);
        if (rc) return -1;
        /* layer l writes only its own tensors [begin, next begin) */
        if (grads_ready(m, w->begin)) return -1;
    }
    keep_end(m);   /* every saved input has been read for the last time */
    lazy_fill(m, m->layout.embed, (size_t)c->vocab_size * H);   /* the tied head: written by the classifier */
    o->embedding_bwd(G(m->layout.embed), A->dcur, m->tokens_dev, (int)BT, H);
    return grads_ready(m, 0);
}

/* the classifier's acc: dx [BT, H] is its own (no zeroing before it: overwritten, every row), and its dw overwrites
 * when it is the lazy head's first writer (an N = 0 call writes nothing). FLOWHN_LAZY_HEAD=0: dx zeroed and added
 * into, the head's gradient zeroed by model_zero_grad and added into (the old path). */
static int head_flag(Model *m, real *dx, size_t BT) {
    int first = m->lazy_head ? FIRST : FH_ACC;   /* zero_first (test hook): zeroed and added, as the old path */
    if (first == FH_ACC) ZERO(dx, BT * m->cfg.hidden_size);
    return BT > 0 ? first | dw_flag(m, G(m->layout.lm_head), (size_t)m->cfg.vocab_size * m->cfg.hidden_size) : first;
}

/* The training step's forward and backward with the fused classifier: the
 * head's product, the loss and their gradients are done by chunks of rows
 * inside ops->classifier, so the [B*T, V] logits and their gradients are never
 * stored (at a 50K vocabulary and 8K tokens that is 3.2 GB of fp32 traffic
 * and memory saved per step). Same loss and gradients as model_forward +
 * model_backward (tests/test_fused_head.c); model_logits() is not available
 * after it. */
int model_forward_backward(Model *m, const int *tokens, const int *targets, int B, int T) {
    if (!targets) return fh_error("model_forward_backward needs targets");
    if (!m->ops->classifier) {
        if (model_forward(m, tokens, targets, B, T)) return -1;
        return model_backward(m);
    }
    if (forward_trunk(m, tokens, targets, B, T, 1)) return -1;
    const Ops *o = m->ops;
    ModelActs *A = m->acts;
    int H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    size_t BT = (size_t)B * T;
    ENS(A->losses, BT); ENS(A->dxf, BT * H);
    set_targets(m, targets, BT);
    m->has_targets = 0;  /* no logits to run model_backward from */
    /* d(mean loss)/d(loss_i) = 1/n_valid for counted tokens */
    o->classifier(A->losses, A->dxf, G(m->layout.lm_head), A->xf, W(m->layout.lm_head), m->targets_dev,
                  m->n_valid ? (real)1 / m->n_valid : 0, (int)BT, H, V, head_flag(m, A->dxf, BT));
    if (mean_loss(m, BT)) return -1;
    return backward_trunk(m);
}

/* ---- the training step for graph capture (model.h) ---- */

int model_stage_batch(Model *m, const int *tokens, const int *targets, int B, int T) {
    if (!targets) return fh_error("model_stage_batch needs targets");
    if (!m->ops->classifier || !m->ops->sum_into)
        return fh_error("backend %s has no fused classifier or device sum: use model_forward_backward", m->ops->name);
    if (stage_tokens(m, tokens, targets, B, T)) return -1;
    set_targets(m, targets, (size_t)B * T);
    m->has_targets = 0;  /* no logits to run model_backward from */
    return 0;
}

/* model_forward_backward's work after the host copies, without its readback
 * of the losses in the middle: the loss sum stays on the backend and the
 * backward runs whatever it is (a NaN loss then gives a NaN gradient, which
 * the optimizer's device-side check refuses, as the host check would have). */
int model_step_body(Model *m, double *loss_sum) {
    const Ops *o = m->ops;
    if (!m->acts) return fh_error("model_step_body needs model_stage_batch first");
    ModelActs *A = m->acts;
    int H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    size_t BT = (size_t)m->B * m->T;
    model_zero_grad(m);
    if (trunk_compute(m, 1)) return -1;
    ENS(A->losses, BT); ENS(A->dxf, BT * H);
    o->classifier(A->losses, A->dxf, G(m->layout.lm_head), A->xf, W(m->layout.lm_head), m->targets_dev,
                  m->n_valid ? (real)1 / m->n_valid : 0, (int)BT, H, V, head_flag(m, A->dxf, BT));
    o->sum_into(loss_sum, A->losses, BT, 0);   /* ignored tokens' losses are 0 (ops.h classifier) */
    return backward_trunk(m);
}

int model_step_loss(Model *m, double loss_sum) {
    m->loss = m->n_valid ? loss_sum / m->n_valid : 0;
    return loss_check(m);
}
