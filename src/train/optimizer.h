/* optimizer.h - AdamW over the model's parameter buffer, with decoupled
 * weight decay applied to matrices only (norms, biases, SSM parameters and
 * embeddings are not decayed unless asked), global-norm gradient clipping and
 * the warm-up + cosine learning-rate schedule. */
#ifndef FLOWHN_OPTIMIZER_H
#define FLOWHN_OPTIMIZER_H

#include "../model/model.h"

typedef struct {
    double lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip;
    int decay_embeddings;   /* also decay embed/lm_head when tied */
    int warmup_steps, total_steps;
} AdamWConfig;

typedef struct {
    AdamWConfig cfg;
    real *m, *v;            /* backend memory, one per parameter */
    int step;               /* steps taken */
} Optimizer;

void adamw_defaults(AdamWConfig *c);
int optimizer_create(Optimizer *o, const Model *model, const AdamWConfig *cfg);
void optimizer_free(Optimizer *o, const Model *model);
/* Learning rate at step t (0-based): linear warm-up to lr, then cosine to min_lr. */
double lr_at(const AdamWConfig *c, int t);
/* One update from the accumulated gradients (scaled by grad_scale, e.g.
 * 1/accumulation steps). Returns 0 and the gradient norm before clipping in
 * *gnorm; -1 if the gradient is not finite (no update is made), naming the
 * first tensor with a NaN/Inf. */
int optimizer_step(Optimizer *o, Model *model, double grad_scale, double *gnorm);

#endif
