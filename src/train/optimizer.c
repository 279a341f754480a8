/* optimizer.c - AdamW (see optimizer.h). */
#include "optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../dist/shard.h"

void adamw_defaults(AdamWConfig *c) {
    /* the paper's recipe: AdamW lr 3e-4, betas (0.9, 0.95), weight decay 0.1, 10% warm-up, cosine */
    c->lr = 3e-4;
    c->min_lr = 3e-5;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
    c->decay_embeddings = 0;
    c->warmup_steps = 0;
    c->total_steps = 1;
}

static int decayed(const AdamWConfig *c, const ParamEntry *e) {
    return e->kind == PK_MATRIX || (c->decay_embeddings && e->kind == PK_EMBED);
}

/* Runs of neighbouring tensors with the same decay, intersected with [lo, hi). */
static int build_runs(Optimizer *o, const ParamLayout *L) {
    o->runs = malloc(sizeof(OptRun) * (L->n ? L->n : 1));
    if (!o->runs) return fh_error("out of memory");
    o->n_runs = 0;
    for (int i = 0; i < L->n;) {
        int d = decayed(&o->cfg, &L->entries[i]), j = i;
        size_t a = L->entries[i].offset, b = a;
        for (; j < L->n && decayed(&o->cfg, &L->entries[j]) == d; j++) b = L->entries[j].offset + L->entries[j].numel;
        size_t lo = a > o->lo ? a : o->lo, hi = b < o->hi ? b : o->hi;
        if (lo < hi) o->runs[o->n_runs++] = (OptRun){lo, hi - lo, d};
        i = j;
    }
    /* the same runs as one call's table (Ops.adamw_runs) */
    o->run_bounds = malloc(sizeof(size_t) * (o->n_runs + 1));
    o->run_decay = malloc(o->n_runs ? o->n_runs : 1);
    if (!o->run_bounds || !o->run_decay) return fh_error("out of memory");
    for (int r = 0; r < o->n_runs; r++) {
        o->run_bounds[r] = o->runs[r].offset - o->lo;
        o->run_decay[r] = (unsigned char)o->runs[r].decay;
    }
    o->run_bounds[o->n_runs] = o->hi - o->lo;
    return 0;
}

int optimizer_create_shard(Optimizer *o, const Model *model, const AdamWConfig *cfg, Dist *dist, int rank, int world) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->dist = dist;
    size_t total = model->layout.total;
    o->per_rank = shard_per_rank(total, world);
    shard_range(total, world, rank, &o->lo, &o->hi);
    size_t bytes = sizeof(real) * (o->per_rank ? o->per_rank : 1);
    o->m = model->ops->alloc(bytes);
    o->v = model->ops->alloc(bytes);
    if (!o->m || !o->v) {
        optimizer_free(o, model);
        return fh_error("cannot allocate optimizer state (%.1f MiB)", 2.0 * bytes / 1048576.0);
    }
    if (build_runs(o, &model->layout)) { optimizer_free(o, model); return -1; }
    /* The backend may keep a converted copy of the weights that AdamW updates along with them (CUDA, bf16
     * products: their bf16 roundings, read by every product instead of rounding each weight before it). A
     * hint: without the copy (no room) the products convert as before, so a failure is not an error. */
    if (model->ops->train_weights) {
        const ParamLayout *L = &model->layout;
        size_t *starts = malloc(sizeof(size_t) * (L->n ? L->n : 1));
        for (int i = 0; starts && i < L->n; i++) starts[i] = L->entries[i].offset;
        if (starts) model->ops->train_weights(model->params, L->total, starts, L->n);
        free(starts);
    }
    return 0;
}

int optimizer_create(Optimizer *o, const Model *model, const AdamWConfig *cfg) {
    return optimizer_create_shard(o, model, cfg, NULL, 0, 1);
}

void optimizer_free(Optimizer *o, const Model *model) {
    if (model && model->ops) {
        if (model->ops->train_weights && o->runs) model->ops->train_weights(model->params, 0, NULL, 0);
        model->ops->release(o->m);
        model->ops->release(o->v);
    }
    free(o->runs);
    free(o->run_bounds);
    free(o->run_decay);
    o->runs = NULL;
    o->run_bounds = NULL;
    o->run_decay = NULL;
    o->m = o->v = NULL;
}

double lr_at(const AdamWConfig *c, int t) {
    if (t < c->warmup_steps) return c->lr * (t + 1) / c->warmup_steps;
    int span = c->total_steps - c->warmup_steps;
    if (span <= 0) return c->lr;
    double p = (double)(t - c->warmup_steps) / span;
    if (p > 1) p = 1;
    return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1 + cos(M_PI * p));
}

double optimizer_local_sumsq(const Optimizer *o, const Model *model) {
    return o->hi > o->lo ? model->ops->sum_squares(model->grads + o->lo, o->hi - o->lo) : 0;
}

