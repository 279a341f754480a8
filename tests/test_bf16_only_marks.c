/* test_bf16_only_marks.c - the model's bf16-only marks (model.c bf16_only,
 * ops.h Ops.bf16_only) hold on every architecture, checked on the CPU.
 *
 * The CUDA backend, given a mark, stores only the bf16 rounding of the marked
 * output and serves it to the products that read it; every other reader
 * would read unwritten fp32 memory. Whether the model marks only outputs
 * whose readers are all products (over exactly the marked extent, on the
 * branch that wrote it; a once-mark read once) is a property of model.c, so
 * it is checked here, on every tiny architecture, without a GPU: the ops
 * table below is the CPU's, with bf16_only and keep_bf16 added and the
 * producers and products wrapped as the CUDA backend treats them:
 *   - a marked output whose producer could elide it (the producers the CUDA
 *     backend elides in, overwrite mode; a once = 0 mark only if x was kept,
 *     as only a kept buffer is its home there) is saved aside and its fp32
 *     memory filled with NaN, as FLOWHN_BF16_KEEP_VERIFY does on the GPU;
 *   - linear_fwd / linear_bwd reading exactly such an x (its `in`, or
 *     linear_bwd's `dout`) get the saved values back for the call, if the CUDA
 *     backend would serve them (on the branch that wrote them; a once-mark
 *     only at its first read);
 *   - a once = 2 mark (the gate|up product's output gu, bf16 D on the GPU) is
 *     elided by linear_fwd (no bias, kept) and served only to
 *     swiglu_packed_fwd / _bwd as their gu, any number of times, on its
 *     branch (the emulation checks the readers, not the extra rounding);
 *   - a once = 3 mark (the packed q|k|v product's output qkv, bf16 D on the
 *     GPU) is elided by linear_fwd (no bias) and served only to
 *     attention_rope_fwd (once; if it declines the values stay, as the CUDA
 *     backend writes the fp32 back then) and attention_rope_bwd (as cuDNN's
 *     kept Q | K | V serves it) as their packed q, k, v, on its branch;
 *   - a once = 4 mark (the fused RoPE attention's out, stored only in its
 *     kept buffer on the GPU: cuDNN's O) is elided by attention_rope_fwd
 *     (when it returns 0, kept) and served to products as a once = 0 mark
 *     and to attention_rope_bwd as its `out` (cuDNN reads the kept rounding),
 *     on its branch;
 *   - a once = 5 mark (the attention's d out, the o product's bf16 D on the
 *     GPU) is elided by linear_bwd (its din, overwritten) and served only to
 *     attention_rope_bwd as its `dout`, once (if it declines the values stay,
 *     as the CUDA backend writes the fp32 back then);
 *   - a once = 7 mark (the MLP's d act, the down product's bf16 D on the
 *     GPU) is elided by linear_bwd (its din, overwritten) and served only to
 *     swiglu_packed_bwd as its `dout`, once (it never declines);
 *   - a once = 8 mark (the MLP norm's d out, the gate|up product's bf16 D
 *     on the GPU) likewise, served only to rmsnorm_bwd as its `dout`, once
 *     (its other path gets the fp32 written back: the values stay);
 *   - a once = 9 mark (the attention norm's d out, the q|k|v product's bf16
 *     D on the GPU) likewise: elided by linear_bwd, served only to
 *     rmsnorm_bwd as its `dout`, once (rmsnorm_gather_bwd, a second read or
 *     a product see NaN); counted, and required on LLaMA's fused products;
 *   - a once = 10 mark (a residual branch's output: the o or down product's
 *     output, its bf16 D on the GPU) is elided by linear_fwd (no bias) and
 *     served only to add_rmsnorm_fwd as its a or b, once (if the add writes
 *     its r over x, x holds r after it; else x stays NaN). With round_once
 *     = 10 the saved values are rounded to bf16 (RN), as the product's D:
 *     then the step differs from the CPU's, within bf16 bounds (the marks
 *     are in use: resid_rounding);
 *   - pack_bf16(x, n, ld) (Mamba-2's packed in_proj gradient, ops.h): the
 *     window writers (gated_rmsnorm_bwd's dz, conv1d_silu_bwd's dx, copy_rows'
 *     dst) that write whole column windows of x at its stride, on the pack's
 *     branch, save their window's values as they write them (the CUDA
 *     backend's bf16 copy); a linear_bwd reading exactly (x, n) as its dout on
 *     that branch, once every column was saved, reads the saved values (x's
 *     own are put back after). A write to x between the windows and the
 *     product that the contract forbids makes the product's values differ;
 *   - a pack also marked bf16_only(x, n, 6) (its fp32 read by no one, ops.h):
 *     each window writer in overwrite mode fills its window with NaN after
 *     saving it (the CUDA backend stores only the rounding), and the product
 *     is served even with columns no window saved (as the CUDA backend's
 *     pack_fill: those columns' fp32 as written); any other reader of x, or
 *     one after the product, sees NaN;
 *   - keep_bf16(NULL, 0) ends every mark (the saved values go; x stays NaN)
 *     and every pack.
 * Any other reader, extent, branch or second read sees NaN, which reaches
 * the loss or the gradients. So a step through this table must give the
 * very bits of a step through cpu_ops, and elide something, on every
 * architecture (fused classifier and the model's set_branch calls included:
 * branches are tracked as with FLOWHN_BRANCH_STREAMS=1, the strictest case). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "../src/ops/ops.h"
#include "helpers/tiny.h"
#include "test.h"

typedef struct {
    const real *x;
    size_t n;
    int once, branch, reads;
    real *saved;   /* NULL: not elided (or no longer served) */
} Mark;
#define MAX_MARKS 4096
static Mark marks[MAX_MARKS];
static int nmarks;
typedef struct { const real *x; size_t n; int once; } Pending;
static Pending pend[8];
static int npend;
static const real *kept_x[MAX_MARKS];
static size_t kept_n[MAX_MARKS];
static int nkept, branch_now;
static unsigned long elided, served, elided9;   /* elided9: once = 9 marks elided (the attention norm's d out) */
static unsigned long resid_elided, resid_served;
static int round_once = -1;   /* the marks of this once have their saved values rounded to bf16 (the product's D) */

