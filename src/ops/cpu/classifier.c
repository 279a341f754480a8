/* classifier.c - the fused training classifier (ops.h `classifier`): the
 * output head and softmax cross-entropy, forward and backward at once, by
 * chunks of rows so the [N, V] logits are never stored whole. On the CPU it is
 * the composition of the unfused ops over each chunk (the oracle for the CUDA
 * version, which keeps only bf16 gradients of each chunk). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/error.h"
#include "cpu_ops.h"

#define CLASSIFIER_ROWS 256

void cpu_classifier(real *loss, real *dx, real *dw, const real *x, const real *w, const int *targets, real scale,
                    int N, int H, int V, int acc) {
    int R = N < CLASSIFIER_ROWS ? N : CLASSIFIER_ROWS;
    if (N <= 0) return;
    real *logits = fh_malloc(sizeof(real) * (size_t)R * V, "classifier logits chunk");
    real *dlogits = fh_malloc(sizeof(real) * (size_t)R * V, "classifier logit gradients chunk");
    real *lse = fh_malloc(sizeof(real) * R, "classifier log-sum-exp");
    real *dloss = fh_malloc(sizeof(real) * R, "classifier loss gradients");
    if (!logits || !dlogits || !lse || !dloss) {
        /* fh_malloc recorded the error; poison the loss so the caller sees it */
        for (int i = 0; i < N; i++) loss[i] = (real)NAN;
        free(logits); free(dlogits); free(lse); free(dloss);
        return;
    }
    for (int r0 = 0; r0 < N; r0 += R) {
        int n = N - r0 < R ? N - r0 : R;
        const real *xc = x + (size_t)r0 * H;
        cpu_linear_fwd(logits, xc, w, NULL, n, H, V);
        cpu_xent_fwd(loss + r0, lse, logits, targets + r0, n, V);
        for (int i = 0; i < n; i++) dloss[i] = targets[r0 + i] >= 0 ? scale : 0;
        memset(dlogits, 0, sizeof(real) * (size_t)n * V);
        cpu_xent_bwd(dlogits, dloss, logits, lse, targets + r0, n, V);
        /* dw overwritten by the first chunk under FH_DW_OVERWRITE (ops.h), added by the rest; dx's rows per acc */
        int dwo = r0 == 0 && (acc & FH_DW_OVERWRITE) ? FH_DW_OVERWRITE : 0;
        cpu_linear_bwd(dx ? dx + (size_t)r0 * H : NULL, dw, NULL, dlogits, xc, w, n, H, V, (acc & FH_ACC) | dwo);
    }
    free(logits); free(dlogits); free(lse); free(dloss);
}
