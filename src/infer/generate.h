/* generate.h - token-by-token decoding with an attention KV cache and the
 * SSM recurrent state: each new token costs O(1) SSM work and O(context)
 * attention work, for every architecture.
 *
 * FlowHN at decode time (docs/decisions.md, "Split at generation time"): the
 * split plan of the model's window W (max_position_embeddings unless
 * Model.plan_len says otherwise) decides, per layer, which branch a position
 * goes to. The attention branch keeps a KV cache of its own tokens (isolated)
 * or of every token (prefix: K/V of SSM-branch tokens are still computed and
 * cached, as the full forward does); the SSM branch carries its conv window and
 * state across the positions it does not own. The logits equal the full
 * forward's at the same positions under the same plan (tests/test_generate.c). */
#ifndef FLOWHN_GENERATE_H
#define FLOWHN_GENERATE_H

#include "../core/rng.h"
#include "../model/model.h"

typedef struct Generator Generator;

/* A decoder for B sequences of up to W tokens (W <= max_position_embeddings). */
Generator *generator_create(Model *m, int B);
void generator_free(Generator *g);
/* Feeds one token per sequence (tokens[B]) at the next position; writes the
 * next-token logits [B, V] to logits (host), or leaves them in the backend's
 * memory when logits is NULL (generator_logits). 0 or -1. */
int generator_step(Generator *g, const int *tokens, real *logits);
/* Feeds a prompt of P tokens per sequence (tokens [B, P], row-major) at
 * positions [0, P) in one batched pass of the model's ops (as the training
 * forward computes them: linear over B*P rows, attention over the prompt, the
 * chunked scans), leaving the generator as P generator_step calls would (KV
 * caches, conv windows, SSM states, position P; the same logits to fp32
 * reassociation, tests/test_generate.c) and writing the last position's
 * logits [B, V] to logits (host; NULL: left in the backend, generator_logits).
 * Needs a generator at position 0 and 1 <= P <= W. Runs model.c's forward
 * blocks (model_prefill): the model keeps about one layer's activations for
 * B*P rows (reused by the next prompt of the same length) and loses those of
 * its last forward. 0 or -1. */
int generator_prefill(Generator *g, const int *tokens, int P, real *logits);
/* Back to position 0 with empty caches and zero states (a new prompt
 * without reallocating). 0. */
int generator_reset(Generator *g);
/* The last step's logits [B, V] in the backend's memory. */
const real *generator_logits(const Generator *g);
/* Replaying each step recorded once as a graph (the backend's graph_*), on by
 * default unless FLOWHN_NO_GRAPH=1; the same logits (tests/cuda/test_cuda_decode.cu).
 * The KV caches' rows and the position are read on the device, so a recording
 * serves every step with the same ops: one recording for most architectures,
 * one per routing pattern (up to 8 kept) for FlowHN with a split
 * (FLOWHN_SPLIT_DECODE_GRAPH=0 turns those off). Returns
 * whether graphs are now used. */
int generator_set_graphs(Generator *g, int on);
/* Tokens consumed so far. */
int generator_position(const Generator *g);
/* FlowHN with a split: 1 if position t goes to layer l's attention branch, 0
 * if to its SSM branch; -1 for every other architecture or layer. */
int generator_routes_to_attention(const Generator *g, int l, int t);
/* The parameters (elements) the step at position t reads: all of them, except
 * that an untied input embedding contributes only its B rows, and FlowHN with
 * a split skips the branch the position is not routed to (with prefix context
 * the attention branch's norm, K and V weights are still read: every token's
 * K/V enter its cache). The decode bench's bandwidth bound. */
size_t generator_step_params(const Generator *g, int t);

typedef struct { double temperature; int top_k; double top_p; } SamplerConfig;
/* Samples from logits [V] (temperature 0 = greedy). */
int sample_token(const real *logits, int V, const SamplerConfig *s, Rng *rng);

#endif