/* x's bf16 rounding (round to nearest even, as __float2bfloat16_rn; finite x) */
static real bf16_round(real x) {
    float f = (float)x;
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&f, &u, sizeof f);
    return (real)f;
}

/* packs (ops.h pack_bf16), one per branch as the CUDA backend's */
typedef struct {
    const real *x;   /* NULL: none */
    size_t n;
    int ld, rows, ncov;
    int only, elided;   /* marked bf16_only once = 6; a window's fp32 filled with NaN */
    real *saved;     /* [n]: the windows' values as their writers stored them */
    unsigned char *cov;
} Pack;
static Pack packs[8];
static unsigned long packs_served, pack_windows, pack_elided;
static void pack_end(Pack *p) {
    free(p->saved);
    free(p->cov);
    memset(p, 0, sizeof *p);
}
static void mk_only(const real *x, size_t n, int once);
static void mk_pack(const real *x, size_t n, int ld) {
    Pack *p = &packs[branch_now];
    pack_end(p);
    if (!x || !n || ld <= 0 || n % (size_t)ld) return;
    p->saved = malloc(sizeof(real) * n);
    p->cov = calloc((size_t)ld, 1);
    if (!p->saved || !p->cov) { pack_end(p); return; }
    for (size_t i = 0; i < n; i++) p->saved[i] = NAN;
    p->x = x, p->n = n, p->ld = ld, p->rows = (int)(n / (size_t)ld);
}
/* after a window writer stored out's [rows, cols] at stride ld: its values saved, if a window of the pack */
static void pack_window(const real *out, int rows, int cols, int ld, int acc) {
    Pack *p = &packs[branch_now];
    if (!p->x || !out || ld != p->ld || rows != p->rows || cols <= 0 || out < p->x) return;
    size_t off = (size_t)(out - p->x);
    if (off >= (size_t)ld || off + (size_t)cols > (size_t)ld) return;
    for (int r = 0; r < rows; r++)
        memcpy(p->saved + (size_t)r * ld + off, p->x + (size_t)r * ld + off, sizeof(real) * cols);
    for (int c = (int)off; c < (int)off + cols; c++)
        if (!p->cov[c]) p->cov[c] = 1, p->ncov++;
    pack_windows++;
    if (p->only && !acc) {   /* overwritten: the rounding only, no fp32 (cuda_pack_claim_only) */
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) ((real *)p->x)[(size_t)r * ld + off + c] = NAN;
        p->elided = 1;
        pack_elided++;
    }
}
static void mk_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z,
                                 const real *w, const real *rstd, int N, int C, int acc, int ldz) {
    cpu_ops.gated_rmsnorm_bwd(dy, dz, dw, dout, y, z, w, rstd, N, C, acc, ldz);
    pack_window(dz, N, C, ldz, acc);
}
static void mk_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                               const real *b, int B, int n, int C, int K, int acc, int ldx) {
    cpu_ops.conv1d_silu_bwd(dx, dw, db, dout, x, w, b, B, n, C, K, acc, ldx);
    pack_window(dx, B * n, C, ldx, acc);
}
static void mk_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols) {
    cpu_ops.copy_rows(dst, ldd, src, lds, rows, cols);
    pack_window(dst, rows, cols, ldd, 0);
}

static void mk_keep(const real *x, size_t n) {
    if (!x) {   /* every keep and mark ends */
        for (int b = 0; b < 8; b++) pack_end(&packs[b]);
        for (int i = 0; i < nmarks; i++) free(marks[i].saved);
        nmarks = npend = nkept = 0;
        return;
    }
    if (nkept < MAX_MARKS) kept_x[nkept] = x, kept_n[nkept++] = n;
}
static void mk_only(const real *x, size_t n, int once) {
    if (once == 6) {   /* the branch's pack, declared just before: its windows' fp32 may go */
        Pack *p = &packs[branch_now];
        if (p->x == x && p->n == n && !p->ncov) p->only = 1;
        return;
    }
    if (npend < 8) pend[npend++] = (Pending){x, n, once};
}
static void mk_branch(int b) { branch_now = b; }

/* the marks a product elides (its bf16 D: linear.cu gu_d16, qkv_d16, datt_d16, dact_d16); the others an op's
 * output */
static int product_mark(int once) { return once == 2 || once == 3 || once == 5 || once >= 7; }
/* after a producer wrote out[0, n): elide it if marked and it has a home (as cuda_shadow_claim_only; a
 * product's output, once = 2, as linear.cu gu_d16: only a product, no bias, kept) */
