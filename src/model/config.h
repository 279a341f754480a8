/* config.h - a model's configuration, read from a Hugging Face style
 * config.json (see docs/model-definition.md for every field).
 *
 * config_load() validates field by field and rejects unknown keys, wrong
 * types and impossible values with a message naming the file, the field and
 * the allowed values. */
#ifndef FLOWHN_CONFIG_H
#define FLOWHN_CONFIG_H

typedef enum { ARCH_FLOWHN, ARCH_LLAMA, ARCH_MAMBA1, ARCH_MAMBA2, ARCH_JAMBA, ARCH_SHM, ARCH_HYMBA, ARCH_COUNT } Arch;
typedef enum { SPLIT_NONE, SPLIT_AE, SPLIT_FA, SPLIT_FAC, SPLIT_COUNT } SplitStrategy;
typedef enum { RATIO_FLOPS, RATIO_MEASURED, RATIO_FIXED } RatioRule;
typedef enum { CONTEXT_ISOLATED, CONTEXT_PREFIX } ContextMode;
typedef enum { ATTN_FIRST, ATTN_LAST } AttnPosition;

typedef struct {
    Arch arch;
    int hidden_size;            /* H */
    int num_layers;             /* blocks (FlowHN: parallel blocks) */
    int num_heads;              /* attention query heads */
    int num_kv_heads;           /* grouped-query KV heads, divides num_heads */
    int head_dim;               /* derived: hidden_size / num_heads */
    int intermediate_size;      /* SwiGLU MLP width I */
    int vocab_size;             /* V */
    int max_seq_len;            /* largest T accepted (max_position_embeddings) */
    double norm_eps;            /* RMSNorm epsilon */
    int use_rope;               /* RoPE on attention q/k */
    double rope_theta;
    int tie_embeddings;         /* lm_head shares embed.weight */
    double init_std;            /* std of normal init of projections/embedding */

    /* Mamba-1 mixer (flowhn, mamba1, jamba, shm, hymba) */
    int d_state;                /* S */
    int expand;                 /* E = expand * H */
    int d_conv;                 /* K */
    int dt_rank;                /* R; 0 in the file means "auto" = ceil(H/16) */

    /* Mamba-2 mixer (mamba2) */
    int m2_d_state;             /* N */
    int m2_headdim;             /* P */
    int m2_ngroups;             /* G */
    int m2_chunk_size;          /* L */
    int m2_expand;              /* E = m2_expand * H */

    /* FlowHN split */
    SplitStrategy split;
    RatioRule ratio_rule;
    double split_ratio;         /* used when ratio_rule == RATIO_FIXED, in (0, 1) */
    int split_multiple;         /* n_a is rounded to a multiple of this */
    ContextMode context;
    AttnPosition attn_position;

    /* Jamba / SHM: layer l is attention iff l % attn_period == attn_offset */
    int attn_period;
    int attn_offset;
} Config;

/* Defaults for every field (a 135M-shaped FlowHN FAC_Split). */
void config_defaults(Config *c);
/* Reads and validates `path`. Returns 0, or -1 with fh_last_error() naming
 * the file, the field and the fix. */
int config_load(Config *c, const char *path);
/* Same from a JSON text; `origin` names it in messages. */
int config_parse(Config *c, const char *json_text, const char *origin);
/* Validates cross-field constraints (also called by config_parse). */
int config_validate(const Config *c, const char *origin);
/* Writes the config as JSON (every field, canonical names). Returns a malloc'd
 * string, or NULL on error. */
char *config_to_json(const Config *c);
/* Names for printing. */
const char *arch_name(Arch a);
const char *split_name(SplitStrategy s);
const char *context_name(ContextMode m);

/* Derived sizes */
static inline int cfg_E(const Config *c) { return c->expand * c->hidden_size; }
static inline int cfg_m2_E(const Config *c) { return c->m2_expand * c->hidden_size; }
static inline int cfg_m2_heads(const Config *c) { return cfg_m2_E(c) / c->m2_headdim; }
static inline int cfg_kv_dim(const Config *c) { return c->num_kv_heads * c->head_dim; }

#endif
