/* test_cuda_decode.cu - decoding on the GPU against the CPU oracle (fp32).
 *
 *   - the decoding ops (copy_rows, conv1d_step, attention_decode): cuda_ops vs
 *     cpu_ops on the same inputs, relative L2 < 1e-5 (the copy exactly), the
 *     conv over several steps (its window included), attention at the tiny
 *     shapes, at the 135M shapes (hd 64, GQA 9/3, B 64, ld > nk) and hd 128,
 *     and a sweep of the split kernel (nk 1..4097, hd 1..256, groups 1..8,
 *     B 1..64; attention_decode_at too) and the old kernel (FLOWHN_DECODE_ATTN=old);
 *   - the generator (src/infer/generate.c) on cuda_ops vs on cpu_ops, built
 *     from the same seed, fed the same tokens: the logits of every step agree
 *     to relative L2 < 1e-5, for every architecture of tests/helpers/tiny.c
 *     (T 24, B 2) and for larger ones (H 256, head_dim 32, T 96, B 3);
 *   - the batched prefill (generator_prefill) on cuda_ops vs cpu_ops, prompts of
 *     1, 5, T/2+1 and T tokens, then steps to T: the prefill's logits and the
 *     steps' after it agree to relative L2 < 1e-5, at the same shapes;
 *   - with bf16 products: the generator's frozen bf16 weights (Ops.freeze_weights)
 *     against per-product rounding, and both against the CPU fp32 oracle (2e-2);
 *   - the decode fusions (ops.h "fused decode ops", generate.c; on by default,
 *     FLOWHN_DECODE_FUSE=0 turns them off for A/B timing): the fused generator
 *     against the unfused one, fp32 (the fused ops fall back to their
 *     compositions there, but RoPE + the cache append is one kernel: 1e-6) and
 *     bf16 with gemv (the fused gemv kernels: 1e-2, and vs the CPU 2e-2).
 * Needs a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../src/core/error.h"
#include "../../src/core/rng.h"
#include "../../src/infer/generate.h"
#include "../../src/model/model.h"
#include "../helpers/tiny.h"
}
#include "../../src/ops/cuda/cuda_ops.h"
#include "../test.h"

#define TOL 1e-5

/* sets an environment variable; returns its old value (strdup'ed, or NULL) for env_restore */
static char *env_set(const char *name, const char *value) {
    const char *was = getenv(name);
    char *saved = was ? strdup(was) : NULL;
    setenv(name, value, 1);
    return saved;
}
static void env_restore(const char *name, char *saved) {
    if (saved) setenv(name, saved, 1); else unsetenv(name);
    free(saved);
}

static double rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(d / fmax(s, 1e-300));
}

static float *rnd(size_t n, Rng *r) {
    float *x = (float *)malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)(2 * rng_uniform(r) - 1);
    return x;
}
static float *dev(const float *h, size_t n) {
    float *d = (float *)cuda_ops.alloc(sizeof(float) * (n ? n : 1));
    cuda_ops.from_host(d, h, sizeof(float) * n);
    return d;
}
static float *back(const float *d, size_t n) {
    float *h = (float *)malloc(sizeof(float) * (n ? n : 1));
    cuda_ops.to_host(h, d, sizeof(float) * n);
    return h;
}

static void copy_rows(void) {
    Rng r;
    rng_seed(&r, 1, 1);
    int rows = 64, cols = 192, lds = 192, ldd = 272 * 192;
    size_t ns = (size_t)rows * lds, nd = (size_t)rows * ldd;
    float *src = rnd(ns, &r), *dst = rnd(nd, &r), *ds = dev(src, ns), *dd = dev(dst, nd);
    cpu_ops.copy_rows(dst + 5 * 192, ldd, src, lds, rows, cols);
    cuda_ops.copy_rows(dd + 5 * 192, ldd, ds, lds, rows, cols);
    float *got = back(dd, nd);
    CHECK(cuda_ops_check() == 0, "%s", fh_last_error());
    CHECK(memcmp(got, dst, sizeof(float) * nd) == 0, "copy_rows differs from the CPU");
    free(src); free(dst); free(got);
    cuda_ops.release(ds); cuda_ops.release(dd);
}

