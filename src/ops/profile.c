/* profile.c - the timed op table of profile.h. */
#include "profile.h"

#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

/* the op kinds timed, in table order; the X-macro keeps the names and ids in step */
#define TIMED_OPS(X)                                                                                               \
    X(zero) X(zero_runs) X(to_host) X(from_host) X(add) X(accumulate) X(embedding_fwd) X(embedding_bwd) X(rmsnorm_fwd)         \
    X(rmsnorm_bwd) X(add_rmsnorm_fwd) X(linear_fwd) X(linear_bwd) X(swiglu_fwd) X(swiglu_bwd) X(silu_fwd) X(silu_bwd) X(rope_fwd)    \
    X(rope_bwd) X(attention_fwd) X(attention_bwd) X(conv1d_fwd) X(conv1d_bwd) X(conv1d_silu_fwd) X(conv1d_silu_bwd) X(selective_scan_fwd) \
    X(selective_scan_bwd) X(ssd_fwd) X(ssd_bwd) X(gated_rmsnorm_fwd) X(gated_rmsnorm_bwd) X(gather_fwd)           \
    X(gather_bwd) X(scatter_fwd) X(scatter_bwd) X(xent_fwd) X(xent_bwd) X(classifier) X(selective_scan_step)      \
    X(ssd_step) X(adamw) X(sum_squares) X(copy_rows) X(conv1d_step) X(attention_decode) X(copy_rows_at)           \
    X(attention_decode_at) X(sum_into) X(step_scale) X(adamw_step) X(adamw_runs) X(attention_rope_fwd)           \
    X(attention_rope_bwd) X(rmsnorm_gather_fwd) X(rmsnorm_gather_bwd) X(swiglu_packed_fwd) X(swiglu_packed_bwd)

enum {
#define ID(n) OP_##n,
    TIMED_OPS(ID)
#undef ID
        N_OPS
};
static const char *op_names[N_OPS] = {
#define NAME(n) #n,
    TIMED_OPS(NAME)
#undef NAME
};

typedef struct { int op, mark; double flops; } Span;   /* marks[mark] .. marks[mark + 1] */

struct OpProfile {
    const Backend *be;
    Ops ops;
    void **marks;        /* the pool; the first `used` are recorded since the last collect */
    int used, cap;
    Span *spans;
    int n_spans, span_cap;
    int failed;          /* out of memory while recording: the next collect says so */
    int on;              /* marks recorded (else the wrappers only forward) */
    long calls[N_OPS];
    double ms[N_OPS], flops[N_OPS];
    int steps;
};

static OpProfile *active;   /* the wrappers' profile */
#define B (active->be->ops)

/* Records the op's first mark; its index, or -1 when out of memory. */
static int span_begin(void) {
    OpProfile *p = active;
    if (p->used + 2 > p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        void **m = realloc(p->marks, sizeof(void *) * cap);
        if (!m) { p->failed = 1; return -1; }
        p->marks = m;
        for (; p->cap < cap; p->cap++)
            if (!(p->marks[p->cap] = p->be->mark_new())) { p->failed = 1; return -1; }
    }
    p->be->mark_record(p->marks[p->used]);
    return p->used++;
}

static void span_end(int op, int mark, double flops) {
    OpProfile *p = active;
    if (mark < 0) return;
    p->be->mark_record(p->marks[p->used++]);
    if (p->n_spans == p->span_cap) {
        int cap = p->span_cap ? 2 * p->span_cap : 256;
        Span *s = realloc(p->spans, sizeof(Span) * cap);
        if (!s) { p->failed = 1; return; }
        p->spans = s;
        p->span_cap = cap;
    }
    p->spans[p->n_spans++] = (Span){op, mark, flops};
}

