/* generate.c - incremental decoding (see generate.h). The per-token blocks
 * mirror model.c's forward blocks with n = 1 and explicit state. Everything
 * runs through the Ops table on the backend's memory (the KV-cache append,
 * the conv window and the cache attention are ops too), so the same code
 * decodes on the CPU and on the GPU; the host only sends the token ids and
 * the position, reads back the logits, and keeps FlowHN's routing (a
 * property of the position, decided by the split plan). */
#include "generate.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

typedef struct {
    real *K, *V;        /* [B, W, kvd]: rows [0, count) hold the cached keys/values */
    int count;          /* the same for every sequence; the host advances it after each step */
    int *row;           /* backend int: count as staged for the running step (the row this step's
                         * token is written to; keys 0..row visible), read by copy_rows_at and
                         * attention_decode_at, so a recorded step serves any count */
} KVCache;

typedef struct {
    real *win;          /* [B, K, C]: the last K conv inputs, oldest first (zeros before the first) */
    real *h;            /* Mamba-1 [B, E, S]; Mamba-2 [B, nh, P, N] */
} SsmState;

typedef struct {
    KVCache kv;         /* attention mixer */
    SsmState ssm;       /* mamba mixer */
} MixerState;

typedef struct {
    MixerState dec, attn, ssm;   /* decoder layer; FlowHN branches / Hymba mixers */
    char *in_attn;               /* FlowHN: [W] 1 if the position goes to attention */
} LayerState;

/* A routing pattern's recording: seen once (its first step runs eagerly: lazy
 * allocations and plans happen outside a recording), then recorded, then replayed. */
#define GRAPH_SLOTS 8
typedef struct {
    uint64_t key;             /* bit l: layer l routes to attention (FlowHN with a split) */
    int state;                /* 0 free, 1 seen once (record next), 2 recorded */
    void *graph;
    unsigned long used;
} GraphSlot;

struct Generator {
    Model *m;
    int B, W, t;
    LayerState *layers;
    void **allocs;
    int n_allocs;
    /* scratch, [B, ...] */
    real *x, *x2, *u, *rstd, *uk, *q, *k, *v, *qr, *kr, *att, *mix, *h, *hn, *g, *up, *act, *y, *z, *zn, *tmp;
    real *xm, *zm, *conv, *xc, *dtr, *br, *cr, *dtn, *bn, *cn, *dtraw, *ys;
    real *logits;
    int *tok_dev, *pos_dev;   /* [B] token ids, [1] the position (RoPE), [n_caches] the caches' rows:
                               * one buffer, one copy per step */
    int *tok_host;            /* [B + 1 + n_caches] staging for that copy */
    KVCache **caches;         /* [n_caches] every KV cache, in the staging order */
    int n_caches;
    int frozen;               /* the parameters are frozen (Ops.freeze_weights) while we live */
    int fuse;                 /* use the backend's fused decode ops (ops.h) where it has them; off with
                               * FLOWHN_DECODE_FUSE=0 (the same values: A/B timing, tests) */
    /* the step recorded as a graph and replayed (ops graph_*). The caches' rows
     * and the position are read on the device, so one recording serves every
     * position that runs the same ops: one per routing pattern (FlowHN with a
     * split: which branch each layer gives the position; one pattern for every
     * other architecture), up to GRAPH_SLOTS, the least recently used replaced */
    int graphs;               /* record and replay */
    GraphSlot slots[GRAPH_SLOTS];
    unsigned long clock;      /* for least recently used */
};

#define P(off) (g->m->params + (off))

static real *galloc(Generator *g, size_t n) {
    void **a = realloc(g->allocs, sizeof(void *) * (g->n_allocs + 1));
    if (!a) return NULL;
    g->allocs = a;
    real *p = g->m->ops->alloc(sizeof(real) * (n ? n : 1));
    if (p) g->allocs[g->n_allocs++] = p;
    return p;
}

void generator_free(Generator *g) {
    if (!g) return;
    for (int i = 0; i < GRAPH_SLOTS; i++)
        if (g->slots[i].graph) g->m->ops->graph_free(g->slots[i].graph);
    if (g->frozen) g->m->ops->freeze_weights(NULL, 0);
    for (int i = 0; i < g->n_allocs; i++) g->m->ops->release(g->allocs[i]);
    free(g->allocs);
    free(g->tok_host);
    free(g->caches);
    if (g->layers)
        for (int l = 0; l < g->m->cfg.num_layers; l++) free(g->layers[l].in_attn);
    free(g->layers);
    free(g);
}

int generator_position(const Generator *g) { return g->t; }

int generator_routes_to_attention(const Generator *g, int l, int t) {
    const Config *c = &g->m->cfg;
    if (c->arch != ARCH_FLOWHN || c->split == SPLIT_NONE || l < 0 || l >= c->num_layers || t < 0 || t >= g->W ||
        !g->layers[l].in_attn)
        return -1;
    return g->layers[l].in_attn[t];
}

