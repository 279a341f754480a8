/* step.c - the training step as one recorded graph (see step.h). */
#include "step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

int train_step_supported(const Ops *ops) {
    return ops->classifier && ops->sum_into && ops->step_scale && ops->adamw_step;
}

int train_step_graph_env(void) {
    const char *no = getenv("FLOWHN_NO_GRAPH"), *yes = getenv("FLOWHN_GRAPH");
    if (no && !strcmp(no, "1")) return -1;
    return yes && !strcmp(yes, "1") ? 1 : 0;
}

int train_step_init(TrainStep *s, const Model *m, int use_graphs) {
    memset(s, 0, sizeof *s);
    if (!train_step_supported(m->ops)) return fh_error("backend %s cannot run the recorded training step", m->ops->name);
    s->graphs = use_graphs && m->ops->graph_begin && m->ops->graph_end && m->ops->graph_launch;
    s->dev = m->ops->alloc(sizeof(StepScalars));
    return s->dev ? 0 : -1;
}

static void drop_graph(TrainStep *s, const Model *m) {
    if (s->graph) m->ops->graph_free(s->graph);
    s->graph = NULL;
    s->state = 0;
}

void train_step_free(TrainStep *s, const Model *m) {
    drop_graph(s, m);
    if (s->dev) m->ops->release(s->dev);
    s->dev = NULL;
}

/* the step's backend work, between the host copies in and the readback */
static int body(Model *m, Optimizer *o, StepScalars *dev) {
    if (model_step_body(m, &dev->loss_sum)) return -1;
    optimizer_body(o, m, dev);
    return 0;
}

int train_step_run(TrainStep *s, Model *m, Optimizer *o, const int *tokens, const int *targets, int B, int T,
                   double *loss, double *gnorm) {
    const Ops *ops = m->ops;
    /* host inputs into the fixed buffers the recording reads */
    if (model_stage_batch(m, tokens, targets, B, T)) return -1;
    StepScalars h;
    memset(&h, 0, sizeof h);
    optimizer_stage(o, 1.0, &h);
    ops->from_host(s->dev, &h, sizeof h);
    /* (B, T, n_valid) of the warm-up, then of the recording: another shape must warm up (allocate) again,
     * another count of scored tokens is another 1/n_valid in the classifier */
    if (s->graphs && s->state && (s->B != B || s->T != T || s->n_valid != m->n_valid)) drop_graph(s, m);
    int ran = 0;
    if (s->graphs && s->state == 2) {
        int rc = ops->graph_launch(s->graph);
        if (rc < 0) return -1;
        if (rc == 0) { ran = 1; s->replays++; }
        else drop_graph(s, m);   /* stale: this step runs eagerly, the next is recorded again */
    } else if (s->graphs && s->state == 1) {
        if (ops->graph_begin()) return -1;
        int rc = body(m, o, s->dev);
        void *g = ops->graph_end();
        if (!rc && g && ops->graph_launch(g) == 0) {
            s->graph = g;
            s->state = 2;
            s->recordings++;
            ran = 1;
        } else {
            /* nothing ran: say why once, then this step (and the rest) eagerly */
            if (g) ops->graph_free(g);
            fprintf(stderr, "flowhn: %s; training steps run without graphs\n", fh_last_error());
            s->graphs = 0;
            s->state = 0;
        }
    }
    if (!ran) {
        if (body(m, o, s->dev)) return -1;
        if (s->graphs) {   /* warmed up at this key: record the next step if it has the same */
            s->state = 1;
            s->B = B; s->T = T; s->n_valid = m->n_valid;
        }
    }
    ops->to_host(&h, s->dev, sizeof h);   /* waits for the step */
    if (model_step_loss(m, h.loss_sum)) return -1;
    *loss = m->loss;
    return optimizer_finish(o, m, &h, gnorm);
}