/* one wrapper per op: the call between two marks, with its FLOPs */
#define TIMED(name, flops, call)                                                                                  \
    do {                                                                                                          \
        if (!active->on) {                                                                                        \
            call;                                                                                                 \
            break;                                                                                                \
        }                                                                                                         \
        int m_ = span_begin();                                                                                    \
        call;                                                                                                     \
        span_end(OP_##name, m_, flops);                                                                           \
    } while (0)

static void w_zero(void *p, size_t n) { TIMED(zero, 0, B->zero(p, n)); }
static void w_zero_runs(real *p, size_t span, const size_t *r, int n) { TIMED(zero_runs, 0, B->zero_runs(p, span, r, n)); }
static void w_to_host(void *d, const void *s, size_t n) { TIMED(to_host, 0, B->to_host(d, s, n)); }
static void w_from_host(void *d, const void *s, size_t n) { TIMED(from_host, 0, B->from_host(d, s, n)); }
static void w_add(real *o, const real *a, const real *b, size_t n) { TIMED(add, 0, B->add(o, a, b, n)); }
static void w_accumulate(real *d, const real *s, real al, size_t n) { TIMED(accumulate, 0, B->accumulate(d, s, al, n)); }
static void w_embedding_fwd(real *o, const int *t, const real *w, int N, int C) {
    TIMED(embedding_fwd, 0, B->embedding_fwd(o, t, w, N, C));
}
static void w_embedding_bwd(real *d, const real *g, const int *t, int N, int C) {
    TIMED(embedding_bwd, 0, B->embedding_bwd(d, g, t, N, C));
}
static void w_rmsnorm_fwd(real *o, real *r, const real *x, const real *w, int N, int C, real e) {
    TIMED(rmsnorm_fwd, 0, B->rmsnorm_fwd(o, r, x, w, N, C, e));
}
static void w_rmsnorm_bwd(real *dx, real *dw, const real *g, const real *x, const real *w, const real *r, int N,
                          int C, int acc) {
    TIMED(rmsnorm_bwd, 0, B->rmsnorm_bwd(dx, dw, g, x, w, r, N, C, acc));
}
static void w_add_rmsnorm_fwd(real *s, real *o, real *r, const real *a, const real *b, const real *w, int N, int C,
                              real e) {
    TIMED(add_rmsnorm_fwd, 0, B->add_rmsnorm_fwd(s, o, r, a, b, w, N, C, e));
}
static void w_linear_fwd(real *o, const real *in, const real *w, const real *b, int N, int IC, int OC) {
    TIMED(linear_fwd, 2.0 * N * IC * OC, B->linear_fwd(o, in, w, b, N, IC, OC));
}
static void w_linear_bwd(real *din, real *dw, real *db, const real *g, const real *in, const real *w, int N, int IC,
                         int OC, int acc) {
    TIMED(linear_bwd, 2.0 * N * IC * OC * ((din != NULL) + (dw != NULL)),
          B->linear_bwd(din, dw, db, g, in, w, N, IC, OC, acc));
}
static void w_swiglu_fwd(real *o, const real *g, const real *u, size_t n) { TIMED(swiglu_fwd, 0, B->swiglu_fwd(o, g, u, n)); }
static void w_swiglu_bwd(real *dg, real *du, const real *d, const real *g, const real *u, size_t n, int acc) {
    TIMED(swiglu_bwd, 0, B->swiglu_bwd(dg, du, d, g, u, n, acc));
}
static void w_silu_fwd(real *o, const real *x, size_t n) { TIMED(silu_fwd, 0, B->silu_fwd(o, x, n)); }
static void w_silu_bwd(real *dx, const real *d, const real *x, size_t n, int acc) {
    TIMED(silu_bwd, 0, B->silu_bwd(dx, d, x, n, acc));
}
static void w_rope_fwd(real *o, const real *x, const int *pos, int Bn, int n, int nh, int hd, real th) {
    TIMED(rope_fwd, 0, B->rope_fwd(o, x, pos, Bn, n, nh, hd, th));
}
static void w_rope_bwd(real *dx, const real *d, const int *pos, int Bn, int n, int nh, int hd, real th, int acc) {
    TIMED(rope_bwd, 0, B->rope_bwd(dx, d, pos, Bn, n, nh, hd, th, acc));
}
/* causal self-attention's forward FLOPs (2 products of hd per visible key); 0 when the keys are not the queries */
static double attn_flops(int Bn, int nq, int nk, int nh, int hd) {
    return nq == nk ? 4.0 * hd * nh * Bn * ((double)nq * (nq + 1) / 2) : 0;
}
static void w_attention_fwd(real *o, real *lse, const real *q, const real *k, const real *v, const int *qp,
                            const int *kp, int Bn, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv) {
    TIMED(attention_fwd, attn_flops(Bn, nq, nk, nh, hd),
          B->attention_fwd(o, lse, q, k, v, qp, kp, Bn, nq, nk, nh, nkv, hd, ldq, ldkv));
}
/* an op that declines (returns 1, ops.h) ran nothing: its span is timed anyway (near zero) */
static int w_attention_rope_fwd(real *o, real *lse, const real *q, const real *k, const real *v, const int *qp,
                                const int *kp, int Bn, int nq, int nk, int nh, int nkv, int hd, real th, int ldq,
                                int ldkv) {
    int r = 0;
    TIMED(attention_rope_fwd, attn_flops(Bn, nq, nk, nh, hd),
          r = B->attention_rope_fwd(o, lse, q, k, v, qp, kp, Bn, nq, nk, nh, nkv, hd, th, ldq, ldkv));
    return r;
}
static int w_attention_rope_bwd(real *dq, real *dk, real *dv, const real *d, const real *o, const real *lse,
                                const real *q, const real *k, const real *v, const int *qp, const int *kp, int Bn,
                                int nq, int nk, int nh, int nkv, int hd, real th, int acc, int ldq, int ldkv) {
    int r = 0;
    TIMED(attention_rope_bwd, 2 * attn_flops(Bn, nq, nk, nh, hd),
          r = B->attention_rope_bwd(dq, dk, dv, d, o, lse, q, k, v, qp, kp, Bn, nq, nk, nh, nkv, hd, th, acc, ldq, ldkv));
    return r;
}
static void w_attention_bwd(real *dq, real *dk, real *dv, const real *d, const real *o, const real *lse,
                            const real *q, const real *k, const real *v, const int *qp, const int *kp, int Bn, int nq,
                            int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv) {
    TIMED(attention_bwd, 2 * attn_flops(Bn, nq, nk, nh, hd),
          B->attention_bwd(dq, dk, dv, d, o, lse, q, k, v, qp, kp, Bn, nq, nk, nh, nkv, hd, acc, ldq, ldkv));
}
static void w_conv1d_fwd(real *o, const real *x, const real *w, const real *b, int Bn, int n, int C, int K) {
    TIMED(conv1d_fwd, 0, B->conv1d_fwd(o, x, w, b, Bn, n, C, K));
}
static void w_conv1d_bwd(real *dx, real *dw, real *db, const real *d, const real *x, const real *w, int Bn, int n,
                         int C, int K, int acc) {
    TIMED(conv1d_bwd, 0, B->conv1d_bwd(dx, dw, db, d, x, w, Bn, n, C, K, acc));
}
static void w_conv1d_silu_fwd(real *o, const real *x, const real *w, const real *b, int Bn, int n, int C, int K,
                              int ldx) {
    TIMED(conv1d_silu_fwd, 0, B->conv1d_silu_fwd(o, x, w, b, Bn, n, C, K, ldx));
}
static void w_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *d, const real *x, const real *w, const real *b,
                              int Bn, int n, int C, int K, int acc, int ldx) {
    TIMED(conv1d_silu_bwd, 0, B->conv1d_silu_bwd(dx, dw, db, d, x, w, b, Bn, n, C, K, acc, ldx));
}
static void w_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt, const real *A, const real *Bm,
                                 const real *Cm, const real *D, const real *z, int Bn, int n, int E, int S, int L) {
    TIMED(selective_scan_fwd, 0, B->selective_scan_fwd(y, hs, x, dt, A, Bm, Cm, D, z, Bn, n, E, S, L));
}
static void w_selective_scan_bwd(real *dx, real *ddt, real *dA, real *dB, real *dC, real *dD, real *dz,
                                 const real *dy, const real *hs, const real *x, const real *dt, const real *A,
                                 const real *Bm, const real *Cm, const real *D, const real *z, int Bn, int n, int E,
                                 int S, int L, int acc) {
    TIMED(selective_scan_bwd, 0,
          B->selective_scan_bwd(dx, ddt, dA, dB, dC, dD, dz, dy, hs, x, dt, A, Bm, Cm, D, z, Bn, n, E, S, L, acc));
}
static void w_ssd_fwd(real *y, real *st, const real *xbc, const real *dt, const real *dtb, const real *A, const real *D,
                      int Bn, int n, int nh, int P, int G, int N, int L) {
    TIMED(ssd_fwd, 0, B->ssd_fwd(y, st, xbc, dt, dtb, A, D, Bn, n, nh, P, G, N, L));
}
static void w_ssd_bwd(real *dxbc, real *ddt, real *ddtb, real *dA, real *dD, const real *dy, const real *st,
                      const real *xbc, const real *dt, const real *dtb, const real *A, const real *D, int Bn, int n,
                      int nh, int P, int G, int N, int L, int acc) {
    TIMED(ssd_bwd, 0, B->ssd_bwd(dxbc, ddt, ddtb, dA, dD, dy, st, xbc, dt, dtb, A, D, Bn, n, nh, P, G, N, L, acc));
}
static void w_gated_rmsnorm_fwd(real *o, real *r, const real *y, const real *z, const real *w, int N, int C, real e,
                                int ldz) {
    TIMED(gated_rmsnorm_fwd, 0, B->gated_rmsnorm_fwd(o, r, y, z, w, N, C, e, ldz));
}
static void w_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *d, const real *y, const real *z,
                                const real *w, const real *r, int N, int C, int acc, int ldz) {
    TIMED(gated_rmsnorm_bwd, 0, B->gated_rmsnorm_bwd(dy, dz, dw, d, y, z, w, r, N, C, acc, ldz));
}
static void w_gather_fwd(real *o, const real *in, const int *idx, int Bn, int T, int ns, int C, int ld, int c0) {
    TIMED(gather_fwd, 0, B->gather_fwd(o, in, idx, Bn, T, ns, C, ld, c0));
}
static void w_gather_bwd(real *din, const real *d, const int *idx, int Bn, int T, int ns, int C, int ld, int c0) {
    TIMED(gather_bwd, 0, B->gather_bwd(din, d, idx, Bn, T, ns, C, ld, c0));
}
static void w_scatter_fwd(real *o, const real *in, const int *idx, int Bn, int T, int ns, int C, int ld, int c0) {
    TIMED(scatter_fwd, 0, B->scatter_fwd(o, in, idx, Bn, T, ns, C, ld, c0));
}
static void w_scatter_bwd(real *din, const real *d, const int *idx, int Bn, int T, int ns, int C, int ld, int c0,
                          int acc) {
    TIMED(scatter_bwd, 0, B->scatter_bwd(din, d, idx, Bn, T, ns, C, ld, c0, acc));
}
static void w_rmsnorm_gather_fwd(real *xs, real *o, real *r, const real *x, const int *idx, const real *w, int Bn,
                                 int T, int ns, int C, real e) {
    TIMED(rmsnorm_gather_fwd, 0, B->rmsnorm_gather_fwd(xs, o, r, x, idx, w, Bn, T, ns, C, e));
}
static void w_rmsnorm_gather_bwd(real *df, real *dw, const real *dres, const real *d, const real *x, const real *w,
                                 const real *r, const int *idx, int Bn, int T, int ns, int C) {
    TIMED(rmsnorm_gather_bwd, 0, B->rmsnorm_gather_bwd(df, dw, dres, d, x, w, r, idx, Bn, T, ns, C));
}
static void w_swiglu_packed_fwd(real *o, const real *gu, int N, int C) {
    TIMED(swiglu_packed_fwd, 0, B->swiglu_packed_fwd(o, gu, N, C));
}
static void w_swiglu_packed_bwd(real *dgu, const real *d, const real *gu, int N, int C, int acc) {
    TIMED(swiglu_packed_bwd, 0, B->swiglu_packed_bwd(dgu, d, gu, N, C, acc));
}
static void w_xent_fwd(real *loss, real *lse, const real *lg, const int *t, int N, int V) {
    TIMED(xent_fwd, 0, B->xent_fwd(loss, lse, lg, t, N, V));
}
static void w_xent_bwd(real *dl, const real *d, const real *lg, const real *lse, const int *t, int N, int V) {
    TIMED(xent_bwd, 0, B->xent_bwd(dl, d, lg, lse, t, N, V));
}
/* the head's forward and, inside the same call, its backward (dx when asked, dw) */
static void w_classifier(real *loss, real *dx, real *dw, const real *x, const real *w, const int *t, real sc, int N,
                         int H, int V, int acc) {
    TIMED(classifier, 2.0 * N * H * V * (1 + (dx != NULL) + (dw != NULL)),
          B->classifier(loss, dx, dw, x, w, t, sc, N, H, V, acc));
}
static void w_selective_scan_step(real *y, real *h, const real *x, const real *dt, const real *A, const real *Bm,
                                  const real *Cm, const real *D, const real *z, int Bn, int E, int S) {
    TIMED(selective_scan_step, 0, B->selective_scan_step(y, h, x, dt, A, Bm, Cm, D, z, Bn, E, S));
}
static void w_ssd_step(real *y, real *h, const real *xbc, const real *dt, const real *dtb, const real *A,
                       const real *D, int Bn, int nh, int P, int G, int N) {
    TIMED(ssd_step, 0, B->ssd_step(y, h, xbc, dt, dtb, A, D, Bn, nh, P, G, N));
}
static void w_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real b1, real b2, real eps, real wd,
                    real gs, int step) {
    TIMED(adamw, 0, B->adamw(p, g, m, v, n, lr, b1, b2, eps, wd, gs, step));
}
static double w_sum_squares(const real *x, size_t n) {
    double r;
    TIMED(sum_squares, 0, r = B->sum_squares(x, n));
    return r;
}
static void w_copy_rows(real *d, int ldd, const real *s, int lds, int rows, int cols) {
    TIMED(copy_rows, 0, B->copy_rows(d, ldd, s, lds, rows, cols));
}
static void w_conv1d_step(real *o, real *win, const real *x, const real *w, const real *b, int Bn, int C, int K) {
    TIMED(conv1d_step, 0, B->conv1d_step(o, win, x, w, b, Bn, C, K));
}
static void w_attention_decode(real *o, const real *q, const real *k, const real *v, int Bn, int nk, int ld, int nh,
                               int nkv, int hd) {
    TIMED(attention_decode, 0, B->attention_decode(o, q, k, v, Bn, nk, ld, nh, nkv, hd));
}
static void w_copy_rows_at(real *d, int ldd, const real *s, int rows, int cols, const int *pos) {
    TIMED(copy_rows_at, 0, B->copy_rows_at(d, ldd, s, rows, cols, pos));
}
static void w_attention_decode_at(real *o, const real *q, const real *k, const real *v, int Bn, const int *pos,
                                  int ld, int nh, int nkv, int hd) {
    TIMED(attention_decode_at, 0, B->attention_decode_at(o, q, k, v, Bn, pos, ld, nh, nkv, hd));
}
static void w_sum_into(double *o, const real *x, size_t n, int sq) { TIMED(sum_into, 0, B->sum_into(o, x, n, sq)); }
static void w_step_scale(StepScalars *s) { TIMED(step_scale, 0, B->step_scale(s)); }
static void w_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real b1, real b2,
                         real eps, real wd) {
    TIMED(adamw_step, 0, B->adamw_step(p, g, m, v, n, s, b1, b2, eps, wd));
}

