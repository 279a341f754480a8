/* test_decode_ops.c - the decoding helpers of the CPU backend (ops.h:
 * copy_rows, conv1d_step, attention_decode) against direct computations
 * written here: the strided copy element by element (and the rows and
 * columns it must not touch), the conv as the causal formula over the whole
 * input sequence fed one token at a time, and attention as an explicit
 * softmax in double. fp32; bound: relative L2 error < 1e-6 (conv, attention),
 * exact for the copy. */
#include <math.h>
#include <string.h>

#include "../src/core/flopcount.h"
#include "../src/core/rng.h"
#include "../src/ops/ops.h"
#include "helpers/gradcheck.h"
#include "test.h"

static void fill(real *x, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(2 * rng_uniform(r) - 1);
}

static void copy_rows(void) {
    Rng r;
    rng_seed(&r, 3, 1);
    int rows = 5, cols = 7, lds = 9, ldd = 13;
    real src[5 * 9], dst[5 * 13];
    fill(src, sizeof src / sizeof *src, &r);
    for (int i = 0; i < 5 * 13; i++) dst[i] = -100;
    cpu_ops.copy_rows(dst + 2, ldd, src + 1, lds, rows, cols);
    int bad = 0;
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < ldd; c++) {
            real want = (c >= 2 && c < 2 + cols) ? src[i * lds + 1 + c - 2] : -100;
            bad += dst[i * ldd + c] != want;
        }
    CHECK(bad == 0, "%d elements differ from the strided copy", bad);
}

static void conv1d_step(void) {
    int B = 3, n = 9, C = 6, K = 4;
    Rng r;
    rng_seed(&r, 5, 1);
    real x[3 * 9 * 6], w[6 * 4], b[6], win[3 * 4 * 6] = {0}, got[3 * 9 * 6], want[3 * 9 * 6], out[3 * 6], in[3 * 6];
    fill(x, sizeof x / sizeof *x, &r);
    fill(w, sizeof w / sizeof *w, &r);
    fill(b, 6, &r);
    uint64_t macs0 = fh_macs;
    for (int t = 0; t < n; t++) {
        for (int bi = 0; bi < B; bi++) memcpy(in + bi * C, x + ((size_t)bi * n + t) * C, sizeof(real) * C);
        cpu_ops.conv1d_step(out, win, in, w, t % 2 ? b : NULL, B, C, K);
        for (int bi = 0; bi < B; bi++) memcpy(got + ((size_t)bi * n + t) * C, out + bi * C, sizeof(real) * C);
    }
    CHECK(fh_macs - macs0 == (uint64_t)n * B * C * K, "MACs %llu, want %d", (unsigned long long)(fh_macs - macs0),
          n * B * C * K);
    /* out[t,c] = b[c] + sum_k w[c,k] x[t-(K-1)+k, c], x before the sequence = 0 */
    for (int bi = 0; bi < B; bi++)
        for (int t = 0; t < n; t++)
            for (int c = 0; c < C; c++) {
                double acc = t % 2 ? b[c] : 0;
                for (int k = 0; k < K; k++) {
                    int s = t - (K - 1) + k;
                    if (s >= 0) acc += (double)w[c * K + k] * x[((size_t)bi * n + s) * C + c];
                }
                want[((size_t)bi * n + t) * C + c] = (real)acc;
            }
    double e = rel_l2(got, want, sizeof got / sizeof *got);
    CHECK(e < 1e-6, "conv1d_step vs the causal formula: rel err %.3e", e);
    printf("    conv1d_step rel err %.2e\n", e);
}

/* q [B, nh, hd]; k, v [B, ld, nkv, hd]; the first nk rows used */
static void attention_case(int B, int nk, int ld, int nh, int nkv, int hd) {
    Rng r;
    rng_seed(&r, 7 + nk, 1);
    size_t nq = (size_t)B * nh * hd, nkvn = (size_t)B * ld * nkv * hd;
    real *q = malloc(sizeof(real) * nq), *k = malloc(sizeof(real) * nkvn), *v = malloc(sizeof(real) * nkvn);
    real *out = malloc(sizeof(real) * nq), *want = malloc(sizeof(real) * nq);
    fill(q, nq, &r);
    fill(k, nkvn, &r);
    fill(v, nkvn, &r);
    for (size_t i = 0; i < nq; i++) q[i] *= 3;   /* sharper softmax */
    for (size_t i = 0; i < nq; i++) out[i] = 42;
    cpu_ops.attention_decode(out, q, k, v, B, nk, ld, nh, nkv, hd);
    double *p = malloc(sizeof(double) * (nk ? nk : 1));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv);
            const real *qi = q + ((size_t)b * nh + h) * hd;
            double z = 0;
            for (int j = 0; j < nk; j++) {
                const real *kj = k + (((size_t)b * ld + j) * nkv + kh) * hd;
                double d = 0;
                for (int x = 0; x < hd; x++) d += (double)qi[x] * kj[x];
                p[j] = exp(d / sqrt((double)hd));
                z += p[j];
            }
            for (int x = 0; x < hd; x++) {
                double o = 0;
                for (int j = 0; j < nk; j++) o += p[j] / z * v[(((size_t)b * ld + j) * nkv + kh) * hd + x];
                want[((size_t)b * nh + h) * hd + x] = (real)o;
            }
        }
    if (nk == 0) {
        int nz = 0;
        for (size_t i = 0; i < nq; i++) nz += out[i] != 0;
        CHECK(nz == 0, "no keys: %d outputs not zero", nz);
    } else {
        double e = rel_l2(out, want, nq);
        CHECK(e < 1e-6, "B %d nk %d ld %d nh %d nkv %d hd %d: rel err %.3e", B, nk, ld, nh, nkv, hd, e);
        printf("    attention_decode B %d nk %3d ld %3d nh %d nkv %d hd %2d: rel err %.2e\n", B, nk, ld, nh, nkv, hd, e);
    }
    free(p); free(q); free(k); free(v); free(out); free(want);
}

static void attention_decode(void) {
    attention_case(3, 1, 8, 4, 2, 8);
    attention_case(2, 37, 40, 6, 3, 16);
    attention_case(2, 64, 64, 4, 4, 64);
    attention_case(2, 0, 8, 4, 2, 8);
}

int main(void) {
    RUN(copy_rows);
    RUN(conv1d_step);
    RUN(attention_decode);
    TEST_SUMMARY();
}