/* the error for a non-finite gradient, naming the first tensor with a NaN/Inf
 * in this rank's range (another rank may hold it) */
static int gradient_not_finite(const Optimizer *o, const Model *model) {
    const Ops *ops = model->ops;
    const ParamLayout *L = &model->layout;
    for (int i = 0; i < L->n; i++) {
        size_t a = L->entries[i].offset, b = a + L->entries[i].numel;
        a = a > o->lo ? a : o->lo;
        b = b < o->hi ? b : o->hi;
        if (a < b && !isfinite(ops->sum_squares(model->grads + a, b - a)))
            return fh_error("gradient of %s is not finite (NaN/Inf) at step %d; update skipped", L->entries[i].name,
                            o->step + 1);
    }
    return fh_error("gradient is not finite at step %d; update skipped", o->step + 1);
}

int optimizer_apply(Optimizer *o, Model *model, double ss, double grad_scale, double *gnorm) {
    const Ops *ops = model->ops;
    if (!isfinite(ss)) return gradient_not_finite(o, model);
    double norm = sqrt(ss) * grad_scale;
    *gnorm = norm;
    double scale = grad_scale;
    if (o->cfg.grad_clip > 0 && norm > o->cfg.grad_clip) scale *= o->cfg.grad_clip / norm;
    double lr = lr_at(&o->cfg, o->step);
    o->step++;
    if (ops->adamw_runs && o->n_runs > 0) {   /* every run in one call (fewer launches), the same values */
        ops->adamw_runs(model->params + o->lo, model->grads + o->lo, o->m, o->v, o->hi - o->lo, o->n_runs,
                        o->run_bounds, o->run_decay, NULL, (real)lr, (real)o->cfg.beta1, (real)o->cfg.beta2,
                        (real)o->cfg.eps, (real)o->cfg.weight_decay, (real)scale, o->step);
        return 0;
    }
    for (int r = 0; r < o->n_runs; r++) {
        const OptRun *u = &o->runs[r];
        size_t mo = u->offset - o->lo;
        ops->adamw(model->params + u->offset, model->grads + u->offset, o->m + mo, o->v + mo, u->n, (real)lr,
                   (real)o->cfg.beta1, (real)o->cfg.beta2, (real)o->cfg.eps, u->decay ? (real)o->cfg.weight_decay : 0,
                   (real)scale, o->step);
    }
    return 0;
}

int optimizer_step(Optimizer *o, Model *model, double grad_scale, double *gnorm) {
    double ss = optimizer_local_sumsq(o, model);
    /* the global norm: every rank's part of the sum of squares */
    if (o->dist && o->dist->world > 1 && o->dist->all_reduce_host(o->dist, &ss, 1, "all-reduce of the gradient norm"))
        return -1;
    return optimizer_apply(o, model, ss, grad_scale, gnorm);
}

/* ---- the update inside a recorded step (optimizer.h) ---- */

void optimizer_stage(const Optimizer *o, double grad_scale, StepScalars *s) {
    int t = o->step + 1;
    /* the bias corrections as the adamw ops form them: pow of the real-typed betas, in double */
    s->bc1 = 1.0 - pow((double)(real)o->cfg.beta1, t);
    s->bc2 = 1.0 - pow((double)(real)o->cfg.beta2, t);
    s->grad_scale = grad_scale;
    s->clip = o->cfg.grad_clip;
    s->lr = (float)(real)lr_at(&o->cfg, o->step);
}

void optimizer_body(const Optimizer *o, Model *model, StepScalars *s) {
    const Ops *ops = model->ops;
    ops->sum_into(&s->sumsq, model->grads + o->lo, o->hi - o->lo, 1);
    ops->step_scale(s);
    if (ops->adamw_runs && o->n_runs > 0) {
        ops->adamw_runs(model->params + o->lo, model->grads + o->lo, o->m, o->v, o->hi - o->lo, o->n_runs,
                        o->run_bounds, o->run_decay, s, 0, (real)o->cfg.beta1, (real)o->cfg.beta2, (real)o->cfg.eps,
                        (real)o->cfg.weight_decay, 0, 0);
        return;
    }
    for (int r = 0; r < o->n_runs; r++) {
        const OptRun *u = &o->runs[r];
        size_t mo = u->offset - o->lo;
        ops->adamw_step(model->params + u->offset, model->grads + u->offset, o->m + mo, o->v + mo, u->n, s,
                        (real)o->cfg.beta1, (real)o->cfg.beta2, (real)o->cfg.eps,
                        u->decay ? (real)o->cfg.weight_decay : 0);
    }
}

int optimizer_finish(Optimizer *o, Model *model, const StepScalars *s, double *gnorm) {
    if (!isfinite(s->sumsq)) return gradient_not_finite(o, model);
    if (!s->ok) return fh_error("the loss is not finite at step %d; update skipped", o->step + 1);
    *gnorm = sqrt(s->sumsq) * s->grad_scale;
    o->step++;
    return 0;
}