static void conv1d_step(void) {
    int B = 5, C = 1536 + 7, K = 4, steps = 6;
    Rng r;
    rng_seed(&r, 2, 1);
    size_t nw = (size_t)B * K * C, nx = (size_t)B * C;
    float *w = rnd((size_t)C * K, &r), *b = rnd(C, &r), *win = rnd(nw, &r), *out = rnd(nx, &r);
    float *dw = dev(w, (size_t)C * K), *db = dev(b, C), *dwin = dev(win, nw), *dout = dev(out, nx);
    double worst = 0, worst_win = 0;
    for (int s = 0; s < steps; s++) {
        float *x = rnd(nx, &r), *dx = dev(x, nx);
        cpu_ops.conv1d_step(out, win, x, w, s % 2 ? b : NULL, B, C, K);
        cuda_ops.conv1d_step(dout, dwin, dx, dw, s % 2 ? db : NULL, B, C, K);
        float *go = back(dout, nx), *gw = back(dwin, nw);
        worst = fmax(worst, rel(go, out, nx));
        worst_win = fmax(worst_win, rel(gw, win, nw));
        free(x); free(go); free(gw);
        cuda_ops.release(dx);
    }
    CHECK(cuda_ops_check() == 0, "%s", fh_last_error());
    CHECK(worst < TOL && worst_win == 0, "conv1d_step: out rel %.3e, window rel %.3e", worst, worst_win);
    printf("    conv1d_step B %d C %d K %d, %d steps: out rel %.2e, window rel %.2e\n", B, C, K, steps, worst, worst_win);
    free(w); free(b); free(win); free(out);
    cuda_ops.release(dw); cuda_ops.release(db); cuda_ops.release(dwin); cuda_ops.release(dout);
}

/* cuda_ops.attention_decode, and attention_decode_at (nk = pos[0] + 1 read
 * from device memory), against cpu_ops.attention_decode at one shape */
static void attention_case(int B, int nk, int ld, int nh, int nkv, int hd) {
    Rng r;
    rng_seed(&r, 3 + nk + 7 * hd + 131 * B, 1);
    size_t nq = (size_t)B * nh * hd, nc = (size_t)B * ld * nkv * hd;
    float *q = rnd(nq, &r), *k = rnd(nc, &r), *v = rnd(nc, &r), *out = rnd(nq, &r);
    for (size_t i = 0; i < nq; i++) q[i] *= 4;
    float *dq = dev(q, nq), *dk = dev(k, nc), *dv = dev(v, nc), *dout = dev(out, nq), *dout2 = dev(out, nq);
    int *dpos = NULL, pos = nk - 1;
    if (nk > 0) {
        dpos = (int *)cuda_ops.alloc(sizeof(int));
        cuda_ops.from_host(dpos, &pos, sizeof(int));
    }
    cpu_ops.attention_decode(out, q, k, v, B, nk, ld, nh, nkv, hd);
    cuda_ops.attention_decode(dout, dq, dk, dv, B, nk, ld, nh, nkv, hd);
    if (dpos) cuda_ops.attention_decode_at(dout2, dq, dk, dv, B, dpos, ld, nh, nkv, hd);
    float *got = back(dout, nq), *got2 = dpos ? back(dout2, nq) : NULL;
    CHECK(cuda_ops_check() == 0, "%s", fh_last_error());
    double e = rel(got, out, nq), e2 = got2 ? rel(got2, out, nq) : 0;
    const char *which = getenv("FLOWHN_DECODE_ATTN") ? getenv("FLOWHN_DECODE_ATTN") : "new";
    if (nk == 0) {
        int nz = 0;
        for (size_t i = 0; i < nq; i++) nz += got[i] != 0;
        CHECK(nz == 0, "no keys: %d outputs not zero", nz);
    } else {
        CHECK(e < TOL, "attention_decode (%s) B %d nk %d ld %d nh %d nkv %d hd %d: rel %.3e", which, B, nk, ld, nh, nkv,
              hd, e);
        CHECK(e2 < TOL, "attention_decode_at (%s) B %d nk %d ld %d nh %d nkv %d hd %d: rel %.3e", which, B, nk, ld, nh,
              nkv, hd, e2);
    }
    printf("    attention_decode (%s) B %2d nk %4d ld %4d nh %2d nkv %d hd %3d: rel %.2e, _at rel %.2e\n", which, B, nk,
           ld, nh, nkv, hd, e, e2);
    free(q); free(k); free(v); free(out); free(got); free(got2);
    cuda_ops.release(dq); cuda_ops.release(dk); cuda_ops.release(dv); cuda_ops.release(dout);
    cuda_ops.release(dout2);
    if (dpos) cuda_ops.release(dpos);
}

