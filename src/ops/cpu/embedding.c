/* embedding.c - token embedding lookup. */
#include "cpu_ops.h"

#include <string.h>

void cpu_embedding_fwd(real *out, const int *tok, const real *wte, int N, int C) {
#pragma omp parallel for if (N > 256)
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * C, wte + (size_t)tok[i] * C, sizeof(real) * C);
}

void cpu_embedding_bwd(real *dwte, const real *dout, const int *tok, int N, int C) {
    /* Serial over tokens: two tokens may share a row. Parallel over channels. */
    for (int i = 0; i < N; i++) {
        real *row = dwte + (size_t)tok[i] * C;
        const real *d = dout + (size_t)i * C;
        for (int c = 0; c < C; c++) row[c] += d[c];
    }
}