static void w_adamw_runs(real *p, const real *g, real *m, real *v, size_t n, int nr, const size_t *bo,
                         const unsigned char *de, const StepScalars *s, real lr, real b1, real b2, real eps, real wd,
                         real gs, int step) {
    TIMED(adamw_runs, 0, B->adamw_runs(p, g, m, v, n, nr, bo, de, s, lr, b1, b2, eps, wd, gs, step));
}

OpProfile *op_profile_create(const Backend *be) {
    if (!be->mark_new || !be->mark_record || !be->mark_ms || !be->mark_free) {
        fh_error("the %s backend has no timing marks: it cannot be profiled op by op", be->name);
        return NULL;
    }
    if (active) {
        fh_error("another op profile is active (one at a time)");
        return NULL;
    }
    OpProfile *p = calloc(1, sizeof *p);
    if (!p) { fh_error("out of memory"); return NULL; }
    p->be = be;
    const Ops *b = be->ops;
    Ops *o = &p->ops;
    *o = *b;   /* memory, set_branch, freeze_weights and train_weights pass through untimed */
    o->graph_begin = NULL;   /* every op launched and timed: no graphs */
    o->graph_end = NULL;
    o->graph_launch = NULL;
    o->graph_free = NULL;
    /* a wrapper only where the backend has the op (optional ops stay NULL) */
#define WRAP(n) o->n = b->n ? w_##n : NULL;
    TIMED_OPS(WRAP)
#undef WRAP
    active = p;
    return p;
}

