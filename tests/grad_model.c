/* grad_model.c - finite-difference gradient check of whole tiny models, one
 * per architecture and FlowHN split/context, in double precision.
 *
 * For every parameter tensor, up to 6 entries (spread over the tensor) are
 * perturbed by +-1e-4 and +-2e-4 (five-point stencil) and the central difference of the mean loss is compared
 * with the backward pass. Bound: relative error < 1e-6, with gradients below
 * 1e-4 judged on their absolute error / 1e-4 (see gradcheck_floor: the
 * finite-difference noise is ~1e-10 absolute, so a tiny true gradient cannot
 * be resolved relatively; a real bug shows errors orders above). */
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "helpers/gradcheck.h"
#include "helpers/tiny.h"
#include "test.h"

#define B 2
#define T 11

typedef struct { Model *m; int *tok, *tgt; } Ctx;

static double loss_of(void *p) {
    Ctx *c = p;
    if (model_forward(c->m, c->tok, c->tgt, B, T)) { printf("forward failed: %s\n", fh_last_error()); return NAN; }
    return c->m->loss;
}

static void check_spec(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s: %s", s->name, fh_last_error());
    model_init_params(&m, 42);
    int tok[B * T], tgt[B * T];
    tiny_batch(tok, tgt, B, T, c.vocab_size, 7);
    Ctx ctx = {&m, tok, tgt};
    model_zero_grad(&m);
    CHECK(model_forward(&m, tok, tgt, B, T) == 0, "%s", fh_last_error());
    CHECK(model_backward(&m) == 0, "%s", fh_last_error());
    double loss0 = m.loss;
    real *grad = malloc(sizeof(real) * m.layout.total);
    memcpy(grad, m.grads, sizeof(real) * m.layout.total);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.layout.n; i++) {
        const ParamEntry *e = &m.layout.entries[i];
        char label[160];
        snprintf(label, sizeof label, "%s:%s", s->name, e->name);
        gradcheck_quiet = 1;   /* print only the worst tensor below */
        double err = gradcheck_floor(label, loss_of, &ctx, m.params + e->offset, grad + e->offset, e->numel, 6,
                                     1e-4, 1e-4);
        gradcheck_quiet = 0;
        if (err > worst) { worst = err; worst_name = e->name; }
        CHECK(err < 1e-6, "%s: %s max rel err %.3e", s->name, e->name, err);
    }
    printf("    %-22s params %6zu  loss %.6f  max grad rel err %.2e (%s)\n", s->name, m.layout.total, loss0, worst,
           worst_name);
    free(grad);
    model_free(&m);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(check_spec, i, tiny_specs[i].name);
    TEST_SUMMARY();
}
