/* xent.c - fused softmax + cross-entropy. The forward keeps only the
 * log-sum-exp per row; the backward rebuilds softmax from it, so no
 * probability matrix is stored. */
#include <math.h>

#include "cpu_ops.h"

void cpu_xent_fwd(real *loss, real *lse, const real *logits, const int *targets, int N, int V) {
#pragma omp parallel for if (N > 16)
    for (int i = 0; i < N; i++) {
        const real *row = logits + (size_t)i * V;
        real mx = row[0];
        for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        double s = 0;
        for (int v = 0; v < V; v++) s += exp((double)(row[v] - mx));
        real l = mx + (real)log(s);
        lse[i] = l;
        loss[i] = targets[i] >= 0 ? l - row[targets[i]] : 0;
    }
}

void cpu_xent_bwd(real *dlogits, const real *dloss, const real *logits, const real *lse,
                  const int *targets, int N, int V) {
#pragma omp parallel for if (N > 16)
    for (int i = 0; i < N; i++) {
        if (targets[i] < 0) continue;
        const real *row = logits + (size_t)i * V;
        real *d = dlogits + (size_t)i * V;
        real g = dloss[i];
        for (int v = 0; v < V; v++) d[v] += g * R_EXP(row[v] - lse[i]);
        d[targets[i]] -= g;
    }
}
