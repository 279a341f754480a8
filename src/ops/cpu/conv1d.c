/* conv1d.c - causal depthwise conv1d over [B, n, C] (channel last):
 * out[t,c] = b[c] + sum_k w[c,k] x[t-(K-1)+k, c], zero before the first token. */
#include "../../core/flopcount.h"
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

/* x's rows ldx apart (>= C) */
static void conv_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K, int ldx) {
    uint64_t taps = 0;
    for (int t = 0; t < n; t++) taps += (uint64_t)(t + 1 < K ? t + 1 : K);
    fh_count_macs(taps * C * B);
#pragma omp parallel for collapse(2) if ((long)B * n * C > 65536)
    for (int bb = 0; bb < B; bb++)
        for (int t = 0; t < n; t++) {
            real *o = out + ((size_t)bb * n + t) * C;
            for (int c = 0; c < C; c++) o[c] = b ? b[c] : 0;
            for (int k = 0; k < K; k++) {
                int s = t - (K - 1) + k;
                if (s < 0) continue;
                const real *xs = x + ((size_t)bb * n + s) * ldx;
                for (int c = 0; c < C; c++) o[c] += w[(size_t)c * K + k] * xs[c];
            }
        }
}

/* The shared backward; silu != 0: dout is the gradient of silu(conv(x)), and
 * each element's conv output is recomputed here (b may be NULL) in
 * cpu_conv1d_fwd's order, then turned into conv's gradient with
 * cpu_silu_bwd's expression, so the fused op gives the composition's bits. */
static void conv_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, const real *b,
                     int B, int n, int C, int K, int acc, int silu, int ldx) {
    if (dx && !acc)   /* dx sums K taps; only its own C columns of each row */
        for (size_t r = 0; r < (size_t)B * n; r++) memset(dx + r * ldx, 0, sizeof(real) * C);
    /* parallel over channels: each task owns its channel's dw, db and dx column */
#pragma omp parallel for if ((long)B * n * C > 65536)
    for (int c = 0; c < C; c++)
        for (int bb = 0; bb < B; bb++)
            for (int t = 0; t < n; t++) {
                real d = dout[((size_t)bb * n + t) * C + c];
                if (silu) {
                    real v = b ? b[c] : 0;
                    for (int k = 0; k < K; k++) {
                        int s = t - (K - 1) + k;
                        if (s >= 0) v += w[(size_t)c * K + k] * x[((size_t)bb * n + s) * ldx + c];
                    }
                    real sg = (real)1 / ((real)1 + R_EXP(-v));
                    d = d * sg * ((real)1 + v * ((real)1 - sg));
                }
                if (db) db[c] += d;
                for (int k = 0; k < K; k++) {
                    int s = t - (K - 1) + k;
                    if (s < 0) continue;
                    size_t xi = ((size_t)bb * n + s) * ldx + c;
                    if (dw) dw[(size_t)c * K + k] += d * x[xi];
                    if (dx) dx[xi] += d * w[(size_t)c * K + k];
                }
            }
}

void cpu_conv1d_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K) {
    conv_fwd(out, x, w, b, B, n, C, K, C);
}

void cpu_conv1d_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, int B, int n,
                    int C, int K, int acc) {
    conv_bwd(dx, dw, db, dout, x, w, NULL, B, n, C, K, acc, 0, C);
}

/* the conv, then silu_fwd's expression in place (elementwise.c); x's rows
 * ldx apart (conv_fwd's order: the same bits as the dense op) */
void cpu_conv1d_silu_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K,
                         int ldx) {
    conv_fwd(out, x, w, b, B, n, C, K, ldx);
    size_t total = (size_t)B * n * C;
#pragma omp parallel for if (total > 65536)
    for (size_t i = 0; i < total; i++) out[i] = out[i] * ((real)1 / ((real)1 + R_EXP(-out[i])));
}

void cpu_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, const real *b,
                         int B, int n, int C, int K, int acc, int ldx) {
    conv_bwd(dx, dw, db, dout, x, w, b, B, n, C, K, acc, 1, ldx);
}