static void attention_decode(void) {
    attention_case(2, 1, 24, 4, 2, 4);
    attention_case(2, 17, 24, 4, 2, 4);
    attention_case(64, 300, 320, 9, 3, 64);
    attention_case(1, 255, 256, 9, 3, 64);
    attention_case(3, 70, 70, 8, 2, 128);
    attention_case(2, 5, 8, 4, 4, 33);
    attention_case(2, 0, 8, 4, 2, 16);
    /* the split kernel's sweep: every head_dim class (R = 1, 2, 4, 8 elements a
     * lane, odd sizes), key counts below, at and above the cluster's 8 slices
     * and its warps' 8 x U keys, GQA groups of 1, 4, 8 (two head chunks) and
     * 6 (a partial second chunk), B 1, 3, 64, ld > nk */
    const int nks[] = {1, 7, 192, 1000, 4097}, hds[] = {1, 16, 64, 100, 128, 256};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 6; j++) attention_case(1, nks[i], nks[i] + 3, 8, 2, hds[j]);   /* group 4 */
    for (int j = 0; j < 6; j++) {
        attention_case(3, 192, 200, 4, 4, hds[j]);    /* group 1 */
        attention_case(3, 1000, 1000, 8, 1, hds[j]);  /* group 8 */
        attention_case(3, 7, 9, 12, 2, hds[j]);       /* group 6 */
    }
    attention_case(64, 1, 8, 8, 2, 64);
    attention_case(64, 7, 16, 4, 4, 100);
    attention_case(64, 192, 192, 32, 8, 64);   /* llama-1b's heads */
    attention_case(64, 1000, 1001, 8, 1, 128);
    attention_case(1, 192, 200, 32, 8, 64);    /* llama-1b B1 */
    attention_case(1, 4097, 4100, 32, 8, 64);
    /* the old serial kernel, kept for A/B timing (FLOWHN_DECODE_ATTN=old) */
    setenv("FLOWHN_DECODE_ATTN", "old", 1);
    attention_case(1, 192, 200, 32, 8, 64);
    attention_case(3, 7, 9, 12, 2, 100);
    attention_case(2, 0, 8, 4, 2, 16);
    unsetenv("FLOWHN_DECODE_ATTN");
}

