/* optimizer.h - AdamW over the model's parameter buffer, with decoupled
 * weight decay applied to matrices only (norms, biases, SSM parameters and
 * embeddings are not decayed unless asked), global-norm gradient clipping and
 * the warm-up + cosine learning-rate schedule. */
#ifndef FLOWHN_OPTIMIZER_H
#define FLOWHN_OPTIMIZER_H

#include "../dist/dist.h"
#include "../model/model.h"

typedef struct {
    double lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip;
    int decay_embeddings;   /* also decay embed/lm_head when tied */
    int warmup_steps, total_steps;
} AdamWConfig;

/* One AdamW call: a run of neighbouring tensors with the same weight decay,
 * cut to the optimizer's range. */
typedef struct { size_t offset, n; int decay; } OptRun;

/* ZeRO-1: with world > 1, each rank keeps moments for, and updates, only its
 * range [lo, hi) of the flat buffer (src/dist/shard.h); with world 1 the range
 * is everything. */
typedef struct {
    AdamWConfig cfg;
    real *m, *v;            /* backend memory: moments of [lo, hi), m[i - lo]; per_rank reals (padding zero) */
    size_t lo, hi, per_rank;
    OptRun *runs;           /* the AdamW calls over [lo, hi) */
    int n_runs;
    size_t *run_bounds;     /* n_runs + 1 run starts relative to lo, then hi - lo (Ops.adamw_runs) */
    unsigned char *run_decay; /* per run: weight decay applies */
    Dist *dist;             /* NULL or a world of one: no collectives */
    int step;               /* steps taken */
} Optimizer;

void adamw_defaults(AdamWConfig *c);
int optimizer_create(Optimizer *o, const Model *model, const AdamWConfig *cfg);
/* The optimizer of rank `rank` of `world` (dist may be NULL when world is 1). */
int optimizer_create_shard(Optimizer *o, const Model *model, const AdamWConfig *cfg, Dist *dist, int rank, int world);
void optimizer_free(Optimizer *o, const Model *model);
/* Learning rate at step t (0-based): linear warm-up to lr, then cosine to min_lr. */
double lr_at(const AdamWConfig *c, int t);
/* One update from the accumulated gradients (scaled by grad_scale, e.g.
 * 1/accumulation steps). Returns 0 and the gradient norm before clipping in
 * *gnorm; -1 if the gradient is not finite (no update is made), naming the
 * first tensor with a NaN/Inf. */
int optimizer_step(Optimizer *o, Model *model, double grad_scale, double *gnorm);
/* optimizer_step in two halves, the collective between them: the sum of
 * squares of this range's gradients, then the update given the sum over all
 * ranks (the global norm before clipping is sqrt(ss) * grad_scale). */
double optimizer_local_sumsq(const Optimizer *o, const Model *model);
int optimizer_apply(Optimizer *o, Model *model, double global_ss, double grad_scale, double *gnorm);

/* optimizer_step with every scalar on the backend, for a step recorded as a
 * graph (src/train/step.c; world 1 only, no collective in between):
 *  - optimizer_stage: the host's inputs for the next update (learning rate,
 *    bias corrections, grad_scale, clip) into the host copy *s;
 *  - optimizer_body: sum of squares, clipping and AdamW (ops sum_into,
 *    step_scale, adamw_step) on s in backend memory; no host round trip; the
 *    update is skipped on the device when the loss or the gradient is not finite;
 *  - optimizer_finish: from the host copy read back after the step, the norm
 *    before clipping and step + 1, or -1 as optimizer_apply (no update made).
 * The same numbers as optimizer_step. */
void optimizer_stage(const Optimizer *o, double grad_scale, StepScalars *s);
void optimizer_body(const Optimizer *o, Model *model, StepScalars *s);
int optimizer_finish(Optimizer *o, Model *model, const StepScalars *s, double *gnorm);

#endif