size_t generator_step_params(const Generator *g, int t) {
    const Config *c = &g->m->cfg;
    const ParamLayout *L = &g->m->layout;
    size_t H = c->hidden_size, n = L->total;
    if (!c->tie_embeddings) n -= (size_t)c->vocab_size * H - (size_t)g->B * H;
    for (int l = 0; l < c->num_layers; l++) {
        int r = generator_routes_to_attention(g, l, t);
        if (r < 0) continue;
        /* layout.c lays a FlowHN layer out as attn_branch, ssm_branch, fuse, ... */
        const LayerW *w = &L->layers[l];
        size_t attn = w->ssm_branch.mixer_norm - w->attn_branch.mixer_norm, ssm = w->fuse - w->ssm_branch.mixer_norm;
        if (r) n -= ssm;
        else n -= attn - (c->context == CONTEXT_PREFIX ? H + 2 * (size_t)cfg_kv_dim(c) * H : 0);
    }
    return n;
}

int generator_set_graphs(Generator *g, int on) {
    const Ops *o = g->m->ops;
    const Config *c = &g->m->cfg;
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (g->slots[i].graph) o->graph_free(g->slots[i].graph);
        memset(&g->slots[i], 0, sizeof g->slots[i]);
    }
    /* FlowHN with a split: one recording per routing pattern (at most 64 layers in a key); on unless
     * FLOWHN_SPLIT_DECODE_GRAPH=0 (tests/cuda/test_cuda_decode ran it on the H200, session 5) */
    const char *split_env = getenv("FLOWHN_SPLIT_DECODE_GRAPH");
    int split = c->arch == ARCH_FLOWHN && c->split != SPLIT_NONE;
    g->graphs = on && o->graph_begin && (!split || (!(split_env && !strcmp(split_env, "0")) && c->num_layers <= 64));
    return g->graphs;
}
const real *generator_logits(const Generator *g) { return g->logits; }

static int mixer_state_init(Generator *g, MixerState *s, MixerKind kind) {
    const Config *c = &g->m->cfg;
    int B = g->B, W = g->W;
    if (kind == MIXER_ATTN) {
        s->kv.K = galloc(g, (size_t)B * W * cfg_kv_dim(c));
        s->kv.V = galloc(g, (size_t)B * W * cfg_kv_dim(c));
        return s->kv.K && s->kv.V ? 0 : fh_error("out of memory for the KV cache");
    }
    if (kind == MIXER_MAMBA1) {
        s->ssm.win = galloc(g, (size_t)B * c->d_conv * cfg_E(c));
        s->ssm.h = galloc(g, (size_t)B * cfg_E(c) * c->d_state);
    } else {
        int CX = cfg_m2_E(c) + 2 * c->m2_ngroups * c->m2_d_state;
        s->ssm.win = galloc(g, (size_t)B * c->d_conv * CX);
        s->ssm.h = galloc(g, (size_t)B * cfg_m2_E(c) * c->m2_d_state);
    }
    return s->ssm.win && s->ssm.h ? 0 : fh_error("out of memory for the SSM state");
}

