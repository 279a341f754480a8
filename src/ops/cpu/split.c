/* split.c - FlowHN token split (gather) and fusion (scatter) along the
 * sequence, with a column window so No_Split can concatenate branches along
 * channels. Each op's backward is the other one, accumulating. */
#include <string.h>

#include "cpu_ops.h"

void cpu_gather_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0) {
#pragma omp parallel for collapse(2) if ((long)B * n_sel * C > 65536)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n_sel; j++)
            memcpy(out + ((size_t)b * n_sel + j) * C, in + ((size_t)b * T + idx[j]) * ldi + col0, sizeof(real) * C);
}

void cpu_gather_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0) {
    /* idx holds distinct positions, so rows never collide */
#pragma omp parallel for collapse(2) if ((long)B * n_sel * C > 65536)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n_sel; j++) {
            real *d = din + ((size_t)b * T + idx[j]) * ldi + col0;
            const real *s = dout + ((size_t)b * n_sel + j) * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
}

void cpu_scatter_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0) {
#pragma omp parallel for collapse(2) if ((long)B * n_sel * C > 65536)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n_sel; j++)
            memcpy(out + ((size_t)b * T + idx[j]) * ldo + col0, in + ((size_t)b * n_sel + j) * C, sizeof(real) * C);
}

void cpu_scatter_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0,
                     int acc) {
#pragma omp parallel for collapse(2) if ((long)B * n_sel * C > 65536)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n_sel; j++) {
            real *d = din + ((size_t)b * n_sel + j) * C;
            const real *s = dout + ((size_t)b * T + idx[j]) * ldo + col0;
            if (acc) for (int c = 0; c < C; c++) d[c] += s[c];
            else memcpy(d, s, sizeof(real) * C);
        }
}
