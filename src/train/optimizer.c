/* optimizer.c - AdamW (see optimizer.h). */
#include "optimizer.h"

#include <math.h>
#include <string.h>

#include "../core/error.h"

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

int optimizer_create(Optimizer *o, const Model *model, const AdamWConfig *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    size_t bytes = sizeof(real) * model->layout.total;
    o->m = model->ops->alloc(bytes);
    o->v = model->ops->alloc(bytes);
    if (!o->m || !o->v) {
        optimizer_free(o, model);
        return fh_error("cannot allocate optimizer state (%.1f MiB)", 2.0 * bytes / 1048576.0);
    }
    return 0;
}

void optimizer_free(Optimizer *o, const Model *model) {
    if (model && model->ops) {
        model->ops->release(o->m);
        model->ops->release(o->v);
    }
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

static int decayed(const Optimizer *o, const ParamEntry *e) {
    return e->kind == PK_MATRIX || (o->cfg.decay_embeddings && e->kind == PK_EMBED);
}

int optimizer_step(Optimizer *o, Model *model, double grad_scale, double *gnorm) {
    const Ops *ops = model->ops;
    const ParamLayout *L = &model->layout;
    double ss = ops->sum_squares(model->grads, L->total);
    if (!isfinite(ss)) {
        for (int i = 0; i < L->n; i++)
            if (!isfinite(ops->sum_squares(model->grads + L->entries[i].offset, L->entries[i].numel)))
                return fh_error("gradient of %s is not finite (NaN/Inf) at step %d; update skipped",
                                L->entries[i].name, o->step + 1);
        return fh_error("gradient is not finite at step %d; update skipped", o->step + 1);
    }
    double norm = sqrt(ss) * grad_scale;
    *gnorm = norm;
    double scale = grad_scale;
    if (o->cfg.grad_clip > 0 && norm > o->cfg.grad_clip) scale *= o->cfg.grad_clip / norm;
    double lr = lr_at(&o->cfg, o->step);
    o->step++;
    /* one call per run of neighbouring tensors with the same decay */
    for (int i = 0; i < L->n;) {
        int d = decayed(o, &L->entries[i]), j = i;
        size_t n = 0;
        while (j < L->n && decayed(o, &L->entries[j]) == d) n += L->entries[j++].numel;
        size_t off = L->entries[i].offset;
        ops->adamw(model->params + off, model->grads + off, o->m + off, o->v + off, n, (real)lr, (real)o->cfg.beta1,
                   (real)o->cfg.beta2, (real)o->cfg.eps, d ? (real)o->cfg.weight_decay : 0, (real)scale, o->step);
        i = j;
    }
    return 0;
}