Generator *generator_create(Model *m, int B) {
    const Config *c = &m->cfg;
    if (!m->ops->copy_rows || !m->ops->conv1d_step || !m->ops->copy_rows_at || !m->ops->attention_decode_at) {
        fh_error("backend %s lacks the decoding ops (copy_rows, conv1d_step, copy_rows_at, attention_decode_at)",
                 m->ops->name);
        return NULL;
    }
    Generator *g = calloc(1, sizeof *g);
    if (!g) { fh_error("out of memory"); return NULL; }
    g->m = m;
    g->B = B;
    g->W = m->plan_len > 0 ? m->plan_len : c->max_seq_len;
    if (g->W > c->max_seq_len) g->W = c->max_seq_len;
    g->layers = calloc(c->num_layers, sizeof(LayerState));
    if (!g->layers) goto oom;
    int H = c->hidden_size, I = c->intermediate_size, qd = c->num_heads * c->head_dim;
    int E = cfg_E(c) > cfg_m2_E(c) ? cfg_E(c) : cfg_m2_E(c);
    int CX = cfg_m2_E(c) + 2 * c->m2_ngroups * c->m2_d_state;
    int wide = E + CX + cfg_m2_heads(c) + 2 * H + qd + I + c->dt_rank + 2 * c->d_state;
    size_t BW = (size_t)B * wide;
    real **bufs[] = {&g->x, &g->x2, &g->u, &g->uk, &g->q, &g->k, &g->v, &g->qr, &g->kr, &g->att, &g->mix, &g->h,
                     &g->hn, &g->g, &g->up, &g->act, &g->y, &g->z, &g->zn, &g->tmp, &g->xm, &g->zm, &g->xc,
                     &g->dtr, &g->br, &g->cr, &g->dtn, &g->bn, &g->cn, &g->dtraw, &g->ys};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = galloc(g, BW))) goto oom;
    if (!(g->rstd = galloc(g, B)) || !(g->conv = galloc(g, (size_t)B * (CX > E ? CX : E))) ||
        !(g->logits = galloc(g, (size_t)B * c->vocab_size)))
        goto oom;
    SplitPlan plan = {0};
    if (c->arch == ARCH_FLOWHN && split_plan_build(&plan, c, g->W, model_split_na(c, g->W))) { generator_free(g); return NULL; }
    for (int l = 0; l < c->num_layers; l++) {
        const LayerW *w = &m->layout.layers[l];
        LayerState *s = &g->layers[l];
        int rc = 0;
        if (w->kind == LAYER_DECODER) rc = mixer_state_init(g, &s->dec, w->dec.mixer);
        else {
            rc = mixer_state_init(g, &s->attn, MIXER_ATTN) || mixer_state_init(g, &s->ssm, MIXER_MAMBA1);
            if (!rc && w->kind == LAYER_FLOWHN) {
                s->in_attn = calloc(g->W, 1);
                if (!s->in_attn) rc = fh_error("out of memory");
                else for (int i = 0; i < plan.layers[l].na; i++) s->in_attn[plan.layers[l].pa[i]] = 1;
            }
        }
        if (rc) { split_plan_free(&plan); generator_free(g); return NULL; }
    }
    if (c->arch == ARCH_FLOWHN) split_plan_free(&plan);
    /* the token ids, the position and every KV cache's row: staged together, one copy a step */
    g->caches = calloc(2 * (size_t)c->num_layers, sizeof(KVCache *));
    if (!g->caches) goto oom;
    for (int l = 0; l < c->num_layers; l++) {
        KVCache *kv[2] = {&g->layers[l].dec.kv, &g->layers[l].attn.kv};
        for (int i = 0; i < 2; i++)
            if (kv[i]->K) g->caches[g->n_caches++] = kv[i];
    }
    g->tok_dev = (int *)galloc(g, (size_t)B + 1 + g->n_caches);   /* sizeof(real) >= sizeof(int) */
    g->tok_host = malloc(sizeof(int) * ((size_t)B + 1 + g->n_caches));
    if (!g->tok_dev || !g->tok_host) goto oom;
    g->pos_dev = g->tok_dev + B;
    for (int i = 0; i < g->n_caches; i++) g->caches[i]->row = g->tok_dev + B + 1 + i;
    /* decoding never writes the weights: let the backend convert them once
     * (failing that, it converts per product as in training) */
    if (m->ops->freeze_weights) g->frozen = m->ops->freeze_weights(m->params, m->layout.total) == 0;
    const char *fe = getenv("FLOWHN_DECODE_FUSE");
    g->fuse = !(fe && !strcmp(fe, "0"));
    const char *ng = getenv("FLOWHN_NO_GRAPH");
    generator_set_graphs(g, !(ng && !strcmp(ng, "1")));
    return g;
oom:
    fh_error("out of memory creating the generator");
    generator_free(g);
    return NULL;
}

/* ---- per-token blocks ---------------------------------------------------- */

/* Decode fusions (ops.h "fused decode ops"; docs/perf-notes.md "Decode
 * fusions"): at batch 1 a step's time is its count of launches, so products of
 * one input run as one, and every residual add goes into the product before it
 * (so no add is left for add_rmsnorm_fwd to take into a norm). Each helper
 * falls back to the composition when the backend lacks the op or g->fuse is
 * off; the values are the same either way. */

/* out = res + in w^T (res NULL: out = in w^T); out aliases neither */
static void linear_res(Generator *g, real *out, const real *in, const real *w, const real *res, int N, int IC,
                       int OC) {
    const Ops *o = g->m->ops;
    if (res && g->fuse && o->linear_res_fwd) { o->linear_res_fwd(out, in, w, res, N, IC, OC); return; }
    o->linear_fwd(out, in, w, NULL, N, IC, OC);
    if (res) o->add(out, out, res, (size_t)N * OC);
}

/* up to three products of one input (OC_i = 0: none); nw != NULL: of
 * RMSNorm(in) * nw (the norm made into `normed` unless the fused op does it
 * inside), eps the config's norm_eps */