const Ops *op_profile_ops(OpProfile *p) { return &p->ops; }

void op_profile_enable(OpProfile *p, int on) { p->on = on; }

void op_profile_reset(OpProfile *p) {
    p->used = p->n_spans = p->steps = 0;
    memset(p->calls, 0, sizeof p->calls);
    memset(p->ms, 0, sizeof p->ms);
    memset(p->flops, 0, sizeof p->flops);
}

int op_profile_collect(OpProfile *p) {
    if (p->failed) {
        p->failed = 0;
        p->used = p->n_spans = 0;
        return fh_error("op profile: out of memory for its marks (spans of this step dropped)");
    }
    for (int i = 0; i < p->n_spans; i++) {
        const Span *s = &p->spans[i];
        double ms = p->be->mark_ms(p->marks[s->mark], p->marks[s->mark + 1]);
        if (ms < 0) return -1;
        p->calls[s->op]++;
        p->ms[s->op] += ms;
        p->flops[s->op] += s->flops;
    }
    p->used = p->n_spans = 0;
    p->steps++;
    return 0;
}

static int by_time(const void *a, const void *b) {
    double x = ((const OpProfileRow *)a)->ms, y = ((const OpProfileRow *)b)->ms;
    return (x < y) - (x > y);
}

int op_profile_rows(const OpProfile *p, OpProfileRow *rows, int cap, int *steps) {
    OpProfileRow all[N_OPS];
    int n = 0;
    for (int i = 0; i < N_OPS; i++)
        if (p->calls[i]) all[n++] = (OpProfileRow){op_names[i], p->calls[i], p->ms[i], p->flops[i]};
    qsort(all, n, sizeof *all, by_time);
    memcpy(rows, all, sizeof *all * (n < cap ? n : cap));
    *steps = p->steps;
    return n;
}