static void produced_by(real *out, size_t n, int can, int product) {
    for (int i = 0; i < npend; i++) {
        if (pend[i].x != out || pend[i].n != n) continue;
        int once = pend[i].once;
        pend[i] = pend[--npend];   /* a mark serves its producer once */
        int kept = 0;
        for (int k = 0; k < nkept; k++) kept |= kept_x[k] == out && kept_n[k] == n;
        if (product_mark(once) != product) return;   /* each kind has its own producers */
        if (!can || !(kept || once == 1 || once == 5 || once >= 7) || nmarks == MAX_MARKS) return;
        real *s = malloc(sizeof(real) * n);
        if (!s) return;
        memcpy(s, out, sizeof(real) * n);
        if (once == round_once)
            for (size_t j = 0; j < n; j++) s[j] = bf16_round(s[j]);
        if (once == 10) resid_elided++;
        for (size_t j = 0; j < n; j++) out[j] = NAN;
        marks[nmarks++] = (Mark){out, n, once >= 2 ? once : once && !kept, branch_now, 0, s};   /* 4: kept only */
        elided++;
        elided9 += once == 9;
        return;
    }
}
static void produced(real *out, size_t n, int can) { produced_by(out, n, can, 0); }
/* a product (kind 0), swiglu_packed_* (kind 2: its gu) or the fused RoPE attention (kind 3: its packed q, k,
 * v) reads x[0, n): the saved values if the CUDA backend would serve them (products: once 0, 1 marks; the
 * others: their own once = 2, 3 marks only); returns the mark restored */
static int kind_of(int once) { return once >= 2 ? once : 0; }
/* kind 4 (attention_rope_bwd's out) and products (kind 0) are both served a once = 4 mark */
static int serves(int once, int kind) { return kind_of(once) == kind || (once == 4 && kind == 0); }
/* kind 10: add_rmsnorm_fwd's a or b (a once = 10 mark) */
static Mark *restore_by(const real *x, size_t n, int kind) {
    for (int i = 0; i < nmarks; i++) {
        Mark *m = &marks[i];
        if (m->x != x || m->n != n || !m->saved || !serves(m->once, kind)) continue;
        if (m->branch != branch_now) return NULL;   /* kept roundings and shadows serve their own branch only */
        memcpy((real *)x, m->saved, sizeof(real) * n);
        served++;
        return m;
    }
    return NULL;
}
static Mark *restore(const real *x, size_t n) { return restore_by(x, n, 0); }
static void repoison(Mark *m) {
    if (!m) return;
    for (size_t j = 0; j < m->n; j++) ((real *)m->x)[j] = NAN;
    if (m->once == 1 || m->once == 5 || m->once >= 7) {   /* read once: nothing serves it again */
        free(m->saved);
        m->saved = NULL;
    }
}

static void mk_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps) {
    cpu_ops.rmsnorm_fwd(out, rstd, x, w, N, C, eps);
    produced(out, (size_t)N * C, 1);
}
/* a once = 10 mark read as the add's a or b (as the CUDA add reads the product's bf16 D), once; an operand the
 * add writes its r over keeps r */
static void resid_read_done(Mark *m, const real *r) {
    if (!m) return;
    resid_served++;
    if (m->x != r) {
        repoison(m);
        return;
    }
    free(m->saved);
    m->saved = NULL;
}
static void mk_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N,
                               int C, real eps) {
    size_t n = (size_t)N * C;
    Mark *ma = restore_by(a, n, 10), *mb = b != a ? restore_by(b, n, 10) : NULL;
    cpu_ops.add_rmsnorm_fwd(r, out, rstd, a, b, w, N, C, eps);
    resid_read_done(ma, r);
    resid_read_done(mb, r);
    produced(out, n, 1);
}
static void mk_rmsnorm_gather_fwd(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w,
                                  int B, int T, int n_sel, int C, real eps) {
    cpu_ops.rmsnorm_gather_fwd(xsel, out, rstd, x, idx, w, B, T, n_sel, C, eps);
    produced(out, (size_t)B * n_sel * C, 1);
}
static void mk_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w, const real *rstd,
                           int N, int C, int acc) {
    /* as its row kernel reads the gate|up product's bf16 D (once = 8) or the q|k|v product's (once = 9) */
    Mark *md = restore_by(dout, (size_t)N * C, 8);
    if (!md) md = restore_by(dout, (size_t)N * C, 9);
    cpu_ops.rmsnorm_bwd(dx, dw, dout, x, w, rstd, N, C, acc);
    repoison(md);
}
static void mk_swiglu_fwd(real *out, const real *g, const real *u, size_t n) {
    cpu_ops.swiglu_fwd(out, g, u, n);
    produced(out, n, 1);
}
static void mk_swiglu_packed_fwd(real *out, const real *gu, int N, int C) {
    Mark *mg = restore_by(gu, 2 * (size_t)N * C, 2);
    cpu_ops.swiglu_packed_fwd(out, gu, N, C);
    repoison(mg);
    produced(out, (size_t)N * C, 1);
}
static void mk_swiglu_bwd(real *dg, real *du, const real *dout, const real *g, const real *u, size_t n, int acc) {
    cpu_ops.swiglu_bwd(dg, du, dout, g, u, n, acc);
    int can = !acc && dg != du;
    if (dg) produced(dg, n, can);
    if (du) produced(du, n, can);
}
static void mk_swiglu_packed_bwd(real *dgu, const real *dout, const real *gu, int N, int C, int acc) {
    Mark *mg = restore_by(gu, 2 * (size_t)N * C, 2);
    Mark *md = restore_by(dout, (size_t)N * C, 7);   /* as it reads the down product's bf16 D (d act) */
    cpu_ops.swiglu_packed_bwd(dgu, dout, gu, N, C, acc);
    repoison(mg);
    repoison(md);
    produced(dgu, 2 * (size_t)N * C, !acc);
}
/* the attention backward writing dq | dk | dv packed in one [rows, P] buffer, overwritten (the CUDA backend's
 * cuDNN path elides it then: attention_cudnn_bwd) */