static void linear3(Generator *g, real *o0, real *o1, real *o2, const real *in, const real *nw, real *normed,
                    const real *w0, const real *w1, const real *w2, int N, int IC, int OC0, int OC1, int OC2) {
    const Ops *o = g->m->ops;
    real eps = (real)g->m->cfg.norm_eps;
    if (g->fuse && o->linear3_fwd) {
        o->linear3_fwd(o0, o1, o2, in, w0, w1, w2, N, IC, OC0, OC1, OC2, nw, eps, normed, g->rstd);
        return;
    }
    if (nw) {
        o->rmsnorm_fwd(normed, g->rstd, in, nw, N, IC, eps);
        in = normed;
    }
    if (OC0 > 0) o->linear_fwd(o0, in, w0, NULL, N, IC, OC0);
    if (OC1 > 0) o->linear_fwd(o1, in, w1, NULL, N, IC, OC1);
    if (OC2 > 0) o->linear_fwd(o2, in, w2, NULL, N, IC, OC2);
}

static int attn_fusable(const Generator *g) {
    const Ops *o = g->m->ops;
    return g->fuse && o->linear3_fwd && o->rope_append_at && g->m->cfg.use_rope;
}

/* kv_append + attn_query from one input u in 4 launches (q/k/v product, RoPE +
 * cache append, attention, output product + residual): out = res + attention
 * (res may be NULL). nw != NULL: u is RMSNorm(in) * nw, made inside the q/k/v
 * product (g->u its scratch); else u = in. Only where attn_fusable. */
static void attn_fused(Generator *g, const AttnW *w, KVCache *kv, const real *in, const real *nw, real *out,
                       const real *res) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim, qd = nh * hd,
        kvd = cfg_kv_dim(c);
    linear3(g, g->q, g->k, g->v, in, nw, g->u, P(w->q), P(w->k), P(w->v), B, H, qd, kvd, kvd);
    o->rope_append_at(g->qr, kv->K, kv->V, g->kr, g->q, g->k, g->v, g->pos_dev, kv->row, B, g->W * kvd, nh, nkv, hd,
                      (real)c->rope_theta);
    o->attention_decode_at(g->att, g->qr, kv->K, kv->V, B, kv->row, g->W, nh, nkv, hd);
    linear_res(g, out, g->att, P(w->o), res, B, qd, H);
}

/* Appends K/V computed from ukv [B, H] at the current position to the cache
 * (nw != NULL: from RMSNorm(ukv) * nw, g->uk its scratch). */
static void kv_append(Generator *g, const AttnW *w, KVCache *kv, const real *ukv, const real *nw) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, kvd = cfg_kv_dim(c);
    linear3(g, g->k, g->v, NULL, ukv, nw, g->uk, P(w->k), P(w->v), NULL, B, H, kvd, kvd, 0);
    const real *k = g->k;
    if (c->use_rope) {
        o->rope_fwd(g->kr, g->k, g->pos_dev, B, 1, c->num_kv_heads, c->head_dim, (real)c->rope_theta);
        k = g->kr;
    }
    /* row `count` of each sequence's [W, kvd] cache, read on the device (the host advances count after the step) */
    o->copy_rows_at(kv->K, g->W * kvd, k, B, kvd, kv->row);
    o->copy_rows_at(kv->V, g->W * kvd, g->v, B, kvd, kv->row);
}

/* Attention for queries from u [B, H] at position t over the cache; out [B, H] = res + attention (res may be NULL). */
static void attn_query(Generator *g, const AttnW *w, KVCache *kv, const real *u, real *out, const real *res) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, nh = c->num_heads, hd = c->head_dim, qd = nh * hd;
    o->linear_fwd(g->q, u, P(w->q), NULL, B, H, qd);
    const real *q = g->q;
    if (c->use_rope) {
        o->rope_fwd(g->qr, g->q, g->pos_dev, B, 1, nh, hd, (real)c->rope_theta);
        q = g->qr;
    }
    /* every cached key is at or before this position: all visible, this step's included (keys 0..row) */
    o->attention_decode_at(g->att, q, kv->K, kv->V, B, kv->row, g->W, nh, c->num_kv_heads, hd);
    linear_res(g, out, g->att, P(w->o), res, B, qd, H);
}

/* the Mamba steps: out = res + mixer (res may be NULL); the mixer's input is
 * RMSNorm(u) * nw when nw != NULL (made with the in_proj products), else u */