/* the same model on both backends, the same tokens, step by step */
static void compare_generator(const char *name, Config *c, int B, int T) {
    Model mc, mg;
    int ok = !model_create(&mc, c, &cpu_ops) && !model_init_params(&mc, 77);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) return;
    ok = !model_create(&mg, c, &cuda_ops) && !model_init_params(&mg, 77);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) { model_free(&mc); return; }
    mc.plan_len = mg.plan_len = T;
    /* gg replays its step recorded as a CUDA graph where the architecture allows
     * (the default), gn launches op by op: the same logits. gu: the decode
     * fusions off (FLOWHN_DECODE_FUSE=0), graphs as by default */
    Generator *gc = generator_create(&mc, B), *gg = generator_create(&mg, B), *gn = generator_create(&mg, B);
    char *saved = env_set("FLOWHN_DECODE_FUSE", "0");
    Generator *gu = generator_create(&mg, B);
    env_restore("FLOWHN_DECODE_FUSE", saved);
    CHECK(gc && gg && gn && gu, "%s: %s", name, fh_last_error());
    int graphs = gg ? generator_set_graphs(gg, 1) : 0;
    if (gn) generator_set_graphs(gn, 0);
    int V = c->vocab_size;
    float *lc = (float *)malloc(sizeof(float) * B * V), *lg = (float *)malloc(sizeof(float) * B * V);
    float *ln = (float *)malloc(sizeof(float) * B * V), *lu = (float *)malloc(sizeof(float) * B * V);
    double worst_graph = 0, worst_fuse = 0;
    int *tok = (int *)malloc(sizeof(int) * B * T), *tgt = (int *)malloc(sizeof(int) * B * T);
    tiny_batch(tok, tgt, B, T, V, 9);
    double worst = 0;
    int worst_t = -1;
    for (int t = 0; gc && gg && gn && gu && t < T; t++) {
        int *in = (int *)malloc(sizeof(int) * B);
        for (int b = 0; b < B; b++) in[b] = tok[(size_t)b * T + t];
        int rc = generator_step(gc, in, lc) || generator_step(gg, in, lg) || generator_step(gn, in, ln) ||
                 generator_step(gu, in, lu);
        free(in);
        CHECK(rc == 0, "%s step %d: %s", name, t, fh_last_error());
        if (rc) break;
        double e = rel(lg, lc, (size_t)B * V), eg = rel(lg, ln, (size_t)B * V), ef = rel(lg, lu, (size_t)B * V);
        if (eg > worst_graph) worst_graph = eg;
        if (!(ef <= worst_fuse)) worst_fuse = ef;
        if (!(e <= worst)) { worst = e; worst_t = t; }
    }
    CHECK(cuda_ops_check() == 0, "%s: %s", name, fh_last_error());
    CHECK(worst < TOL, "%s: CUDA vs CPU generator logits rel %.3e at step %d", name, worst, worst_t);
    CHECK(worst_graph <= 1e-6, "%s: graph-replayed vs op-by-op decode logits rel %.3e", name, worst_graph);
    CHECK(worst_fuse <= 1e-6, "%s: fused vs unfused (FLOWHN_DECODE_FUSE=0) decode logits rel %.3e", name, worst_fuse);
    printf("    %-26s B %d T %3d: worst logits rel %.2e (step %d); graph %s, vs op by op rel %.1e; vs unfused %.1e\n",
           name, B, T, worst, worst_t, graphs ? "on" : "off", worst_graph, worst_fuse);
    generator_free(gc);
    generator_free(gg);
    generator_free(gn);
    generator_free(gu);
    free(lc); free(lg); free(ln); free(lu); free(tok); free(tgt);
    model_free(&mc);
    model_free(&mg);
}

/* The batched prefill (generator_prefill) on both backends: the same model,
 * a P-token prompt, then token steps up to T (CUDA: graphs as by default).
 * The prefill's logits and every step's after it agree (fp32, TOL); on the
 * CPU the prefill equals the token-by-token steps (tests/test_generate.c). */
