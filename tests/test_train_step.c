/* test_train_step.c - the recordable training step (src/train/step.c: loss
 * sum, gradient norm, clipping and AdamW's scalars kept in backend memory,
 * ops sum_into / step_scale / adamw_step) gives the numbers of the trainer's
 * path (model_forward_backward + optimizer_step), for every architecture, on
 * the CPU (which has no graphs: the step runs op by op). Each step on a new
 * batch, clipping active, a change of the number of scored tokens, and a
 * NaN in a parameter: both paths refuse the step and leave the parameters
 * alone. Bounds: loss and norm rel 1e-12 (the loss sum is the same float
 * terms added in the same order, in double), parameters bitwise equal. The
 * GPU replay of the recorded graph is tests/cuda/test_cuda_graph.cu. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "../src/train/optimizer.h"
#include "../src/train/step.h"
#include "helpers/tiny.h"
#include "test.h"

#define STEPS 5

static void compare(int spec) {
    const TinySpec *s = &tiny_specs[spec];
    Config c = tiny_config(s);
    const int B = 2, T = 16, V = c.vocab_size;
    Model a, b;
    Optimizer oa, ob;
    AdamWConfig oc;
    adamw_defaults(&oc);
    oc.lr = 1e-2;
    oc.warmup_steps = 1;
    oc.total_steps = STEPS;
    oc.grad_clip = 0.1;
    TrainStep ts;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    int ok = !model_create(&a, &c, &cpu_ops) && !model_init_params(&a, 3) && !model_create(&b, &c, &cpu_ops) &&
             !model_init_params(&b, 3) && !optimizer_create(&oa, &a, &oc) && !optimizer_create(&ob, &b, &oc) &&
             !train_step_init(&ts, &b, 1);
    CHECK(ok, "%s: %s", s->name, fh_last_error());
    if (!ok) return;
    CHECK(!ts.graphs, "%s: the CPU backend has no graphs", s->name);
    double worst = 0;
    for (int k = 0; k < STEPS; k++) {
        tiny_batch(tok, tgt, B, T, V, 40 + k);
        if (k == 2) tgt[3] = -1;
        double ga, gb, lb;
        model_zero_grad(&a);
        int ra = model_forward_backward(&a, tok, tgt, B, T) || optimizer_step(&oa, &a, 1.0, &ga);
        int rb = train_step_run(&ts, &b, &ob, tok, tgt, B, T, &lb, &gb);
        CHECK(!ra && !rb, "%s step %d: %s", s->name, k, fh_last_error());
        if (ra || rb) break;
        worst = fmax(worst, fmax(fabs(a.loss - lb) / fabs(a.loss), fabs(ga - gb) / fabs(ga)));
    }
    CHECK(worst <= 1e-12, "%s: losses/norms differ by relative %.2e", s->name, worst);
    CHECK(oa.step == ob.step, "%s: steps %d vs %d", s->name, oa.step, ob.step);
    CHECK(!memcmp(a.params, b.params, sizeof(real) * a.layout.total), "%s: parameters differ", s->name);

    /* a NaN in a parameter: both refuse the update, name the cause, leave the parameters */
    a.params[0] = NAN;
    b.params[0] = NAN;
    real *before = malloc(sizeof(real) * b.layout.total);
    memcpy(before, b.params, sizeof(real) * b.layout.total);
    double ga, gb, lb;
    model_zero_grad(&a);
    int ra = model_forward_backward(&a, tok, tgt, B, T) || optimizer_step(&oa, &a, 1.0, &ga);
    int stepb = ob.step;
    int rb = train_step_run(&ts, &b, &ob, tok, tgt, B, T, &lb, &gb);
    CHECK(ra && rb, "%s: a NaN parameter was not refused (%d %d)", s->name, ra, rb);
    CHECK(strstr(fh_last_error(), "not finite") != NULL, "%s: message '%s'", s->name, fh_last_error());
    CHECK(ob.step == stepb, "%s: the refused step advanced the optimizer", s->name);
    /* bitwise, NaN included */
    CHECK(!memcmp(before, b.params, sizeof(real) * b.layout.total), "%s: the refused step changed parameters", s->name);
    free(before);
    train_step_free(&ts, &b);
    optimizer_free(&oa, &a);
    optimizer_free(&ob, &b);
    model_free(&a);
    model_free(&b);
    free(tok);
    free(tgt);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(compare, i, tiny_specs[i].name);
    TEST_SUMMARY();
}