static void mamba1_step(Generator *g, const Mamba1W *w, SsmState *s, const real *u, const real *nw, real *out,
                        const real *res) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, E = cfg_E(c), S = c->d_state, R = c->dt_rank;
    real eps = (real)c->norm_eps;
    linear3(g, g->xm, g->zm, NULL, u, nw, g->u, P(w->in_proj), P(w->in_proj) + (size_t)E * H, NULL, B, H, E, E, 0);
    o->conv1d_step(g->conv, s->win, g->xm, P(w->conv_w), P(w->conv_b), B, E, c->d_conv);
    o->silu_fwd(g->xc, g->conv, (size_t)B * E);
    linear3(g, g->dtr, g->br, g->cr, g->xc, NULL, NULL, P(w->x_proj), P(w->x_proj) + (size_t)R * E,
            P(w->x_proj) + (size_t)(R + S) * E, B, E, R, S, S);
    o->rmsnorm_fwd(g->dtn, g->rstd, g->dtr, P(w->dt_norm), B, R, eps);
    o->rmsnorm_fwd(g->bn, g->rstd, g->br, P(w->b_norm), B, S, eps);
    o->rmsnorm_fwd(g->cn, g->rstd, g->cr, P(w->c_norm), B, S, eps);
    o->linear_fwd(g->dtraw, g->dtn, P(w->dt_w), P(w->dt_b), B, R, E);
    o->selective_scan_step(g->ys, s->h, g->xc, g->dtraw, P(w->A_log), g->bn, g->cn, P(w->D), g->zm, B, E, S);
    linear_res(g, out, g->ys, P(w->out_proj), res, B, E, H);
}

static void mamba2_step(Generator *g, const Mamba2W *w, SsmState *s, const real *u, const real *nw, real *out,
                        const real *res) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, E = cfg_m2_E(c), nh = cfg_m2_heads(c);
    int CX = E + 2 * c->m2_ngroups * c->m2_d_state;
    linear3(g, g->z, g->xm, g->dtraw, u, nw, g->u, P(w->in_proj), P(w->in_proj) + (size_t)E * H,
            P(w->in_proj) + (size_t)(E + CX) * H, B, H, E, CX, nh);
    o->conv1d_step(g->conv, s->win, g->xm, P(w->conv_w), P(w->conv_b), B, CX, c->d_conv);
    o->silu_fwd(g->xc, g->conv, (size_t)B * CX);
    o->ssd_step(g->ys, s->h, g->xc, g->dtraw, P(w->dt_bias), P(w->A_log), P(w->D), B, nh, c->m2_headdim,
                c->m2_ngroups, c->m2_d_state);
    o->gated_rmsnorm_fwd(g->zn, g->rstd, g->ys, g->z, P(w->gate_norm), B, E, (real)c->norm_eps, E);
    linear_res(g, out, g->zn, P(w->out_proj), res, B, E, H);
}

/* out = h + MLP(RMSNorm(h)) */
static void mlp_step(Generator *g, const MlpW *w, size_t norm, const real *h, real *out) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size, I = c->intermediate_size;
    if (g->fuse && o->swiglu_linear_fwd)   /* the norm inside the gate/up product */
        o->swiglu_linear_fwd(g->act, g->g, g->up, h, P(w->gate), P(w->up), B, H, I, P(norm), (real)c->norm_eps, g->hn,
                             g->rstd);
    else {
        o->rmsnorm_fwd(g->hn, g->rstd, h, P(norm), B, H, (real)c->norm_eps);
        o->linear_fwd(g->g, g->hn, P(w->gate), NULL, B, H, I);
        o->linear_fwd(g->up, g->hn, P(w->up), NULL, B, H, I);
        o->swiglu_fwd(g->act, g->g, g->up, (size_t)B * I);
    }
    linear_res(g, out, g->act, P(w->down), h, B, I, H);
}

/* A decoder layer on this token: x -> out. kv_done: K/V already appended (prefix). */
static void decoder_step(Generator *g, const DecoderW *w, MixerState *s, const real *x, real *out, int kv_done) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    int B = g->B, H = c->hidden_size;
    real *dst = w->has_mlp ? g->h : out;   /* x + mixer, the residual added by the mixer's output product */
    const real *nw = P(w->mixer_norm);     /* the mixer's norm, inside its first products where fused */
    if (w->mixer == MIXER_ATTN) {
        if (!kv_done && attn_fusable(g)) attn_fused(g, &w->attn, &s->kv, x, nw, dst, x);
        else {
            o->rmsnorm_fwd(g->u, g->rstd, x, nw, B, H, (real)c->norm_eps);
            if (!kv_done) kv_append(g, &w->attn, &s->kv, g->u, NULL);
            attn_query(g, &w->attn, &s->kv, g->u, dst, x);
        }
    } else if (w->mixer == MIXER_MAMBA1) mamba1_step(g, &w->m1, &s->ssm, x, nw, dst, x);
    else mamba2_step(g, &w->m2, &s->ssm, x, nw, dst, x);
    if (w->has_mlp) mlp_step(g, &w->mlp, w->mlp_norm, g->h, out);
}

