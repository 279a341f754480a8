/* tiny.h - tiny model configurations for tests, one per architecture and
 * FlowHN split/context, built in code so tests do not depend on files. */
#ifndef FLOWHN_TINY_H
#define FLOWHN_TINY_H

#include "../../src/model/config.h"

typedef struct { const char *name; Arch arch; SplitStrategy split; ContextMode ctx; AttnPosition pos; int layers; } TinySpec;

extern const TinySpec tiny_specs[];
extern const int n_tiny_specs;

/* A valid tiny config (H 16, 4 heads, 2 KV heads, I 24, V 32, S 4, ...). */
Config tiny_config(const TinySpec *s);
/* The same architecture at H 256, 4 layers, vocabulary 1024, max length T:
 * large enough for several Mamba-2 chunks and FlowHN splits with many tokens
 * per branch (the GPU tests' "-H256" cases). */
Config tiny_config_h256(const TinySpec *s, int T);
/* Deterministic test tokens/targets [B, T] for vocabulary V (a few targets -1). */
void tiny_batch(int *tokens, int *targets, int B, int T, int V, unsigned seed);

#endif
