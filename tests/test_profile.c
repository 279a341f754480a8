/* test_profile.c - the op profiler (src/ops/profile.h) on the CPU backend.
 *
 * - The profiled table only forwards: a training step on it gives the loss
 *   and gradients of the plain table bit for bit, marks on or off.
 * - Its FLOPs follow the FLOP model: for LLaMA (self-attention, no scans) the
 *   forward FLOPs of linear_fwd + attention_fwd + the classifier's forward
 *   third equal 2 x macs_model_forward x B; each product's backward counts
 *   2x its forward.
 * - Its times: every op kind that ran has calls and a span, the rows come
 *   slowest first, and the spans (disjoint on the CPU) add up to no more
 *   than the step's wall time.
 * - With marks off nothing is counted; one profile at a time; a backend
 *   without marks is refused by name. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/core/error.h"
#include "../src/model/flops.h"
#include "../src/model/model.h"
#include "../src/ops/backend.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "../src/ops/profile.h"
#include "helpers/tiny.h"
#include "test.h"

enum { B = 2, T = 16 };

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static const OpProfileRow *row(const OpProfileRow *r, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(r[i].name, name)) return &r[i];
    return NULL;
}

/* one fused training step of tiny spec si on ops; the loss and a copy of the gradients */
static int step(int si, const Ops *ops, double *loss, real **grads, size_t *n) {
    Config c = tiny_config(&tiny_specs[si]);
    Model m;
    int tok[B * T], tgt[B * T];
    tiny_batch(tok, tgt, B, T, c.vocab_size, 3);
    if (model_create(&m, &c, ops) || model_init_params(&m, 7)) return -1;
    model_zero_grad(&m);
    int rc = model_forward_backward(&m, tok, tgt, B, T);
    *loss = m.loss;
    *n = m.layout.total;
    *grads = malloc(sizeof(real) * *n);
    memcpy(*grads, m.grads, sizeof(real) * *n);
    model_free(&m);
    return rc;
}

static void forwards_bit_for_bit(int si) {
    const Backend *be = backend_find("cpu");
    for (int on = 0; on < 2; on++) {
        OpProfile *p = op_profile_create(be);
        CHECK(p != NULL, "%s", fh_last_error());
        if (!p) return;
        op_profile_enable(p, on);
        double la, lb;
        real *ga = NULL, *gb = NULL;
        size_t na = 0, nb = 0;
        int ok = !step(si, &cpu_ops, &la, &ga, &na) && !step(si, op_profile_ops(p), &lb, &gb, &nb);
        CHECK(ok, "%s: %s", tiny_specs[si].name, fh_last_error());
        if (ok) {
            CHECK(la == lb, "%s marks %d: loss %.9g plain, %.9g profiled", tiny_specs[si].name, on, la, lb);
            CHECK(na == nb && !memcmp(ga, gb, sizeof(real) * na), "%s marks %d: gradients differ", tiny_specs[si].name,
                  on);
        }
        CHECK(op_profile_collect(p) == 0, "%s", fh_last_error());
        OpProfileRow r[64];
        int steps, kinds = op_profile_rows(p, r, 64, &steps);
        CHECK(on ? kinds > 5 : kinds == 0, "%s marks %d: %d op kinds counted", tiny_specs[si].name, on, kinds);
        free(ga);
        free(gb);
        op_profile_free(p);
    }
}

static void flops_and_times(void) {
    const TinySpec *s = &tiny_specs[0];   /* llama */
    CHECK(!strcmp(s->name, "llama"), "tiny spec 0 is %s", s->name);
    Config c = tiny_config(s);
    OpProfile *p = op_profile_create(backend_find("cpu"));
    CHECK(p != NULL, "%s", fh_last_error());
    if (!p) return;
    Model m;
    int tok[B * T], tgt[B * T];
    tiny_batch(tok, tgt, B, T, c.vocab_size, 3);
    int ok = !model_create(&m, &c, op_profile_ops(p)) && !model_init_params(&m, 7);
    CHECK(ok, "%s", fh_last_error());
    if (!ok) { op_profile_free(p); return; }
    op_profile_enable(p, 1);
    const int steps = 3;
    double wall = 0;
    for (int i = 0; i < steps; i++) {
        double t0 = now_ms();
        model_zero_grad(&m);
        ok = !model_forward_backward(&m, tok, tgt, B, T);
        wall += now_ms() - t0;
        CHECK(ok && op_profile_collect(p) == 0, "%s", fh_last_error());
    }
    OpProfileRow r[64];
    int n_steps, kinds = op_profile_rows(p, r, 64, &n_steps);
    CHECK(n_steps == steps, "%d steps collected, %d run", n_steps, steps);
    const OpProfileRow *lf = row(r, kinds, "linear_fwd"), *lb = row(r, kinds, "linear_bwd"),
                       *af = row(r, kinds, "attention_fwd"), *ab = row(r, kinds, "attention_bwd"),
                       *cl = row(r, kinds, "classifier");
    /* with RoPE the model runs attention as the attention_rope ops (ops.h), timed under their own names */
    if (!af) af = row(r, kinds, "attention_rope_fwd");
    if (!ab) ab = row(r, kinds, "attention_rope_bwd");
    CHECK(lf && lb && af && ab && cl, "the step's main ops were counted");
    if (lf && lb && af && ab && cl) {
        double fwd = (lf->flops + af->flops + cl->flops / 3) / steps;
        double want = 2.0 * B * (double)macs_model_forward(&c, T, NULL);
        CHECK(fabs(fwd - want) <= 1e-9 * want, "forward FLOPs %.6g profiled, %.6g by the FLOP model", fwd, want);
        CHECK(lb->flops == 2 * lf->flops, "linear backward %.6g = 2 x forward %.6g", lb->flops, lf->flops);
        CHECK(ab->flops == 2 * af->flops, "attention backward %.6g = 2 x forward %.6g", ab->flops, af->flops);
        CHECK(lf->calls == lb->calls && lf->calls % steps == 0, "linear calls: %ld forward, %ld backward", lf->calls,
              lb->calls);
    }
    double sum = 0;
    for (int i = 0; i < kinds; i++) {
        CHECK(r[i].calls > 0 && r[i].ms >= 0, "%s: %ld calls, %.3f ms", r[i].name, r[i].calls, r[i].ms);
        if (i) CHECK(r[i].ms <= r[i - 1].ms, "rows slowest first: %s after %s", r[i].name, r[i - 1].name);
        sum += r[i].ms;
    }
    CHECK(sum > 0 && sum <= wall, "spans add up to %.3f ms, the steps took %.3f ms", sum, wall);
    /* a second profile while this one is active */
    OpProfile *q = op_profile_create(backend_find("cpu"));
    CHECK(!q && strstr(fh_last_error(), "one at a time"), "a second profile: %s", q ? "created" : fh_last_error());
    op_profile_reset(p);
    kinds = op_profile_rows(p, r, 64, &n_steps);
    CHECK(kinds == 0 && n_steps == 0, "reset: %d kinds, %d steps", kinds, n_steps);
    model_free(&m);
    op_profile_free(p);
}

static void refuses_without_marks(void) {
    Backend be = *backend_find("cpu");
    be.mark_new = NULL;
    OpProfile *p = op_profile_create(&be);
    CHECK(!p && strstr(fh_last_error(), "cpu") && strstr(fh_last_error(), "marks"), "no marks: %s",
          p ? "created" : fh_last_error());
    op_profile_free(p);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(forwards_bit_for_bit, i, tiny_specs[i].name);
    RUN(flops_and_times);
    RUN(refuses_without_marks);
    TEST_SUMMARY();
}