static void attn_produced(real *dq, const real *dk, const real *dv, int B, int nq, int nh, int nkv, int hd, int acc,
                          int ldq, int ldkv) {
    int qd = nh * hd, kvd = nkv * hd, P = qd + 2 * kvd;
    int packed = dq && dk == dq + qd && dv == dk + kvd && ldq == P && ldkv == P;
    if (dq) produced(dq, (size_t)B * nq * P, packed && !acc);
}
static void mk_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                             const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                             int nq, int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv) {
    cpu_ops.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, acc, ldq, ldkv);
    attn_produced(dq, dk, dv, B, nq, nh, nkv, hd, acc, ldq, ldkv);
}
/* the packed q | k | v (a once = 3 mark: the whole [rows, ldq] buffer at q) read by the fused RoPE attention */
static int mk_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                                 const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                                 int ldkv) {
    Mark *mq = restore_by(q, (size_t)B * nq * ldq, 3);
    int rc = cpu_ops.attention_rope_fwd(out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd, theta, ldq, ldkv);
    if (mq && rc) {   /* declined: the CUDA backend writes the fp32 back (the values stay), the mark is done */
        free(mq->saved);
        mq->saved = NULL;
    } else repoison(mq);
    produced(out, (size_t)B * nq * nh * hd, rc == 0);   /* a once = 4 mark: out into its kept buffer only */
    return rc;
}
static int mk_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                                 const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                                 int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv) {
    Mark *mq = restore_by(q, (size_t)B * nq * ldq, 3);   /* as cuDNN's kept Q | K | V serves it */
    size_t no = (size_t)B * nq * nh * hd;
    Mark *mo = restore_by(out, no, 4);    /* as cuDNN reads out's kept rounding */
    Mark *md = restore_by(dout, no, 5);   /* as cuDNN reads the o product's bf16 D as dO */
    int rc = cpu_ops.attention_rope_bwd(dq, dk, dv, dout, out, lse, q, k, v, qpos, kpos, B, nq, nk, nh, nkv, hd,
                                        theta, acc, ldq, ldkv);
    repoison(mq);
    repoison(mo);
    if (md && rc) {   /* declined: the CUDA backend writes d out's fp32 back (the values stay), the mark is done */
        free(md->saved);
        md->saved = NULL;
    } else repoison(md);
    if (rc == 0) attn_produced(dq, dk, dv, B, nq, nh, nkv, hd, acc, ldq, ldkv);
    return rc;
}
static void mk_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC) {
    Mark *m = restore(in, (size_t)N * IC);
    cpu_ops.linear_fwd(out, in, w, b, N, IC, OC);
    repoison(m);
    produced_by(out, (size_t)N * OC, b == NULL, 1);   /* a once = 2 mark: the bf16 D (gu) */
}
static void mk_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in, const real *w, int N,
                          int IC, int OC, int acc) {
    Mark *md = restore(dout, (size_t)N * OC);
    Mark *mi = in != dout ? restore(in, (size_t)N * IC) : NULL;
    /* dout a complete pack of this branch: the product reads the windows' saved values */
    Pack *p = &packs[branch_now];
    real *held = NULL;
    if (p->x && p->x == dout && p->n == (size_t)N * OC && p->elided && p->ncov != p->ld) {
        /* an elided pack with columns no window saved (their writers wrote fp32): those columns as written */
        for (int c = 0; c < p->ld; c++)
            if (!p->cov[c]) {
                for (int r = 0; r < p->rows; r++) p->saved[(size_t)r * p->ld + c] = dout[(size_t)r * p->ld + c];
                p->cov[c] = 1, p->ncov++;
            }
    }
    if (p->x && p->x == dout && p->n == (size_t)N * OC && p->ncov == p->ld && (held = malloc(sizeof(real) * p->n))) {
        memcpy(held, dout, sizeof(real) * p->n);
        memcpy((real *)dout, p->saved, sizeof(real) * p->n);
        packs_served++;
    }
    cpu_ops.linear_bwd(din, dw, db, dout, in, w, N, IC, OC, acc);
    if (held) {
        memcpy((real *)dout, held, sizeof(real) * p->n);
        free(held);
    }
    repoison(md);
    repoison(mi);
    /* a once = 5 or 7 mark: the bf16 D (d out, d act), din overwritten (FH_DW_OVERWRITE is dw's: as linear.cu) */
    if (din) produced_by(din, (size_t)N * IC, !(acc & FH_ACC), 1);
}

static Ops marks_ops;

static int step(Model *m, const int *tok, const int *tgt, int B, int T) {
    model_zero_grad(m);
    return model_forward_backward(m, tok, tgt, B, T);
}

/* unfused_split (FlowHN): the split's gathers as separate ops (Model.unfused_split), so the attention branch's
 * first norm is rmsnorm_bwd on the branch's own du and its d out is marked once = 9 (isolated context) */