static void flowhn_step(Generator *g, int l, const real *x, real *out) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    const LayerW *w = &g->m->layout.layers[l];
    LayerState *s = &g->layers[l];
    int B = g->B, H = c->hidden_size, none = c->split == SPLIT_NONE;
    int to_attn = none || s->in_attn[g->t], to_ssm = none || !s->in_attn[g->t];
    int Hin = none ? 2 * H : H;
    real *y = g->y;   /* [B, Hin]: the fusion's input */
    if (c->context == CONTEXT_PREFIX) {
        /* every token's K/V enter the attention branch's cache */
        kv_append(g, &w->attn_branch.attn, &s->attn.kv, x, P(w->attn_branch.mixer_norm));
    }
    /* branch outputs go to g->x2 (attention) and g->zn (ssm) before fusion */
    if (to_ssm) decoder_step(g, &w->ssm_branch, &s->ssm, x, g->zn, 0);
    if (to_attn) decoder_step(g, &w->attn_branch, &s->attn, x, g->x2, c->context == CONTEXT_PREFIX);
    if (none) {   /* y = [ssm | attention] per row */
        o->copy_rows(y, Hin, g->zn, H, B, H);
        o->copy_rows(y + H, Hin, g->x2, H, B, H);
    } else y = to_attn ? g->x2 : g->zn;
    linear_res(g, g->z, y, P(w->fuse), x, B, Hin, H);
    o->rmsnorm_fwd(g->hn, g->rstd, g->z, P(w->out_norm), B, H, (real)c->norm_eps);
    linear_res(g, out, g->hn, P(w->out_proj), g->z, B, H, H);
}

static void hymba_step(Generator *g, int l, const real *x, real *out) {
    const Config *c = &g->m->cfg;
    const Ops *o = g->m->ops;
    const LayerW *w = &g->m->layout.layers[l];
    LayerState *s = &g->layers[l];
    int B = g->B, H = c->hidden_size;
    size_t n = (size_t)B * H;
    real eps = (real)c->norm_eps;
    o->rmsnorm_fwd(g->uk, g->rstd, x, P(w->mixer_norm), B, H, eps);
    if (attn_fusable(g)) attn_fused(g, &w->attn, &s->attn.kv, g->uk, NULL, g->x2, NULL);
    else {
        kv_append(g, &w->attn, &s->attn.kv, g->uk, NULL);
        attn_query(g, &w->attn, &s->attn.kv, g->uk, g->x2, NULL);
    }
    mamba1_step(g, &w->m1, &s->ssm.ssm, g->uk, NULL, g->zn, NULL);
    o->rmsnorm_fwd(g->x2, g->rstd, g->x2, P(w->attn_out_norm), B, H, eps);   /* row-wise: in place is safe */
    o->rmsnorm_fwd(g->zn, g->rstd, g->zn, P(w->ssm_out_norm), B, H, eps);
    o->zero(g->y, sizeof(real) * n);
    o->accumulate(g->y, g->x2, (real)0.5, n);
    o->accumulate(g->y, g->zn, (real)0.5, n);
    linear_res(g, g->h, g->y, P(w->out_proj), x, B, H, H);
    mlp_step(g, &w->mlp, w->mlp_norm, g->h, out);
}

/* the step's backend work after the token copy: embedding -> layers -> logits */
static void step_body(Generator *g) {
    Model *m = g->m;
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int B = g->B, H = c->hidden_size, V = c->vocab_size;
    o->embedding_fwd(g->x, g->tok_dev, P(m->layout.embed), B, H);
    for (int l = 0; l < c->num_layers; l++) {
        const LayerW *w = &m->layout.layers[l];
        /* layer input g->x -> output g->tmp, then swap */
        if (w->kind == LAYER_FLOWHN) flowhn_step(g, l, g->x, g->tmp);
        else if (w->kind == LAYER_HYMBA) hymba_step(g, l, g->x, g->tmp);
        else decoder_step(g, &w->dec, &g->layers[l].dec, g->x, g->tmp, 0);
        real *t = g->x; g->x = g->tmp; g->tmp = t;
    }
    o->rmsnorm_fwd(g->hn, g->rstd, g->x, P(m->layout.norm_f), B, H, (real)c->norm_eps);
    o->linear_fwd(g->logits, g->hn, P(m->layout.lm_head), NULL, B, H, V);
}

/* The routing pattern of position t: bit l set when FlowHN layer l gives it
 * to the attention branch (0 for every other architecture: one pattern). */
static uint64_t route_key(const Generator *g, int t) {
    uint64_t key = 0;
    for (int l = 0; l < g->m->cfg.num_layers && l < 64; l++)
        if (g->layers[l].in_attn && g->layers[l].in_attn[t]) key |= 1ull << l;
    return key;
}

/* With graphs: the slot of this step's routing pattern replays its recording,
 * or records it (seen once before), or is taken now (its first step runs
 * eagerly). 0 if the step ran, 1 if it must run eagerly, -1 on error. The
 * recordings read the token ids, the position and the caches' rows from the
 * staged buffer, and g->x, g->tmp ... are scratch rewritten every step, so a
 * recording serves every step of its pattern. */
