/* model.h - one model definition for every architecture, on any backend.
 *
 * model_forward() runs embedding -> layers -> final norm -> LM head -> loss;
 * model_backward() runs the same in reverse, accumulating into m->grads.
 * Parameters and gradients are single contiguous buffers (layout.h). */
#ifndef FLOWHN_MODEL_H
#define FLOWHN_MODEL_H

#include <stdint.h>
#include <stdio.h>

#include "../ops/ops.h"
#include "config.h"
#include "layout.h"
#include "split.h"

typedef struct ModelActs ModelActs;   /* activations (model.c) */

typedef struct {
    Config cfg;
    const Ops *ops;
    ParamLayout layout;
    real *params, *grads;      /* backend memory, layout.total reals each */

    /* FlowHN split window: 0 = plan for each input's own length T (training,
     * the paper's behaviour); W > 0 = use the plan of length max(W, T) restricted
     * to the input's positions, so a token's branch depends only on its position
     * (generation and evaluation; docs/decisions.md). */
    int plan_len;

    /* state of the last forward */
    int B, T, plan_len_used;
    SplitPlan plan;            /* FlowHN split for length plan.T */
    int **pa_dev, **ps_dev;    /* the plan's positions in backend memory, per layer */
    int *iota_dev;             /* 0..T-1 in backend memory */
    int *tokens_dev, *targets_dev;
    int *targets_host;
    int has_targets, n_valid;
    double loss;               /* mean loss of the last forward with targets */
    ModelActs *acts;

    /* Gradient-ready hook (NULL: none). The backward finishes the flat
     * gradient buffer from its end to its start: head and final norm first,
     * then the layers from the last to the first, the embedding (also the
     * tied head) last. After each of those blocks it calls
     * grads_ready(grads_ready_ctx, off), meaning the gradients of
     * [off, layout.total) are final for this backward (their kernels are
     * queued, not necessarily done); off takes the values of
     * model_grad_frontiers, in that order, ending with 0. Data parallelism
     * uses it to start reducing finished gradients while the backward goes on
     * (src/dist/bucket.h). A non-zero return stops the backward with an error. */
    int (*grads_ready)(void *ctx, size_t off);
    void *grads_ready_ctx;

    /* Test hooks (tests/test_zero_elim.c), 0 in normal use.
     * zero_first: the backward zeroes every activation-gradient buffer before
     *   its first writer, which then accumulates (the old scheme, kept as the
     *   reference the overwriting backward must match bit for bit).
     * poison_acts: activation buffers start as NaN instead of zeros (set it
     *   before the first forward of a shape), so an element read before any
     *   op wrote it shows in the loss or the gradients. */
    int zero_first, poison_acts;
    /* 1: Mamba's conv and SiLU run as conv1d_fwd + silu_fwd (and their
     * backwards) even when the backend has the fused conv1d_silu ops: the
     * composition for A/B timing and the reference the fused op must match
     * (tests/test_zero_elim.c). model_create sets it from FLOWHN_CONV_SILU=0. */
    int unfused_conv_silu;
    /* 1 while trunk_compute runs the layers (a training or loss forward): the
     * layers then tell the backend which product inputs they save for the
     * backward (Ops.keep_bf16); 0 otherwise (the prefill's layers share
     * buffers, so nothing is kept there). */
    int keep_acts;
    /* 1: attention with RoPE runs as rope_fwd on q and k, attention_fwd (and
     * attention_bwd, two rope_bwd) even when the backend has the fused
     * attention_rope ops: the A/B timing's other side and the reference the
     * fused ops must match. model_create sets it from FLOWHN_ATTN_ROPE=0. */
    int unfused_attn_rope;
    /* FlowHN split: 1 the separate gather ops (FLOWHN_SPLIT_FUSE=0), 0 the gathers in the
     * branches' first norms where the backend has them (ops.h rmsnorm_gather_*) */
    int unfused_split;
    /* 1: q, k, v (and gate, up) as separate products (FLOWHN_FUSE_PROJ=0); 0: one product over the
     * adjacent stacked weights where valid (self-attention; ops.h swiglu_packed_*), its outputs packed
     * in rows and read with a row stride (perf-notes, fuse-proj) */
    int unfused_proj;
    /* 1: Mamba-2's in_proj as three products z, x|B|C, dt (FLOWHN_FUSE_INPROJ=0); 0: one product, its
     * outputs packed in rows and read with a row stride (model.c m2_packed; perf-notes, fuse-inproj) */
    int unfused_inproj;
    int prefilling;   /* set by model_prefill while it runs (its caches take the stored rotated keys) */
    /* Gradient zeroing (model_zero_grad). 1 (FLOWHN_ZERO_GRAD=1, or zero_first): one memset of the whole
     * gradient buffer, every writer accumulates (the old path: the A/B's other side and the reference).
     * 0: model_zero_grad zeroes only the tensors that are not product weights; each product weight's
     * gradient is overwritten by its first linear_bwd of the accumulation (ops.h FH_DW_OVERWRITE), and
     * one that no product reaches (a FlowHN branch without tokens) is zeroed when its layer's backward
     * ends. The buffer then holds zeros + the first backward's gradients once that backward is done;
     * between model_zero_grad and that backward's end the lazy tensors hold anything. */
    int zero_grad_full;
    /* 1 (default; FLOWHN_LAZY_HEAD=0 makes it 0): the head's gradient (the embedding's when tied) is lazy too, its
     * first writer the classifier (ops.h classifier acc) or the unfused head product; 0: zeroed with the rest */
    int lazy_head;
    int grad_fresh;            /* model_zero_grad ran, its first backward has not finished */
    int n_lazy;                /* the product weights: [lazy_off[i], + lazy_n[i]), ascending */
    size_t *lazy_off, *lazy_n, *lazy_done;   /* lazy_done: reals written from the start this accumulation */
    int n_zruns;               /* the rest of the buffer: runs [zrun[2i], + zrun[2i+1]) */
    size_t *zrun;
    /* zrun in the backend's memory, uploaded once by model_create for ops->zero_runs (one launch for all
     * runs; NULL without the op, or with FLOWHN_ZERO_RUNS=0: one ops->zero a run, the A/B's other side) */
    size_t *zrun_dev;
} Model;