static void compare_prefill(const char *name, Config *c, int B, int T) {
    Model mc, mg;
    int ok = !model_create(&mc, c, &cpu_ops) && !model_init_params(&mc, 77);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) return;
    ok = !model_create(&mg, c, &cuda_ops) && !model_init_params(&mg, 77);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) { model_free(&mc); return; }
    mc.plan_len = mg.plan_len = T;
    int V = c->vocab_size, prompts[4] = {1, 5, T / 2 + 1, T};
    float *lc = (float *)malloc(sizeof(float) * B * V), *lg = (float *)malloc(sizeof(float) * B * V);
    int *tok = (int *)malloc(sizeof(int) * B * T), *tgt = (int *)malloc(sizeof(int) * B * T);
    int *prompt = (int *)malloc(sizeof(int) * B * T), *in = (int *)malloc(sizeof(int) * B);
    tiny_batch(tok, tgt, B, T, V, 9);
    double worst_pf = 0, worst_step = 0;
    for (int pi = 0; pi < 4; pi++) {
        int P = prompts[pi];
        for (int b = 0; b < B; b++) memcpy(prompt + (size_t)b * P, tok + (size_t)b * T, sizeof(int) * P);
        Generator *gc = generator_create(&mc, B), *gg = generator_create(&mg, B);
        int rc = !gc || !gg || generator_prefill(gc, prompt, P, lc) || generator_prefill(gg, prompt, P, lg);
        CHECK(rc == 0, "%s P=%d: %s", name, P, fh_last_error());
        if (!rc) {
            double e = rel(lg, lc, (size_t)B * V);
            if (e > worst_pf) worst_pf = e;
            for (int t = P; t < T; t++) {
                for (int b = 0; b < B; b++) in[b] = tok[(size_t)b * T + t];
                rc = generator_step(gc, in, lc) || generator_step(gg, in, lg);
                CHECK(rc == 0, "%s P=%d step %d: %s", name, P, t, fh_last_error());
                if (rc) break;
                e = rel(lg, lc, (size_t)B * V);
                if (e > worst_step) worst_step = e;
            }
        }
        generator_free(gc);
        generator_free(gg);
    }
    CHECK(cuda_ops_check() == 0, "%s: %s", name, fh_last_error());
    CHECK(worst_pf < TOL && worst_step < TOL, "%s: CUDA vs CPU prefill logits rel %.3e, the steps after it %.3e", name,
          worst_pf, worst_step);
    printf("    %-26s B %d T %3d: prefill logits rel %.2e, the steps after it %.2e\n", name, B, T, worst_pf,
           worst_step);
    free(lc); free(lg); free(tok); free(tgt); free(prompt); free(in);
    model_free(&mc);
    model_free(&mg);
}

static void generator_tiny(const TinySpec *s) {
    Config c = tiny_config(s);
    c.max_seq_len = 24;
    compare_generator(s->name, &c, 2, 24);
    char name[64];
    snprintf(name, sizeof name, "%s-prefill", s->name);
    compare_prefill(name, &c, 2, 24);
}

static void generator_large(const TinySpec *s) {
    Config c = tiny_config_h256(s, 96);
    char name[64];
    snprintf(name, sizeof name, "%s-H256", s->name);
    if (config_validate(&c, name)) { CHECK(0, "%s", fh_last_error()); return; }
    compare_generator(name, &c, 3, 96);
    snprintf(name, sizeof name, "%s-H256-prefill", s->name);
    compare_prefill(name, &c, 3, 96);
}

/* All logits of T steps of a fresh generator on the model (seed 77). */
static float *run_generator(Model *m, int B, int T, int unfreeze, int graphs = 1) {
    int V = m->cfg.vocab_size;
    Generator *g = generator_create(m, B);
    CHECK(g != NULL, "%s", fh_last_error());
    if (!g) return NULL;
    if (!graphs) generator_set_graphs(g, 0);
    if (unfreeze) cuda_ops.freeze_weights(NULL, 0);   /* products round per call, as in training */
    float *all = (float *)malloc(sizeof(float) * (size_t)T * B * V);
    int *tok = (int *)malloc(sizeof(int) * B * T), *tgt = (int *)malloc(sizeof(int) * B * T), *in = (int *)malloc(sizeof(int) * B);
    tiny_batch(tok, tgt, B, T, V, 9);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) in[b] = tok[(size_t)b * T + t];
        int rc = generator_step(g, in, all + (size_t)t * B * V);
        CHECK(rc == 0, "step %d: %s", t, fh_last_error());
        if (rc) break;
    }
    generator_free(g);
    free(tok); free(tgt); free(in);
    return all;
}

/* bf16 products (--precision bf16): through cuBLASLt (FLOWHN_GEMV=0) the
 * generator's frozen bf16 weights give the logits of per-product rounding (the
 * same roundings; only cuBLASLt's algorithm may differ with the pointers'
 * alignment). The default one-kernel decode products (linear.cu gemv) sum in
 * another order: a last-bit difference that flips some later bf16 roundings
 * (H200, session 5: 1.4e-3..3.3e-3 from cuBLASLt's logits, while both were
 * 2.9e-3..6.7e-3 from the CPU's). All stay within the bf16 bound of the CPU
 * fp32 oracle. */
