/* layout.c - the parameter table, built by walking the architecture once,
 * and its deterministic initialisation. */
#include "layout.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/rng.h"

/* Appends a tensor; returns its offset (or (size_t)-1 after an error). */
static size_t add(ParamLayout *L, ParamKind kind, int d0, int d1, const char *fmt, ...) {
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        ParamEntry *e = realloc(L->entries, sizeof(ParamEntry) * cap);
        if (!e) { fh_error("out of memory building the parameter table"); return (size_t)-1; }
        L->entries = e;
        L->cap = cap;
    }
    ParamEntry *p = &L->entries[L->n++];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = d1 > 0 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1 > 0 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    p->offset = L->total;
    p->kind = kind;
    L->total += p->numel;
    return p->offset;
}

static void add_attn(ParamLayout *L, const Config *c, AttnW *w, const char *P) {
    int H = c->hidden_size, qd = c->num_heads * c->head_dim, kvd = cfg_kv_dim(c);
    w->q = add(L, PK_MATRIX, qd, H, "%s.q_proj.weight", P);
    w->k = add(L, PK_MATRIX, kvd, H, "%s.k_proj.weight", P);
    w->v = add(L, PK_MATRIX, kvd, H, "%s.v_proj.weight", P);
    w->o = add(L, PK_MATRIX, H, qd, "%s.o_proj.weight", P);
}

static void add_mamba1(ParamLayout *L, const Config *c, Mamba1W *w, const char *P) {
    int H = c->hidden_size, E = cfg_E(c), S = c->d_state, R = c->dt_rank, K = c->d_conv;
    w->in_proj = add(L, PK_MATRIX, 2 * E, H, "%s.in_proj.weight", P);
    w->conv_w = add(L, PK_MATRIX, E, K, "%s.conv1d.weight", P);
    w->conv_b = add(L, PK_BIAS, E, 0, "%s.conv1d.bias", P);
    w->x_proj = add(L, PK_MATRIX, R + 2 * S, E, "%s.x_proj.weight", P);
    w->dt_norm = add(L, PK_NORM, R, 0, "%s.dt_norm.weight", P);
    w->b_norm = add(L, PK_NORM, S, 0, "%s.b_norm.weight", P);
    w->c_norm = add(L, PK_NORM, S, 0, "%s.c_norm.weight", P);
    w->dt_w = add(L, PK_MATRIX, E, R, "%s.dt_proj.weight", P);
    w->dt_b = add(L, PK_BIAS, E, 0, "%s.dt_proj.bias", P);
    w->A_log = add(L, PK_SSM, E, S, "%s.A_log", P);
    w->D = add(L, PK_SSM, E, 0, "%s.D", P);
    w->out_proj = add(L, PK_MATRIX, H, E, "%s.out_proj.weight", P);
}

static void add_mamba2(ParamLayout *L, const Config *c, Mamba2W *w, const char *P) {
    int H = c->hidden_size, E = cfg_m2_E(c), GN = c->m2_ngroups * c->m2_d_state, nh = cfg_m2_heads(c);
    int K = c->d_conv;
    w->in_proj = add(L, PK_MATRIX, 2 * E + 2 * GN + nh, H, "%s.in_proj.weight", P);
    w->conv_w = add(L, PK_MATRIX, E + 2 * GN, K, "%s.conv1d.weight", P);
    w->conv_b = add(L, PK_BIAS, E + 2 * GN, 0, "%s.conv1d.bias", P);
    w->dt_bias = add(L, PK_SSM, nh, 0, "%s.dt_bias", P);
    w->A_log = add(L, PK_SSM, nh, 0, "%s.A_log", P);
    w->D = add(L, PK_SSM, nh, 0, "%s.D", P);
    w->gate_norm = add(L, PK_NORM, E, 0, "%s.gate_norm.weight", P);
    w->out_proj = add(L, PK_MATRIX, H, E, "%s.out_proj.weight", P);
}