static void marks_hold(const TinySpec *s, int B, int T, int unfused_proj, int unfused_split) {
    Config c = tiny_config(s);
    if (T > c.max_seq_len) c.max_seq_len = T;
    int V = c.vocab_size;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    tiny_batch(tok, tgt, B, T, V, 3);
    Model ref, m;
    int ok = !model_create(&ref, &c, &cpu_ops) && !model_init_params(&ref, 7) && !model_create(&m, &c, &marks_ops) &&
             !model_init_params(&m, 7);
    CHECK(ok, "%s: %s", s->name, fh_last_error());
    ref.unfused_proj = m.unfused_proj = unfused_proj;
    ref.unfused_split = m.unfused_split = unfused_split;
    unsigned long e0 = elided, s0 = served, p0 = packs_served, q0 = pack_elided, n90 = elided9, r0 = resid_elided,
                  r1 = resid_served;
    for (int st = 0; ok && st < 2; st++) {
        ok = !step(&ref, tok, tgt, B, T) && !step(&m, tok, tgt, B, T);
        CHECK(ok, "%s: %s", s->name, fh_last_error());
        if (!ok) break;
        CHECK(ref.loss == m.loss, "%s step %d: loss %.9g vs %.9g with bf16-only marks (NaN: a reader the marks "
              "missed)", s->name, st, ref.loss, m.loss);
        size_t d = 0, first = 0;
        for (size_t i = 0; i < ref.layout.total; i++)
            if (memcmp(&ref.grads[i], &m.grads[i], sizeof(real))) {
                if (!d) first = i;
                d++;
            }
        const char *where = "";
        for (int t = 0; d && t < ref.layout.n; t++)
            if (first >= ref.layout.entries[t].offset) where = ref.layout.entries[t].name;
        CHECK(d == 0, "%s step %d: %zu gradients differ with bf16-only marks, the first in %s", s->name, st, d,
              where);
        tiny_batch(tok, tgt, B, T, V, 4 + st);
    }
    CHECK(elided > e0, "%s: nothing was marked and elided", s->name);
    /* LLaMA with fused products: every layer's attention norm d out (once = 9) elided, each step */
    if (c.arch == ARCH_LLAMA && !unfused_proj)
        CHECK(elided9 - n90 == 2 * (unsigned long)c.num_layers, "%s: %lu attention norm d outs elided (once = 9), "
              "%d expected", s->name, elided9 - n90, 2 * c.num_layers);
    /* FlowHN with its gathers separate, isolated context, fused products: the attention branch's too */
    if (c.arch == ARCH_FLOWHN && unfused_split && !unfused_proj && c.context != CONTEXT_PREFIX)
        CHECK(elided9 > n90, "%s: no attention norm d out elided with the split's gathers unfused", s->name);
    /* Mamba-2 (its in_proj packed, the default): every layer's packed gradient served from its windows */
    if (c.arch == ARCH_MAMBA2 && !m.unfused_inproj)
    {
        CHECK(packs_served > p0, "%s: no in_proj backward product served its packed gradient (pack_bf16)", s->name);
        CHECK(pack_elided > q0, "%s: no packed gradient window's fp32 elided (bf16_only once = 6)", s->name);
    }
    /* the residual branch outputs (once = 10): every o and down product of llama, the down products of Hymba */
    if (c.arch == ARCH_LLAMA || c.arch == ARCH_HYMBA)
        CHECK(resid_elided > r0 && resid_served - r1 == resid_elided - r0,
              "%s: %lu residual branch outputs elided, %lu read by their add", s->name, resid_elided - r0,
              resid_served - r1);
    if (ok) printf("  %-22s B=%d T=%d %s: %lu outputs elided (%lu residual branches), %lu product reads served, %lu "
                   "packs served (%lu windows without fp32; %lu attention norm d outs), same bits\n", s->name, B, T,
                   unfused_proj ? "separate products" : unfused_split ? "split unfused    " : "fused products   ",
                   elided - e0, resid_elided - r0, served - s0, packs_served - p0, pack_elided - q0, elided9 - n90);
    model_free(&ref);
    model_free(&m);
    free(tok);
    free(tgt);
}

static void every_architecture(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    for (int i = 0; i < n_tiny_specs; i++) {
        marks_hold(&tiny_specs[i], 2, 24, 0, 0);
        marks_hold(&tiny_specs[i], 2, 24, 1, 0);
        if (tiny_config(&tiny_specs[i]).arch == ARCH_FLOWHN) marks_hold(&tiny_specs[i], 2, 24, 0, 1);
    }
}

