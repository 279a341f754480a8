/* test_sumsq.c - the gradient norm's sum of squares made block by block
 * during the backward (Model.sumsq_arm, ops sumsq_part / sumsq_join;
 * docs/perf-notes.md "sumsq"), on the CPU, where the parts run at once:
 *  - the parts tile the buffer: their sum is, bit for bit, the in-order sum
 *    of sum_squares over the blocks between model_grad_frontiers, and within
 *    relative 1e-12 of one sum_squares of the whole buffer (the old pass);
 *  - the trainer's path (model_forward_backward + optimizer_step, the last
 *    micro-batch armed) with gradient accumulation 1 and 2, and the recorded
 *    step (train_step_run), give the old path's norm (rel 1e-12) and its
 *    parameters (max abs 1e-6: the clip scale is the norm's float rounding),
 *    with clipping active; tied and untied embeddings, every architecture;
 *  - only the armed backward makes parts; a later model_zero_grad drops
 *    unused ones. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "../src/train/optimizer.h"
#include "../src/train/step.h"
#include "helpers/tiny.h"
#include "test.h"

#define STEPS 3

static double max_abs_diff(const real *a, const real *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]));
    return w;
}

/* the parts against the blocks and the whole buffer after one armed backward */
static void check_parts(Model *m, const char *name, const int *tok, const int *tgt, int B, int T) {
    model_zero_grad(m);
    m->sumsq_arm = 1;
    CHECK(!model_forward_backward(m, tok, tgt, B, T), "%s: %s", name, fh_last_error());
    CHECK(m->sumsq_state == 2 && m->sumsq_k == m->cfg.num_layers + 2, "%s: state %d, %d parts", name, m->sumsq_state,
          m->sumsq_k);
    size_t f[64];
    int nf = model_grad_frontiers(m, f, 64);
    double blocks = 0, hi = m->layout.total;
    for (int i = 0; i < nf; i++) {
        blocks += m->ops->sum_squares(m->grads + f[i], (size_t)hi - f[i]);
        hi = f[i];
    }
    double whole = m->ops->sum_squares(m->grads, m->layout.total), got = NAN;
    CHECK(model_sumsq_into(m, &got) == 1, "%s: no parts", name);
    CHECK(got == blocks, "%s: parts %.17g, blocks %.17g", name, got, blocks);
    CHECK(fabs(got - whole) <= 1e-12 * whole, "%s: parts %.17g, whole %.17g", name, got, whole);
    CHECK(m->sumsq_state == 0 && model_sumsq_into(m, &got) == 0, "%s: the parts were taken twice", name);
}

static void compare(const TinySpec *s, int tied, int accum) {
    Config c = tiny_config(s);
    c.tie_embeddings = tied;
    const int B = 2, T = 16, V = c.vocab_size;
    char name[128];
    snprintf(name, sizeof name, "%s tied %d accum %d", s->name, tied, accum);
    Model a, b, g;
    Optimizer oa, ob, og;
    AdamWConfig oc;
    adamw_defaults(&oc);
    oc.lr = 1e-2;
    oc.warmup_steps = 1;
    oc.total_steps = STEPS;
    oc.grad_clip = 0.1;
    TrainStep ts;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    int ok = !model_create(&a, &c, &cpu_ops) && !model_init_params(&a, 3) && !model_create(&b, &c, &cpu_ops) &&
             !model_init_params(&b, 3) && !model_create(&g, &c, &cpu_ops) && !model_init_params(&g, 3) &&
             !optimizer_create(&oa, &a, &oc) && !optimizer_create(&ob, &b, &oc) && !optimizer_create(&og, &g, &oc) &&
             !train_step_init(&ts, &g, 1);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) return;
    a.sumsq_overlap = 0;   /* the old pass */
    b.sumsq_overlap = 1;
    g.sumsq_overlap = 1;
    double worst = 0, worst_p = 0;
    for (int k = 0; k < STEPS; k++) {
        double ga = 0, gb = 0, gg = 0, lg;
        model_zero_grad(&a);
        model_zero_grad(&b);
        int ra = 0, rb = 0;
        for (int i = 0; i < accum; i++) {
            tiny_batch(tok, tgt, B, T, V, 70 + 2 * k + i);
            a.sumsq_arm = b.sumsq_arm = i == accum - 1;
            ra |= model_forward_backward(&a, tok, tgt, B, T);
            rb |= model_forward_backward(&b, tok, tgt, B, T);
            CHECK(a.sumsq_state == 0, "%s: parts with the switch off", name);
            CHECK(b.sumsq_state == (i == accum - 1 ? 2 : 0), "%s micro-batch %d: state %d", name, i, b.sumsq_state);
        }
        ra |= optimizer_step(&oa, &a, 1.0 / accum, &ga);
        rb |= optimizer_step(&ob, &b, 1.0 / accum, &gb);
        CHECK(b.sumsq_state == 0, "%s: the optimizer left the parts", name);
        CHECK(!ra && !rb, "%s step %d: %s", name, k, fh_last_error());
        worst = fmax(worst, fabs(ga - gb) / ga);
        if (accum == 1) {   /* the recorded step (op by op on the CPU) */
            tiny_batch(tok, tgt, B, T, V, 70 + 2 * k);
            CHECK(!train_step_run(&ts, &g, &og, tok, tgt, B, T, &lg, &gg), "%s: %s", name, fh_last_error());
            CHECK(g.sumsq_state == 0, "%s: the step left the parts", name);
            worst = fmax(worst, fabs(ga - gg) / ga);
            worst_p = fmax(worst_p, max_abs_diff(a.params, g.params, a.layout.total));
        }
        worst_p = fmax(worst_p, max_abs_diff(a.params, b.params, a.layout.total));
    }
    CHECK(worst <= 1e-12, "%s: norms differ by relative %.2e", name, worst);
    CHECK(worst_p <= 1e-6, "%s: parameters differ by %.2e", name, worst_p);
    if (accum == 1) {
        tiny_batch(tok, tgt, B, T, V, 99);
        check_parts(&b, name, tok, tgt, B, T);
        /* parts nobody takes: the next model_zero_grad drops them, the next backward (not armed) makes none */
        model_zero_grad(&b);
        b.sumsq_arm = 1;
        CHECK(!model_forward_backward(&b, tok, tgt, B, T) && b.sumsq_state == 2, "%s: %s", name, fh_last_error());
        model_zero_grad(&b);
        CHECK(b.sumsq_state == 0, "%s: model_zero_grad kept the parts", name);
        CHECK(!model_forward_backward(&b, tok, tgt, B, T) && b.sumsq_state == 0, "%s: unarmed parts", name);
    }
    train_step_free(&ts, &g);
    optimizer_free(&oa, &a);
    optimizer_free(&ob, &b);
    optimizer_free(&og, &g);
    model_free(&a);
    model_free(&b);
    model_free(&g);
    free(tok);
    free(tgt);
}

static void run_spec(int i) {
    for (int tied = 0; tied < 2; tied++)
        for (int accum = 1; accum <= 2; accum++) compare(&tiny_specs[i], tied, accum);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(run_spec, i, tiny_specs[i].name);
    TEST_SUMMARY();
}