static int step_graph(Generator *g, uint64_t key) {
    const Ops *o = g->m->ops;
    GraphSlot *slot = NULL, *lru = &g->slots[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (g->slots[i].state && g->slots[i].key == key) { slot = &g->slots[i]; break; }
        if (!g->slots[i].state || (lru->state && g->slots[i].used < lru->used)) lru = &g->slots[i];
    }
    if (!slot) {   /* a new pattern: its first step eager, recorded at the next */
        if (lru->graph) o->graph_free(lru->graph);
        *lru = (GraphSlot){.key = key, .state = 1, .used = ++g->clock};
        return 1;
    }
    slot->used = ++g->clock;
    if (slot->state == 2) {
        int rc = o->graph_launch(slot->graph);
        if (rc <= 0) return rc;
        o->graph_free(slot->graph);   /* a buffer it used was freed since: eager now, recorded again next */
        slot->graph = NULL;
        slot->state = 1;
        return 1;
    }
    if (o->graph_begin()) return -1;
    step_body(g);
    void *gr = o->graph_end();
    if (gr && o->graph_launch(gr) == 0) {
        slot->graph = gr;
        slot->state = 2;
        return 0;
    }
    if (gr) o->graph_free(gr);
    fprintf(stderr, "flowhn: %s; decoding without graphs\n", fh_last_error());
    generator_set_graphs(g, 0);
    return 1;
}

/* after the step at position t: each KV cache that took its token has one row more */
static void advance_counts(Generator *g, int t) {
    const Config *c = &g->m->cfg;
    for (int l = 0; l < c->num_layers; l++) {
        LayerState *s = &g->layers[l];
        if (s->dec.kv.K) s->dec.kv.count++;
        /* FlowHN's attention branch caches its own tokens, or every token with prefix context; Hymba's every token */
        if (s->attn.kv.K && (!s->in_attn || s->in_attn[t] || c->context == CONTEXT_PREFIX)) s->attn.kv.count++;
    }
}

int generator_step(Generator *g, const int *tokens, real *logits) {
    Model *m = g->m;
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int B = g->B, V = c->vocab_size;
    if (g->t >= g->W)
        return fh_error("generation reached the model's window of %d tokens (max_position_embeddings)", g->W);
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) return fh_error("token id %d outside the vocabulary [0, %d)", tokens[b], V);
    memcpy(g->tok_host, tokens, sizeof(int) * B);
    g->tok_host[B] = g->t;
    for (int i = 0; i < g->n_caches; i++) g->tok_host[B + 1 + i] = g->caches[i]->count;
    o->from_host(g->tok_dev, g->tok_host, sizeof(int) * ((size_t)B + 1 + g->n_caches));
    int rc = g->graphs ? step_graph(g, route_key(g, g->t)) : 1;
    if (rc < 0) return -1;
    if (rc) step_body(g);
    advance_counts(g, g->t);
    if (logits) o->to_host(logits, g->logits, sizeof(real) * (size_t)B * V);
    g->t++;
    return 0;
}

/* ---- batched prefill ------------------------------------------------------
 * The prompt's P tokens per sequence go through model.c's own forward blocks
 * at once (model_prefill: linear over B*P rows, attention_fwd over the
 * prompt, conv1d_fwd and the chunked scans), and the generator keeps what
 * token-by-token feeding would have left: each KV cache's rows [0, P) (FlowHN
 * isolated: its branch's own tokens), each conv window (the last d_conv conv
 * inputs, oldest first, zeros before the first), each SSM state (the scans'
 * final saved state). FlowHN routes the prompt's positions by the generator's
 * plan (the model's, with plan_len = W): each branch runs on its own tokens in
 * order, as the steps would have fed them. Only the last position reaches the head. */

/* model_prefill's callback: one mixer's tensors into its cache or state */
static int prefill_take(void *ctx, int l, int part, const MixerCache *mc) {
    Generator *g = ctx;
    const Ops *o = g->m->ops;
    MixerState *s = part == 0 ? &g->layers[l].dec : part == 1 ? &g->layers[l].attn : &g->layers[l].ssm;
    int B = g->B, n = mc->n, K = g->m->cfg.d_conv, C = mc->C, r = n < K ? n : K;
    if (mc->k) {
        int kvd = cfg_kv_dim(&g->m->cfg);
        o->copy_rows(s->kv.K, g->W * kvd, mc->k, n * kvd, B, n * kvd);
        o->copy_rows(s->kv.V, g->W * kvd, mc->v, n * kvd, B, n * kvd);
        s->kv.count = n;
        return 0;
    }
    /* the window's last min(n, K) rows are the last inputs (the rows before stay zero: a fresh window) */
    o->copy_rows(s->ssm.win + (size_t)(K - r) * C, K * C, mc->conv_in + (size_t)(n - r) * C, n * C, B, r * C);
    o->copy_rows(s->ssm.h, (int)mc->state_n, mc->state, (int)mc->state_ld, B, (int)mc->state_n);
    return 0;
}