static void generator_bf16(const TinySpec *s) {
    Config c = tiny_config_h256(s, 48);
    char name[64];
    snprintf(name, sizeof name, "%s-H256-bf16", s->name);
    if (config_validate(&c, name)) { CHECK(0, "%s", fh_last_error()); return; }
    int B = 2, T = 48;
    Model mc, mg;
    int ok = !model_create(&mc, &c, &cpu_ops) && !model_init_params(&mc, 77) && !model_create(&mg, &c, &cuda_ops) &&
             !model_init_params(&mg, 77);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (!ok) return;
    mc.plan_len = mg.plan_len = T;
    CHECK(cuda_set_matmul_precision("bf16") == 0, "%s", fh_last_error());
    float *ref = run_generator(&mc, B, T, 0), *gemv = run_generator(&mg, B, T, 0);
    /* the same graph-replayed gemv decode under each PDL setting, set explicitly (whatever FLOWHN_PDL /
     * FLOWHN_PDL_GEMV say; gemv above ran under the environment's): PDL on (the gemv products' _pdl
     * kernels, linear.cu), on with the gemv products plain and main's kernels (FLOWHN_PDL_GEMV=0), on
     * with main's gemv code after a wait (=2), off (FLOWHN_PDL=0: main's gemv kernels). The same
     * kernels' arithmetic in the same order (the _pdl kernels sum each row in main's order), so the
     * logits must be the same bits; a kernel that read its predecessor's output before pdl_wait would
     * differ. And op by op (plain launches, no graph), for information: the recording may take other
     * bf16 roundings' buffers (shadows), which cuBLASLt's algorithm can see. */
    int pdl_was = cuda_set_pdl(1), pdl_gemv_was = cuda_set_pdl_gemv(1);
    float *pdl_on = run_generator(&mg, B, T, 0);
    cuda_set_pdl_gemv(0);
    float *pdl_gemvoff = run_generator(&mg, B, T, 0);
    cuda_set_pdl_gemv(2);   /* FLOWHN_PDL_GEMV=2: the gemv products PDL-launched with main's code after a wait */
    float *pdl_gemvwait = run_generator(&mg, B, T, 0);
    cuda_set_pdl(0);
    cuda_set_pdl_gemv(1);
    float *nopdl = run_generator(&mg, B, T, 0);
    cuda_set_pdl(pdl_was);
    cuda_set_pdl_gemv(pdl_gemv_was);
    float *eager = run_generator(&mg, B, T, 0, 0);
    /* gemv without the decode fusions: one gemv launch per product, separate adds, SwiGLU, RoPE, copies */
    char *saved = env_set("FLOWHN_DECODE_FUSE", "0");
    float *unfused = run_generator(&mg, B, T, 0);
    env_restore("FLOWHN_DECODE_FUSE", saved);
    /* through cuBLASLt (the fused ops fall back to their compositions) */
    saved = env_set("FLOWHN_GEMV", "0");
    float *frozen = run_generator(&mg, B, T, 0), *plain = run_generator(&mg, B, T, 1);
    env_restore("FLOWHN_GEMV", saved);
    cuda_set_matmul_precision("fp32");
    CHECK(cuda_ops_check() == 0, "%s: %s", name, fh_last_error());
    size_t n = (size_t)T * B * c.vocab_size;
    if (ref && frozen && plain && gemv && unfused) {
        double e_same = rel(frozen, plain, n), e_ref = rel(frozen, ref, n);
        double e_gemv = rel(gemv, frozen, n), e_gemv_ref = rel(gemv, ref, n), e_fuse = rel(gemv, unfused, n);
        double e_pdl = nopdl && pdl_on ? rel(pdl_on, nopdl, n) : 1.0;
        double e_pdl_gemv = pdl_gemvoff && pdl_on ? rel(pdl_on, pdl_gemvoff, n) : 1.0;
        double e_pdl_wait = pdl_gemvwait && pdl_on ? rel(pdl_on, pdl_gemvwait, n) : 1.0;
        double e_env = pdl_on ? rel(gemv, pdl_on, n) : 1.0, e_eager = eager ? rel(gemv, eager, n) : 1.0;
        CHECK(e_pdl <= 1e-6, "%s: graph-replayed gemv decode with PDL on vs off (FLOWHN_PDL=0), logits rel %.3e",
              name, e_pdl);
        CHECK(e_pdl_gemv <= 1e-6, "%s: graph-replayed gemv decode with PDL on vs on but gemv plain "
              "(FLOWHN_PDL_GEMV=0), logits rel %.3e", name, e_pdl_gemv);
        CHECK(e_pdl_wait <= 1e-6, "%s: graph-replayed gemv decode with PDL on vs on with main's gemv after a wait "
              "(FLOWHN_PDL_GEMV=2), logits rel %.3e", name, e_pdl_wait);
        CHECK(e_env <= 1e-6, "%s: graph-replayed gemv decode under the environment's PDL setting vs on, logits "
              "rel %.3e", name, e_env);
        CHECK(e_eager < 1e-2, "%s: graph-replayed vs op-by-op gemv decode logits rel %.3e", name, e_eager);
        printf("    %-26s replayed gemv decode, PDL on vs off %.2e, vs gemv-off %.2e, vs gemv-wait %.2e; vs op by op "
               "%.2e\n", name, e_pdl, e_pdl_gemv, e_pdl_wait, e_eager);
        /* the fused gemv kernels sum as gemv_bf16_kernel does, so ~0 is expected; a last-bit difference
         * (an FMA contracted differently) may flip later bf16 roundings: the bf16 bound */
        CHECK(e_fuse < 1e-2, "%s: fused vs unfused gemv generator logits rel %.3e", name, e_fuse);
        printf("    %-26s fused vs unfused (FLOWHN_DECODE_FUSE=0) gemv decode %.2e\n", name, e_fuse);
        CHECK(e_same < 1e-4, "%s: frozen vs per-product bf16 logits rel %.3e", name, e_same);
        CHECK(e_ref < 2e-2, "%s: bf16 generator vs CPU fp32 logits rel %.3e", name, e_ref);
        CHECK(e_gemv_ref < 2e-2, "%s: gemv generator vs CPU fp32 logits rel %.3e", name, e_gemv_ref);
        CHECK(e_gemv < 1e-2, "%s: gemv vs cuBLASLt generator logits rel %.3e", name, e_gemv);
        printf("    %-26s frozen vs per-product %.2e, vs CPU fp32 %.2e; gemv vs cuBLASLt %.2e, vs CPU fp32 %.2e\n",
               name, e_same, e_ref, e_gemv, e_gemv_ref);
    }
    free(ref); free(frozen); free(plain); free(gemv); free(unfused); free(eager);
    free(nopdl); free(pdl_on); free(pdl_gemvoff); free(pdl_gemvwait);
    model_free(&mc);
    model_free(&mg);
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: test_cuda_decode needs a GPU\nRESULT 0 passed, 1 failed\n");
        return 1;
    }
    RUN(copy_rows);
    RUN(conv1d_step);
    RUN(attention_decode);
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(generator_tiny, &tiny_specs[i], tiny_specs[i].name);
    const char *large[] = {"llama", "mamba1", "mamba2", "hymba", "flowhn-fac-isolated", "flowhn-ae-prefix"};
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < n_tiny_specs; i++)
            if (!strcmp(tiny_specs[i].name, large[k])) RUN_ARG(generator_large, &tiny_specs[i], large[k]);
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < n_tiny_specs; i++)
            if (!strcmp(tiny_specs[i].name, large[k])) RUN_ARG(generator_bf16, &tiny_specs[i], large[k]);
    TEST_SUMMARY();
}
