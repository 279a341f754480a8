/* test_fused_head.c - model_forward_backward (the fused classifier: head,
 * loss and their gradients by chunks of rows, ops.h `classifier`) gives the
 * loss and every gradient of model_forward + model_backward, for every
 * architecture, with ignored targets, and with more rows than one chunk.
 * Bounds (fp32): loss rel 1e-6, each gradient tensor rel L2 1e-5 (the two
 * paths add the same terms in a different order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/model.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "helpers/tiny.h"
#include "test.h"

static void compare(int spec, int B, int T, int V) {
    const TinySpec *s = &tiny_specs[spec];
    Config c = tiny_config(s);
    c.vocab_size = V;
    if (T > c.max_seq_len) c.max_seq_len = T;
    Model a, b;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    tiny_batch(tok, tgt, B, T, V, 11);
    int ok = !model_create(&a, &c, &cpu_ops) && !model_init_params(&a, 5) && !model_create(&b, &c, &cpu_ops) &&
             !model_init_params(&b, 5);
    CHECK(ok, "%s: %s", s->name, fh_last_error());
    if (!ok) return;
    model_zero_grad(&a);
    model_zero_grad(&b);
    ok = !model_forward(&a, tok, tgt, B, T) && !model_backward(&a) && !model_forward_backward(&b, tok, tgt, B, T);
    CHECK(ok, "%s: %s", s->name, fh_last_error());
    if (ok) {
        double dl = fabs(a.loss - b.loss) / fabs(a.loss);
        CHECK(dl <= 1e-6, "%s: loss %.9g (forward+backward) vs %.9g (fused) rel %.2e", s->name, a.loss, b.loss, dl);
        double worst = 0;
        const char *worst_name = "";
        for (int t = 0; t < a.layout.n; t++) {
            const ParamEntry *e = &a.layout.entries[t];
            double num = 0, den = 0;
            for (size_t i = e->offset; i < e->offset + e->numel; i++) {
                double d = (double)a.grads[i] - b.grads[i];
                num += d * d;
                den += (double)a.grads[i] * a.grads[i];
            }
            double rel = den > 0 ? sqrt(num / den) : sqrt(num);
            if (!(rel <= worst)) { worst = rel; worst_name = e->name; }
        }
        CHECK(worst <= 1e-5, "%s: gradient of %s differs by rel %.2e", s->name, worst_name, worst);
        printf("  %-22s B=%d T=%d V=%d loss %.6f rel %.1e, worst gradient %s %.1e\n", s->name, B, T, V, a.loss, dl,
               worst_name, worst);
    }
    model_free(&a);
    model_free(&b);
    free(tok);
    free(tgt);
}

static void every_architecture(void) {
    for (int i = 0; i < n_tiny_specs; i++) compare(i, 2, 24, 32);
}

/* 3 x 200 = 600 rows: more than one 256-row chunk, the last one partial */
static void several_chunks(void) {
    for (int i = 0; i < n_tiny_specs; i++)
        if (!strcmp(tiny_specs[i].name, "llama") || !strcmp(tiny_specs[i].name, "flowhn-fac-prefix"))
            compare(i, 3, 200, 300);
}

int main(void) {
    RUN(every_architecture);
    RUN(several_chunks);
    TEST_SUMMARY();
}
