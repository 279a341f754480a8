/* layout.h - where every parameter lives in the one contiguous buffer.
 *
 * layout_build() walks the architecture once (docs/model-definition.md,
 * section 2), appending each tensor to the table (name, shape, offset) and
 * recording its offset in per-layer structs the model code reads. Offsets
 * index both the parameter buffer and the gradient buffer. */
#ifndef FLOWHN_LAYOUT_H
#define FLOWHN_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "../core/real.h"
#include "config.h"

/* How the optimizer treats a tensor (weight decay applies to PK_MATRIX only
 * unless asked otherwise). */
typedef enum { PK_MATRIX, PK_EMBED, PK_NORM, PK_BIAS, PK_SSM } ParamKind;

typedef struct {
    char name[96];
    int ndim;
    int shape[2];
    size_t offset, numel;
    ParamKind kind;
} ParamEntry;

typedef enum { MIXER_ATTN, MIXER_MAMBA1, MIXER_MAMBA2 } MixerKind;

typedef struct { size_t q, k, v, o; } AttnW;
typedef struct {
    size_t in_proj, conv_w, conv_b, x_proj, dt_norm, b_norm, c_norm, dt_w, dt_b, A_log, D, out_proj;
} Mamba1W;
typedef struct { size_t in_proj, conv_w, conv_b, dt_bias, A_log, D, gate_norm, out_proj; } Mamba2W;
typedef struct { size_t gate, up, down; } MlpW;

/* norm -> mixer -> residual [-> norm -> SwiGLU MLP -> residual] */
typedef struct {
    MixerKind mixer;
    size_t mixer_norm;
    AttnW attn;
    Mamba1W m1;
    Mamba2W m2;
    int has_mlp;
    size_t mlp_norm;
    MlpW mlp;
} DecoderW;

typedef enum { LAYER_DECODER, LAYER_FLOWHN, LAYER_HYMBA } LayerKind;

typedef struct {
    LayerKind kind;
    size_t begin;                       /* the layer's tensors are [begin, next layer's begin) of the flat buffer */
    DecoderW dec;                       /* LAYER_DECODER */
    DecoderW attn_branch, ssm_branch;   /* LAYER_FLOWHN */
    size_t fuse, out_norm, out_proj;    /* LAYER_FLOWHN (out_proj also LAYER_HYMBA) */
    size_t mixer_norm, attn_out_norm, ssm_out_norm, mlp_norm; /* LAYER_HYMBA */
    AttnW attn;
    Mamba1W m1;
    MlpW mlp;
} LayerW;

typedef struct {
    ParamEntry *entries;
    int n, cap;
    size_t total;          /* number of reals */
    size_t embed, norm_f, lm_head;   /* lm_head == embed when tied */
    LayerW *layers;        /* [num_layers] */
    int num_layers;
} ParamLayout;

int layout_build(ParamLayout *L, const Config *c);
void layout_free(ParamLayout *L);
const ParamEntry *layout_find(const ParamLayout *L, const char *name);
/* Deterministic initialisation of a host buffer of L->total reals. Each
 * tensor draws from its own stream (seed, tensor index), so the values of a
 * tensor do not depend on the ones before it. */
void params_init(real *params, const ParamLayout *L, const Config *c, uint64_t seed);

#endif
