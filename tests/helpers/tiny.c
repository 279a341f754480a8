#include "tiny.h"

#include <string.h>

const TinySpec tiny_specs[] = {
    {"llama", ARCH_LLAMA, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"mamba1", ARCH_MAMBA1, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"mamba2", ARCH_MAMBA2, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"jamba", ARCH_JAMBA, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 3},
    {"shm", ARCH_SHM, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"hymba", ARCH_HYMBA, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"flowhn-none-isolated", ARCH_FLOWHN, SPLIT_NONE, CONTEXT_ISOLATED, ATTN_LAST, 2},
    {"flowhn-none-prefix", ARCH_FLOWHN, SPLIT_NONE, CONTEXT_PREFIX, ATTN_LAST, 2},
    {"flowhn-ae-isolated", ARCH_FLOWHN, SPLIT_AE, CONTEXT_ISOLATED, ATTN_FIRST, 2},
    {"flowhn-ae-prefix", ARCH_FLOWHN, SPLIT_AE, CONTEXT_PREFIX, ATTN_LAST, 2},
    {"flowhn-fa-isolated", ARCH_FLOWHN, SPLIT_FA, CONTEXT_ISOLATED, ATTN_FIRST, 2},
    {"flowhn-fa-prefix", ARCH_FLOWHN, SPLIT_FA, CONTEXT_PREFIX, ATTN_LAST, 2},
    {"flowhn-fac-isolated", ARCH_FLOWHN, SPLIT_FAC, CONTEXT_ISOLATED, ATTN_LAST, 3},
    {"flowhn-fac-prefix", ARCH_FLOWHN, SPLIT_FAC, CONTEXT_PREFIX, ATTN_FIRST, 3},
};
const int n_tiny_specs = sizeof tiny_specs / sizeof tiny_specs[0];

/* The sizes in which the two tiny families differ; everything else is shared. */
typedef struct {
    int hidden, layers, heads, kv_heads, head_dim, inter, vocab, max_seq;
    double init_std;
    int d_state, dt_rank, split_multiple;
} TinySize;

static Config sized_config(const TinySpec *s, TinySize z) {
    Config c;
    memset(&c, 0, sizeof c);
    c.arch = s->arch;
    c.hidden_size = z.hidden;
    c.num_layers = z.layers;
    c.num_heads = z.heads;
    c.num_kv_heads = z.kv_heads;
    c.head_dim = z.head_dim;
    c.intermediate_size = z.inter;
    c.vocab_size = z.vocab;
    c.max_seq_len = z.max_seq;
    c.norm_eps = 1e-6;
    c.use_rope = s->arch == ARCH_LLAMA || s->arch == ARCH_HYMBA;
    c.rope_theta = 10000;
    c.tie_embeddings = s->arch == ARCH_SHM;
    c.init_std = z.init_std;
    c.d_state = z.d_state;
    c.expand = 2;
    c.d_conv = 4;
    c.dt_rank = z.dt_rank;
    c.m2_d_state = 4;
    c.m2_headdim = 8;
    c.m2_ngroups = 1;
    c.m2_chunk_size = 4;
    c.m2_expand = 2;
    c.split = s->split;
    c.ratio_rule = RATIO_FIXED;
    c.split_ratio = 0.6;
    c.split_multiple = z.split_multiple;
    c.context = s->ctx;
    c.attn_position = s->pos;
    c.attn_period = 2;
    c.attn_offset = 1;
    return c;
}

Config tiny_config(const TinySpec *s) {
    return sized_config(s, (TinySize){.hidden = 16, .layers = s->layers, .heads = 4, .kv_heads = 2, .head_dim = 4,
                                      .inter = 24, .vocab = 32, .max_seq = 64, .init_std = 0.2, .d_state = 4,
                                      .dt_rank = 2, .split_multiple = 2});
}

void tiny_batch(int *tokens, int *targets, int B, int T, int V, unsigned seed) {
    unsigned x = seed * 2654435761u + 1;
    for (int i = 0; i < B * T; i++) {
        x = x * 1103515245u + 12345u;
        tokens[i] = (int)((x >> 8) % (unsigned)V);
    }
    for (int i = 0; i < B * T; i++) targets[i] = (i % T == T - 1) ? -1 : tokens[i + 1];
    if (B * T > 5) targets[3] = -1;
}

Config tiny_config_h256(const TinySpec *s, int T) {
    return sized_config(s, (TinySize){.hidden = 256, .layers = 4, .heads = 8, .kv_heads = 4, .head_dim = 32,
                                      .inter = 688, .vocab = 1024, .max_seq = T, .init_std = 0.02, .d_state = 16,
                                      .dt_rank = 16, .split_multiple = 16});
}