/* the emulation can fail: a non-product reading a marked output sees NaN */
static void emulation_detects(void) {
    {   /* a pack: two windows tiling [2, 4] at stride 4 serve the product; a write between them and the product
         * (which the contract forbids) shows in its result */
        real px[8] = {0}, src[8] = {1, 2, 3, 4, 5, 6, 7, 8}, wq[4] = {1, -2, 3, 0.5f}, uin[2] = {1, 2}, dw1[4] = {0}, dw2[4] = {0};
        mk_pack(px, 8, 4);
        mk_copy_rows(px, 4, src, 4, 2, 3);
        mk_copy_rows(px + 3, 4, src + 3, 4, 2, 1);
        unsigned long s0 = packs_served;
        mk_linear_bwd(NULL, dw1, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);   /* dW [4, 1] = px^T uin */
        cpu_ops.linear_bwd(NULL, dw2, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        CHECK(packs_served == s0 + 1 && !memcmp(dw1, dw2, sizeof dw1), "a complete pack is served, the same values");
        px[5] = 100;   /* a write the windows did not make */
        mk_linear_bwd(NULL, dw1, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        cpu_ops.linear_bwd(NULL, dw2, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        CHECK(memcmp(dw1, dw2, sizeof dw1) != 0, "a write to a pack outside its windows changes the product");
        mk_keep(NULL, 0);
        mk_pack(px, 8, 4);
        mk_copy_rows(px, 4, src, 4, 2, 3);   /* column 3 never written by a window: not served */
        s0 = packs_served;
        mk_linear_bwd(NULL, dw1, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        CHECK(packs_served == s0, "an incomplete pack is not served");
        mk_keep(NULL, 0);
        /* marked bf16-only (once = 6): the windows' fp32 is NaN, the product is served the saved values; a
         * column written by a writer that cannot round (its fp32 as written) is taken into the pack there */
        mk_pack(px, 8, 4);
        mk_only(px, 8, 6);
        mk_copy_rows(px, 4, src, 4, 2, 3);
        CHECK(px[0] != px[0] && px[6] != px[6], "an elided pack's window holds NaN");
        px[3] = src[3], px[7] = src[7];   /* column 3 written in fp32 (a writer that cannot round) */
        s0 = packs_served;
        memset(dw1, 0, sizeof dw1);   /* dW accumulates (FH_OVERWRITE is din's mode) */
        memset(dw2, 0, sizeof dw2);
        mk_linear_bwd(NULL, dw1, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        cpu_ops.linear_bwd(NULL, dw2, NULL, src, uin, wq, 2, 1, 4, FH_OVERWRITE);
        CHECK(packs_served == s0 + 1 && !memcmp(dw1, dw2, sizeof dw1),
              "an elided pack with a column written in fp32 is served, the same values");
        memset(dw2, 0, sizeof dw2);
        cpu_ops.linear_bwd(NULL, dw2, NULL, px, uin, wq, 2, 1, 4, FH_OVERWRITE);
        CHECK(dw2[0] != dw2[0], "a reader of an elided pack's fp32 (not its product) sees NaN");
        mk_keep(NULL, 0);
    }
    real x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1}, out[4] = {0}, rstd[1], y[1];   /* {0}: for gcc */
    mk_keep(out, 4);
    mk_only(out, 4, 0);
    mk_rmsnorm_fwd(out, rstd, x, w, 1, 4, 1e-5f);
    CHECK(out[0] != out[0], "the elided output holds NaN");
    mk_linear_fwd(y, out, w, NULL, 1, 4, 1);
    CHECK(y[0] == y[0], "a product reading it is served");
    cpu_ops.add(y, out, out, 1);
    CHECK(y[0] != y[0], "any other reader sees NaN");
    mk_keep(NULL, 0);
    /* once = 2: a product's output read by swiglu_packed_* only */
    real gu[4], act[2], z[1];
    mk_keep(gu, 4);
    mk_only(gu, 4, 2);
    mk_linear_fwd(gu, x, x, NULL, 4, 1, 1);   /* gu[i] = x[i] * x[0]: 4 rows, one column */
    CHECK(gu[0] != gu[0], "the product's once = 2 output holds NaN");
    mk_swiglu_packed_fwd(act, gu, 1, 2);
    CHECK(act[0] == act[0] && act[1] == act[1], "swiglu_packed_fwd reading it is served");
    mk_linear_fwd(z, gu, w, NULL, 1, 4, 1);
    CHECK(z[0] != z[0], "a product reading it sees NaN");
    mk_keep(NULL, 0);
    /* once = 3: a product's output read by the fused RoPE attention only */
    mk_keep(gu, 4);
    mk_only(gu, 4, 3);
    mk_linear_fwd(gu, x, x, NULL, 4, 1, 1);
    CHECK(gu[0] != gu[0], "the product's once = 3 output holds NaN");
    mk_swiglu_packed_fwd(act, gu, 1, 2);
    CHECK(act[0] != act[0], "swiglu_packed_fwd reading a once = 3 output sees NaN");
    mk_linear_fwd(z, gu, w, NULL, 1, 4, 1);
    CHECK(z[0] != z[0], "a product reading a once = 3 output sees NaN");
    mk_keep(NULL, 0);
    /* once = 4: the fused attention's out, read by products and by the attention backward only (B 1, two
     * positions, one head of 2: every tensor [2, 2]) */
    {
        int pos[2] = {0, 1};
        real q2[4] = {0.5f, -1, 0.25f, 2}, k2[4] = {1, 2, -0.5f, 1}, v2[4] = {3, 4, -1, 0.5f}, o2[4], l2[2];
        real d2[4] = {1, -1, 0.5f, 2}, g[12];
        mk_keep(o2, 4);
        mk_only(o2, 4, 4);
        CHECK(mk_attention_rope_fwd(o2, l2, q2, k2, v2, pos, pos, 1, 2, 2, 1, 1, 2, 10000.f, 2, 2) == 0,
              "the attention forward ran");
        CHECK(o2[0] != o2[0], "the attention's once = 4 out holds NaN");
        mk_linear_fwd(y, o2, w, NULL, 1, 4, 1);
        CHECK(y[0] == y[0], "a product reading it is served");
        CHECK(mk_attention_rope_bwd(g, g + 4, g + 8, d2, o2, l2, q2, k2, v2, pos, pos, 1, 2, 2, 1, 1, 2, 10000.f,
                                    FH_OVERWRITE, 2, 2) == 0 && g[0] == g[0] && g[8] == g[8],
              "the attention backward reading it is served");
        cpu_ops.add(y, o2, o2, 1);
        CHECK(y[0] != y[0], "any other reader of a once = 4 output sees NaN");
        mk_keep(NULL, 0);
        /* once = 5: a product's din read by the attention backward only, once */
        real dd[4], wo[2] = {1, -1}, go[2] = {1, 0.5f}, o3[4] = {0.1f, 0.2f, 0.3f, -0.1f};
        mk_only(dd, 4, 5);
        mk_linear_bwd(dd, NULL, NULL, go, NULL, wo, 2, 2, 1, FH_OVERWRITE);   /* din [2, 2] = go [2, 1] wo [1, 2] */
        CHECK(dd[0] != dd[0], "the product's once = 5 din holds NaN");
        CHECK(mk_attention_rope_bwd(g, g + 4, g + 8, dd, o3, l2, q2, k2, v2, pos, pos, 1, 2, 2, 1, 1, 2, 10000.f,
                                    FH_OVERWRITE, 2, 2) == 0 && g[0] == g[0] && g[8] == g[8],
              "the attention backward reading it as dout is served");
        mk_linear_fwd(z, dd, w, NULL, 1, 4, 1);
        CHECK(z[0] != z[0], "a product (or a second read) of a once = 5 output sees NaN");
        mk_keep(NULL, 0);
        /* once = 7: a product's din read by swiglu_packed_bwd only, once */
        real da[4], gu4[8] = {0.5f, -1, 2, 0.25f, 1, 2, -0.5f, 3}, dgu[8];
        mk_only(da, 4, 7);
        mk_linear_bwd(da, NULL, NULL, go, NULL, wo, 2, 2, 1, FH_OVERWRITE);   /* d act [2, 2] */
        CHECK(da[0] != da[0], "the product's once = 7 din holds NaN");
        mk_swiglu_packed_bwd(dgu, da, gu4, 2, 2, FH_OVERWRITE);
        CHECK(dgu[0] == dgu[0] && dgu[7] == dgu[7], "swiglu_packed_bwd reading it as dout is served");
        mk_swiglu_packed_bwd(dgu, da, gu4, 2, 2, FH_OVERWRITE);
        CHECK(dgu[0] != dgu[0], "a second read of a once = 7 output sees NaN");
        mk_linear_fwd(z, da, w, NULL, 1, 4, 1);
        CHECK(z[0] != z[0], "a product reading a once = 7 output sees NaN");
        mk_keep(NULL, 0);
        /* once = 8: a product's din read by rmsnorm_bwd only, once */
        real xr[4] = {1, -2, 0.5f, 3}, wr[2] = {1, 0.5f}, rs[2] = {0.7f, 0.4f}, dxr[4], dwr[2] = {0, 0};
        mk_only(da, 4, 8);
        mk_linear_bwd(da, NULL, NULL, go, NULL, wo, 2, 2, 1, FH_OVERWRITE);
        CHECK(da[0] != da[0], "the product's once = 8 din holds NaN");
        mk_rmsnorm_bwd(dxr, dwr, da, xr, wr, rs, 2, 2, FH_OVERWRITE);
        CHECK(dxr[0] == dxr[0] && dwr[1] == dwr[1], "rmsnorm_bwd reading it as dout is served");
        mk_rmsnorm_bwd(dxr, dwr, da, xr, wr, rs, 2, 2, FH_OVERWRITE);
        CHECK(dxr[0] != dxr[0], "a second read of a once = 8 output sees NaN");
        mk_keep(NULL, 0);
        /* once = 9: the same for the attention norm's d out; rmsnorm_gather_bwd (the fused split's norm backward,
         * never handed it by model.c) and a product are not served */
        mk_only(da, 4, 9);
        mk_linear_bwd(da, NULL, NULL, go, NULL, wo, 2, 2, 1, FH_OVERWRITE);
        CHECK(da[0] != da[0], "the product's once = 9 din holds NaN");
        dwr[0] = dwr[1] = 0;
        mk_rmsnorm_bwd(dxr, dwr, da, xr, wr, rs, 2, 2, FH_OVERWRITE);
        CHECK(dxr[0] == dxr[0] && dxr[3] == dxr[3] && dwr[1] == dwr[1], "rmsnorm_bwd reading a once = 9 dout is "
              "served");
        mk_rmsnorm_bwd(dxr, dwr, da, xr, wr, rs, 2, 2, FH_OVERWRITE);
        CHECK(dxr[0] != dxr[0], "a second read of a once = 9 output sees NaN");
        mk_keep(NULL, 0);
        mk_only(da, 4, 9);
        mk_linear_bwd(da, NULL, NULL, go, NULL, wo, 2, 2, 1, FH_OVERWRITE);
        {
            int idx[2] = {1, 0};
            real dfull[4] = {0}, dres[4] = {0};
            dwr[0] = dwr[1] = 0;
            cpu_ops.rmsnorm_gather_bwd(dfull, dwr, dres, da, xr, wr, rs, idx, 1, 2, 2, 2);
            CHECK(dfull[0] != dfull[0], "rmsnorm_gather_bwd reading a once = 9 output sees NaN");
        }
        mk_linear_fwd(z, da, w, NULL, 1, 4, 1);
        CHECK(z[0] != z[0], "a product reading a once = 9 output sees NaN");
        mk_keep(NULL, 0);
    }
    {   /* once = 10: a product's output read by one add_rmsnorm_fwd only, as its b, or as its a with r over it */
        real br[4], ra[4] = {1, -1, 2, 0.5f}, hr[4], on[4], rsd[2], wn[2] = {1, 2}, z1[1], wl[2] = {1, -1};
        real xin[4] = {0.5f, 1, -2, 0.25f}, one[1] = {1};
        mk_only(br, 4, 10);
        mk_linear_fwd(br, xin, one, NULL, 4, 1, 1);   /* br = xin (4 rows, one column) */
        CHECK(br[0] != br[0], "the product's once = 10 output holds NaN");
        mk_add_rmsnorm_fwd(hr, on, rsd, ra, br, wn, 2, 2, 1e-5f);
        CHECK(hr[0] == ra[0] + xin[0] && on[3] == on[3], "add_rmsnorm_fwd reading it as b is served");
        CHECK(br[0] != br[0], "after its add the once = 10 output holds NaN");
        mk_add_rmsnorm_fwd(hr, on, rsd, ra, br, wn, 2, 2, 1e-5f);
        CHECK(hr[0] != hr[0], "a second read of a once = 10 output sees NaN");
        mk_only(br, 4, 10);
        mk_linear_fwd(br, xin, one, NULL, 4, 1, 1);
        mk_linear_fwd(z1, br, wl, NULL, 2, 2, 1);
        CHECK(z1[0] != z1[0], "a product reading a once = 10 output sees NaN");
        mk_rmsnorm_fwd(on, rsd, br, wn, 2, 2, 1e-5f);
        CHECK(on[0] != on[0], "a norm (not the add) reading a once = 10 output sees NaN");
        mk_keep(NULL, 0);
        mk_only(br, 4, 10);
        mk_linear_fwd(br, xin, one, NULL, 4, 1, 1);
        mk_add_rmsnorm_fwd(br, on, rsd, br, ra, wn, 2, 2, 1e-5f);   /* in place over a: br = br + ra */
        CHECK(br[0] == xin[0] + ra[0] && br[3] == xin[3] + ra[3], "the add in place over its a holds r after it");
        mk_only(br, 4, 10);
        mk_linear_fwd(br, xin, one, NULL, 4, 1, 1);
        mk_branch(1);
        mk_add_rmsnorm_fwd(hr, on, rsd, ra, br, wn, 2, 2, 1e-5f);
        mk_branch(0);
        CHECK(hr[0] != hr[0], "an add on another branch than the product's sees NaN");
        mk_keep(NULL, 0);
    }
}

/* with the once = 10 outputs rounded to bf16 as the CUDA product's D, a step differs from the CPU's (the marks
 * are in use) within bf16 bounds; every other architecture's marks stay exact (checked above) */
static void resid_rounding(void) {
    const TinySpec *s = NULL;
    for (int i = 0; i < n_tiny_specs; i++)
        if (tiny_specs[i].arch == ARCH_LLAMA) s = &tiny_specs[i];
    CHECK(s != NULL, "a tiny llama");
    if (!s) return;
    Config c = tiny_config(s);
    int B = 2, T = 24, V = c.vocab_size;
    if (T > c.max_seq_len) c.max_seq_len = T;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    tiny_batch(tok, tgt, B, T, V, 3);
    Model ref, m;
    int ok = !model_create(&ref, &c, &cpu_ops) && !model_init_params(&ref, 7) && !model_create(&m, &c, &marks_ops) &&
             !model_init_params(&m, 7);
    CHECK(ok, "%s", fh_last_error());
    round_once = 10;
    unsigned long r0 = resid_elided;
    ok = ok && !step(&ref, tok, tgt, B, T) && !step(&m, tok, tgt, B, T);
    round_once = -1;
    CHECK(ok, "%s", fh_last_error());
    if (ok) {
        double dg = 0, ng = 0;
        size_t d = 0;
        for (size_t i = 0; i < ref.layout.total; i++) {
            double e = (double)m.grads[i] - ref.grads[i];
            dg += e * e;
            ng += (double)ref.grads[i] * ref.grads[i];
            d += memcmp(&ref.grads[i], &m.grads[i], sizeof(real)) != 0;
        }
        double rl = fabs((double)m.loss - ref.loss) / fabs((double)ref.loss), rg = sqrt(dg / (ng > 0 ? ng : 1));
        CHECK(resid_elided > r0, "residual branch outputs elided (%lu)", resid_elided - r0);
        CHECK(m.loss != ref.loss && d > 0, "the rounded branch outputs change the step (loss %.9g vs %.9g, %zu "
              "gradients differ)", m.loss, ref.loss, d);
        CHECK(rl < 1e-2 && rg < 1e-2, "within bf16 bounds: loss rel %.3g, gradients rel %.3g", rl, rg);
        printf("  llama: %lu residual branches rounded to bf16: loss rel %.3g, %zu of %zu gradients differ (rel "
               "%.3g)\n", resid_elided - r0, rl, d, ref.layout.total, rg);
    }
    model_free(&ref);
    model_free(&m);
    free(tok);
    free(tgt);
}

int main(void) {
    marks_ops = cpu_ops;
    marks_ops.keep_bf16 = mk_keep;
    marks_ops.bf16_only = mk_only;
    marks_ops.set_branch = mk_branch;
    marks_ops.rmsnorm_fwd = mk_rmsnorm_fwd;
    marks_ops.add_rmsnorm_fwd = mk_add_rmsnorm_fwd;
    marks_ops.rmsnorm_gather_fwd = mk_rmsnorm_gather_fwd;
    marks_ops.swiglu_fwd = mk_swiglu_fwd;
    marks_ops.rmsnorm_bwd = mk_rmsnorm_bwd;
    marks_ops.swiglu_packed_fwd = mk_swiglu_packed_fwd;
    marks_ops.swiglu_bwd = mk_swiglu_bwd;
    marks_ops.swiglu_packed_bwd = mk_swiglu_packed_bwd;
    marks_ops.attention_bwd = mk_attention_bwd;
    marks_ops.attention_rope_fwd = mk_attention_rope_fwd;
    marks_ops.attention_rope_bwd = mk_attention_rope_bwd;
    marks_ops.linear_fwd = mk_linear_fwd;
    marks_ops.linear_bwd = mk_linear_bwd;
    marks_ops.pack_bf16 = mk_pack;
    marks_ops.gated_rmsnorm_bwd = mk_gated_rmsnorm_bwd;
    marks_ops.conv1d_silu_bwd = mk_conv1d_silu_bwd;
    marks_ops.copy_rows = mk_copy_rows;
    RUN(emulation_detects);
    RUN(every_architecture);
    RUN(resid_rounding);
    TEST_SUMMARY();
}