/* Builds the layout and allocates parameters and gradients (zeroed). */
int model_create(Model *m, const Config *c, const Ops *ops);
void model_free(Model *m);
/* Deterministic initialisation from a seed (host init, then copied). */
int model_init_params(Model *m, uint64_t seed);
/* Forward on tokens [B, T] (host). targets [B, T] (host, -1 = ignored) may be
 * NULL: then only logits are computed. Checks token ids, T and that the loss
 * is finite. 0 or -1 with fh_last_error(). */
int model_forward(Model *m, const int *tokens, const int *targets, int B, int T);
/* Backward of the last forward (which must have had targets); accumulates
 * d(mean loss)/d(params) into m->grads. */
int model_backward(Model *m);
/* A training step's forward and backward in one call (fused classifier: the
 * [B, T, V] logits are never stored); the same loss and gradients as
 * model_forward + model_backward. model_logits() is not available after it. */
int model_forward_backward(Model *m, const int *tokens, const int *targets, int B, int T);
/* The same training step split for recording as a graph (src/train/step.c):
 *  - model_stage_batch: checks the batch, (re)builds the shape's state and
 *    copies tokens and targets into the model's fixed backend buffers (host
 *    work; the scale 1/n_valid it fixes is in m->n_valid);
 *  - model_step_body: zeroes the gradients, forward, fused classifier,
 *    backward; the summed loss goes to *loss_sum (backend memory). It copies
 *    nothing to or from the host, and after one run at a shape it allocates
 *    nothing, so a later run can be recorded and replayed;
 *  - model_step_loss: m->loss from the sum read back, and the error naming the
 *    cause when it is not finite (as model_forward_backward's).
 * Needs ops->classifier and ops->sum_into. 0 or -1 with fh_last_error(). */
int model_stage_batch(Model *m, const int *tokens, const int *targets, int B, int T);
int model_step_body(Model *m, double *loss_sum);
int model_step_loss(Model *m, double loss_sum);
/* Starts a gradient accumulation: the next backward's gradients are written over the old ones (see
 * Model.zero_grad_full), later backwards add to them. */
void model_zero_grad(Model *m);
/* The offsets the backward reports to grads_ready, in order (decreasing,
 * the last is 0): norm_f's offset, then each layer's begin from the last
 * layer to the first, then 0. Writes at most cap; returns how many there are
 * (num_layers + 2). */
int model_grad_frontiers(const Model *m, size_t *out, int cap);
/* Logits of the last forward, [B, T, V], backend memory. */
const real *model_logits(const Model *m);
/* Per-token losses of the last model_forward with targets, [B, T], backend
 * memory (0 where the target is ignored); m->loss is their mean over the
 * counted tokens. NULL before any forward with targets. */
const real *model_token_losses(const Model *m);
/* The generator's batched prefill (src/infer/generate.c): the forward's
 * embedding and layers on tokens [B, T] (the training forward's blocks and
 * ops; no final norm or head), calling take(ctx, l, part, mc) after layer l
 * with the tensors a decoding cache keeps, per mixer: part 0 a decoder
 * layer's mixer, 1 a FlowHN/Hymba attention mixer, 2 their SSM mixer (a
 * FlowHN branch with no token is skipped, but in prefix context the
 * attention branch always gets every token's keys). mc is valid during the
 * call only. *out: the last layer's output [B, T, H]. Layers with the same
 * shapes share their activations (about one layer's are held, kept for the
 * next call at the same shape); the last forward's activations are gone.
 * FlowHN routes by m->plan_len as model_forward does. 0 or -1. */
typedef struct {
    int n;                              /* tokens (attention: the cached keys) */
    const real *k, *v;                  /* attention: keys after RoPE, values [B, n, kv_dim]; NULL for Mamba */
    const real *conv_in;                /* Mamba: the conv inputs [B, n, C] */
    int C;
    const real *state;                  /* Mamba: the state after the last token, B rows of state_n reals */
    size_t state_n, state_ld;           /* ... state_ld apart */
} MixerCache;
typedef int (*ModelCacheFn)(void *ctx, int l, int part, const MixerCache *mc);
int model_prefill(Model *m, const int *tokens, int B, int T, ModelCacheFn take, void *ctx, const real **out);
/* split_ratio "measured" (the ACL paper's hardware-aligned ratio): times the
 * forward pass on this model's backend at every candidate n_a (multiples of
 * split_multiple, at most ~32) at length T, keeps the fastest and stores it
 * as a fixed ratio in m->cfg (so checkpoints record the number). A no-op for
 * other rules; log (may be NULL) receives the table. 0 or -1. */
int model_measure_split(Model *m, int T, int reps, FILE *log);
/* n_a the split rule gives at length T (FlowHN); T for other architectures. */
int model_split_na(const Config *c, int T);

#endif