void op_profile_print(const OpProfile *p, FILE *f, double step_ms) {
    OpProfileRow rows[N_OPS];
    int steps, n = op_profile_rows(p, rows, N_OPS, &steps);
    if (!steps) { fprintf(f, "op profile: no step collected\n"); return; }
    double total = 0;
    for (int i = 0; i < n; i++) total += rows[i].ms;
    fprintf(f, "op profile, per step (%d steps; each op's span between two marks on the %s backend):\n\n", steps,
            p->be->name);
    fprintf(f, "| op | calls | ms | %% of ops | %% of the step | model TFLOP/s |\n|---|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const OpProfileRow *r = &rows[i];
        char step_share[32] = "-", tf[32] = "-";
        if (step_ms > 0) snprintf(step_share, sizeof step_share, "%.1f%%", 100 * r->ms / steps / step_ms);
        if (r->flops > 0 && r->ms > 0) snprintf(tf, sizeof tf, "%.3g", r->flops / (r->ms * 1e-3) / 1e12);
        fprintf(f, "| %s | %.0f | %.3f | %.1f%% | %s | %s |\n", r->name, (double)r->calls / steps, r->ms / steps,
                total > 0 ? 100 * r->ms / total : 0, step_share, tf);
    }
    char all_share[32] = "-";
    if (step_ms > 0) snprintf(all_share, sizeof all_share, "%.1f%%", 100 * total / steps / step_ms);
    fprintf(f, "| all ops | | %.3f | 100%% | %s | |\n", total / steps, all_share);
    if (step_ms > 0)
        fprintf(f, "\nThe ops' spans add up to %s of the unprofiled step (%.3f ms); below 100%%, the rest is gaps "
                   "between ops (launches, host work) that no span covers.\n",
                all_share, step_ms);
}

void op_profile_free(OpProfile *p) {
    if (!p) return;
    for (int i = 0; i < p->cap; i++)
        if (p->marks[i]) p->be->mark_free(p->marks[i]);
    free(p->marks);
    free(p->spans);
    if (active == p) active = NULL;
    free(p);
}
