/* step_hash.c - one line per tiny architecture, head mode, shape and step:
 * the loss (%.17g) and an FNV-1a hash of every gradient's bytes, on the CPU
 * backend. Run it on two builds and diff the outputs to show that a change
 * keeps the CPU model bit-identical (it was used for add_rmsnorm_fwd and the
 * in-place residual gradient, perf-notes.md). Build, from the repository
 * root after `make`:
 *   cc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -I. tools/step_hash/step_hash.c tests/helpers/tiny.c build/libflowhn.a \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *      -lopenblas -lcjson -lm -ldl -o /tmp/step_hash
 * Two threads at most: the CPU Mamba-1 scan's per-thread sums are ordered
 * only up to two (tests/test_zero_elim.c). */
#include <omp.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "src/model/model.h"
#include "src/ops/cpu/cpu_ops.h"
#include "tests/helpers/tiny.h"
static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ull; }
    return h;
}
int main(void) {
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
    for (int i = 0; i < n_tiny_specs; i++)
        for (int fused = 0; fused < 2; fused++)
            for (int shape = 0; shape < 2; shape++) {
                int B = shape ? 3 : 2, T = shape ? 77 : 24;
                Config c = tiny_config(&tiny_specs[i]);
                if (T > c.max_seq_len) c.max_seq_len = T;
                int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
                tiny_batch(tok, tgt, B, T, c.vocab_size, 3);
                Model m;
                if (model_create(&m, &c, &cpu_ops) || model_init_params(&m, 7)) { printf("fail\n"); return 1; }
                for (int step = 0; step < 2; step++) {
                    model_zero_grad(&m);
                    int rc = fused ? model_forward_backward(&m, tok, tgt, B, T)
                                   : (model_forward(&m, tok, tgt, B, T) || model_backward(&m));
                    if (rc) { printf("fail step\n"); return 1; }
                    real *g = malloc(sizeof(real) * m.layout.total);
                    memcpy(g, m.grads, sizeof(real) * m.layout.total);
                    printf("%-22s B%d T%-3d %s step %d loss %.17g grads %016llx\n", tiny_specs[i].name, B, T,
                           fused ? "fused  " : "unfused", step, m.loss,
                           (unsigned long long)fnv(g, sizeof(real) * m.layout.total, 1469598103934665603ull));
                    free(g);
                    tiny_batch(tok, tgt, B, T, c.vocab_size, 4 + step);
                }
                model_free(&m);
                free(tok); free(tgt);
            }
    return 0;
}