int generator_prefill(Generator *g, const int *tokens, int np, real *logits) {
    Model *m = g->m;
    const Config *c = &m->cfg;
    const Ops *o = m->ops;
    int B = g->B, H = c->hidden_size, V = c->vocab_size;
    if (g->t != 0)
        return fh_error("generator_prefill starts a prompt at position 0 (this generator is at %d: "
                        "generator_reset first, or continue with generator_step)", g->t);
    if (np < 1 || np > g->W)
        return fh_error("prompt of %d tokens: must be 1 to the model's window of %d tokens (max_position_embeddings)",
                        np, g->W);
    int plan_len = m->plan_len, rc;
    const real *x;
    m->plan_len = g->W;   /* the generator's routing */
    rc = model_prefill(m, tokens, B, np, prefill_take, g, &x);
    m->plan_len = plan_len;
    if (rc) return -1;
    /* the head on the last position only: the next token's logits */
    o->copy_rows(g->u, H, x + (size_t)(np - 1) * H, np * H, B, H);
    o->rmsnorm_fwd(g->hn, g->rstd, g->u, P(m->layout.norm_f), B, H, (real)c->norm_eps);
    o->linear_fwd(g->logits, g->hn, P(m->layout.lm_head), NULL, B, H, V);
    if (logits) o->to_host(logits, g->logits, sizeof(real) * (size_t)B * V);
    g->t = np;
    return 0;
}

int generator_reset(Generator *g) {
    const Ops *o = g->m->ops;
    const Config *c = &g->m->cfg;
    for (int l = 0; l < c->num_layers; l++) {
        MixerState *ms[3] = {&g->layers[l].dec, &g->layers[l].attn, &g->layers[l].ssm};
        for (int i = 0; i < 3; i++) {
            ms[i]->kv.count = 0;
            /* the windows and states are read before they are written: zero them
             * (the KV rows are written before they are read) */
            int m2 = g->m->layout.layers[l].kind == LAYER_DECODER && g->m->layout.layers[l].dec.mixer == MIXER_MAMBA2;
            int E = m2 ? cfg_m2_E(c) : cfg_E(c), S = m2 ? c->m2_d_state : c->d_state;
            int C = m2 ? E + 2 * c->m2_ngroups * c->m2_d_state : E;
            if (ms[i]->ssm.win) o->zero(ms[i]->ssm.win, sizeof(real) * (size_t)g->B * c->d_conv * C);
            if (ms[i]->ssm.h) o->zero(ms[i]->ssm.h, sizeof(real) * (size_t)g->B * E * S);
        }
    }
    g->t = 0;
    return 0;
}

int sample_token(const real *logits, int V, const SamplerConfig *s, Rng *rng) {
    if (s->temperature <= 0) {
        int best = 0;
        for (int v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
        return best;
    }
    double *p = malloc(sizeof(double) * V);
    int *idx = malloc(sizeof(int) * V);
    if (!p || !idx) { free(p); free(idx); return 0; }
    double mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = fmax(mx, logits[v]);
    double sum = 0;
    for (int v = 0; v < V; v++) { p[v] = exp((logits[v] - mx) / s->temperature); sum += p[v]; idx[v] = v; }
    /* order by probability (partial selection sort is enough for top-k; full sort for top-p) */
    int keep = V;
    if (s->top_k > 0 && s->top_k < V) keep = s->top_k;
    int sort_n = s->top_p > 0 && s->top_p < 1 ? V : keep;
    for (int i = 0; i < sort_n && i < V - 1; i++) {
        int best = i;
        for (int j = i + 1; j < V; j++) if (p[idx[j]] > p[idx[best]]) best = j;
        int t = idx[i]; idx[i] = idx[best]; idx[best] = t;
        if (sort_n == keep && i + 1 >= keep) break;
    }
    if (s->top_p > 0 && s->top_p < 1) {
        double cum = 0;
        int k = 0;
        while (k < keep) { cum += p[idx[k]] / sum; k++; if (cum >= s->top_p) break; }
        keep = k;
    }
    double tot = 0;
    for (int i = 0; i < keep; i++) tot += p[idx[i]];
    double r = rng_uniform(rng) * tot, acc = 0;
    int choice = idx[keep - 1];
    for (int i = 0; i < keep; i++) { acc += p[idx[i]]; if (r < acc) { choice = idx[i]; break; } }
    free(p);
    free(idx);
    return choice;
}