static void add_mlp(ParamLayout *L, const Config *c, MlpW *w, const char *P) {
    int H = c->hidden_size, I = c->intermediate_size;
    w->gate = add(L, PK_MATRIX, I, H, "%s.gate_proj.weight", P);
    w->up = add(L, PK_MATRIX, I, H, "%s.up_proj.weight", P);
    w->down = add(L, PK_MATRIX, H, I, "%s.down_proj.weight", P);
}

static void add_decoder(ParamLayout *L, const Config *c, DecoderW *w, MixerKind mixer, int has_mlp, const char *P) {
    char sub[80];
    w->mixer = mixer;
    w->has_mlp = has_mlp;
    w->mixer_norm = add(L, PK_NORM, c->hidden_size, 0, "%s.mixer_norm.weight", P);
    snprintf(sub, sizeof sub, "%s.mixer", P);
    if (mixer == MIXER_ATTN) add_attn(L, c, &w->attn, sub);
    else if (mixer == MIXER_MAMBA1) add_mamba1(L, c, &w->m1, sub);
    else add_mamba2(L, c, &w->m2, sub);
    if (has_mlp) {
        w->mlp_norm = add(L, PK_NORM, c->hidden_size, 0, "%s.mlp_norm.weight", P);
        snprintf(sub, sizeof sub, "%s.mlp", P);
        add_mlp(L, c, &w->mlp, sub);
    }
}

int layout_build(ParamLayout *L, const Config *c) {
    memset(L, 0, sizeof *L);
    int H = c->hidden_size;
    L->num_layers = c->num_layers;
    L->layers = calloc(c->num_layers, sizeof(LayerW));
    if (!L->layers) return fh_error("out of memory building the parameter table");
    L->embed = add(L, PK_EMBED, c->vocab_size, H, "embed.weight");
    for (int l = 0; l < c->num_layers; l++) {
        LayerW *w = &L->layers[l];
        w->begin = L->total;
        char P[64], sub[80];
        snprintf(P, sizeof P, "layers.%d", l);
        switch (c->arch) {
        case ARCH_LLAMA: w->kind = LAYER_DECODER; add_decoder(L, c, &w->dec, MIXER_ATTN, 1, P); break;
        case ARCH_MAMBA1: w->kind = LAYER_DECODER; add_decoder(L, c, &w->dec, MIXER_MAMBA1, 0, P); break;
        case ARCH_MAMBA2: w->kind = LAYER_DECODER; add_decoder(L, c, &w->dec, MIXER_MAMBA2, 0, P); break;
        case ARCH_JAMBA:
        case ARCH_SHM:
            w->kind = LAYER_DECODER;
            add_decoder(L, c, &w->dec, l % c->attn_period == c->attn_offset ? MIXER_ATTN : MIXER_MAMBA1, 1, P);
            break;
        case ARCH_FLOWHN:
            w->kind = LAYER_FLOWHN;
            snprintf(sub, sizeof sub, "%s.attn_branch", P);
            add_decoder(L, c, &w->attn_branch, MIXER_ATTN, 1, sub);
            snprintf(sub, sizeof sub, "%s.ssm_branch", P);
            add_decoder(L, c, &w->ssm_branch, MIXER_MAMBA1, 1, sub);
            w->fuse = add(L, PK_MATRIX, H, c->split == SPLIT_NONE ? 2 * H : H, "%s.fuse.weight", P);
            w->out_norm = add(L, PK_NORM, H, 0, "%s.out_norm.weight", P);
            w->out_proj = add(L, PK_MATRIX, H, H, "%s.out_proj.weight", P);
            break;
        case ARCH_HYMBA:
            w->kind = LAYER_HYMBA;
            w->mixer_norm = add(L, PK_NORM, H, 0, "%s.mixer_norm.weight", P);
            snprintf(sub, sizeof sub, "%s.attn", P);
            add_attn(L, c, &w->attn, sub);
            snprintf(sub, sizeof sub, "%s.mamba", P);
            add_mamba1(L, c, &w->m1, sub);
            w->attn_out_norm = add(L, PK_NORM, H, 0, "%s.attn_out_norm.weight", P);
            w->ssm_out_norm = add(L, PK_NORM, H, 0, "%s.ssm_out_norm.weight", P);
            w->out_proj = add(L, PK_MATRIX, H, H, "%s.out_proj.weight", P);
            w->mlp_norm = add(L, PK_NORM, H, 0, "%s.mlp_norm.weight", P);
            snprintf(sub, sizeof sub, "%s.mlp", P);
            add_mlp(L, c, &w->mlp, sub);
            break;
        default: return fh_error("unknown architecture %d", (int)c->arch);
        }
    }
    L->norm_f = add(L, PK_NORM, H, 0, "norm_f.weight");
    L->lm_head = c->tie_embeddings ? L->embed : add(L, PK_MATRIX, c->vocab_size, H, "lm_head.weight");
    for (int i = 0; i < L->n; i++)
        if (L->entries[i].offset == (size_t)-1) return fh_error("out of memory building the parameter table");
    return 0;
}

void layout_free(ParamLayout *L) {
    free(L->entries);
    free(L->layers);
    memset(L, 0, sizeof *L);
}

const ParamEntry *layout_find(const ParamLayout *L, const char *name) {
    for (int i = 0; i < L->n; i++)
        if (!strcmp(L->entries[i].name, name)) return &L->entries[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* dt in [1e-3, 1e-1] log-uniformly; the bias is softplus^-1(dt) (Mamba's init). */
static real dt_bias_init(Rng *r) {
    double dt = exp(log(1e-3) + rng_uniform(r) * (log(1e-1) - log(1e-3)));
    if (dt < 1e-4) dt = 1e-4;
    return (real)(dt + log(-expm1(-dt)));
}

void params_init(real *params, const ParamLayout *L, const Config *c, uint64_t seed) {
    /* Residual-branch output projections are scaled down by sqrt(2 * layers)
     * (GPT-2's rule) so the residual stream does not grow with depth. */
    double out_scale = 1.0 / sqrt(2.0 * c->num_layers);
    for (int i = 0; i < L->n; i++) {
        const ParamEntry *e = &L->entries[i];
        real *p = params + e->offset;
        Rng r;
        rng_seed(&r, seed, (uint64_t)i + 1);
        const char *nm = e->name;
        if (e->kind == PK_NORM) {
            for (size_t j = 0; j < e->numel; j++) p[j] = 1;
        } else if (ends_with(nm, "conv1d.weight") || ends_with(nm, "conv1d.bias")) {
            double b = 1.0 / sqrt((double)c->d_conv);   /* PyTorch's default for fan_in = K */
            for (size_t j = 0; j < e->numel; j++) p[j] = (real)((2 * rng_uniform(&r) - 1) * b);
        } else if (ends_with(nm, "dt_proj.weight")) {
            double b = 1.0 / sqrt((double)c->dt_rank);
            for (size_t j = 0; j < e->numel; j++) p[j] = (real)((2 * rng_uniform(&r) - 1) * b);
        } else if (ends_with(nm, "dt_proj.bias") || ends_with(nm, "dt_bias")) {
            for (size_t j = 0; j < e->numel; j++) p[j] = dt_bias_init(&r);
        } else if (ends_with(nm, "A_log")) {
            if (e->ndim == 2)   /* Mamba-1: A = -(1..S) per channel (S4D-real) */
                for (int row = 0; row < e->shape[0]; row++)
                    for (int s = 0; s < e->shape[1]; s++) p[(size_t)row * e->shape[1] + s] = (real)log(s + 1.0);
            else                /* Mamba-2: A per head uniform in [1, 16] */
                for (size_t j = 0; j < e->numel; j++) p[j] = (real)log(1.0 + 15.0 * rng_uniform(&r));
        } else if (ends_with(nm, ".D")) {
            for (size_t j = 0; j < e->numel; j++) p[j] = 1;
        } else {
            double std = c->init_std;
            if (ends_with(nm, "o_proj.weight") || ends_with(nm, "out_proj.weight") || ends_with(nm, "down_proj.weight"))
                std *= out_scale;
            for (size_t j = 0; j < e->numel; j++) p[j] = (real)(std * rng_normal(&r));
        }
    }
}
