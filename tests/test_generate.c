/* test_generate.c - incremental decoding equals the full forward.
 *
 * For every architecture and FlowHN split/context: feed T tokens one at a
 * time through the generator (KV cache + SSM state) and compare the logits at
 * each position with one full-sequence forward under the same split plan
 * window. fp32; bound: relative L2 error < 1e-5 per position. */
#include <stdlib.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/infer/generate.h"
#include "helpers/gradcheck.h"
#include "helpers/tiny.h"
#include "test.h"

static void incremental_equals_full(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    c.max_seq_len = 24;   /* the plan window */
    int lengths[2] = {24, 17};   /* the whole window, and a prefix of it */
    for (int li = 0; li < 2; li++) {
        int B = 2, T = lengths[li], V = c.vocab_size;
        Model m;
        CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
        model_init_params(&m, 11);
        m.plan_len = c.max_seq_len;
        int tok[2 * 24], tgt[2 * 24];
        tiny_batch(tok, tgt, B, T, V, 5);
        CHECK(model_forward(&m, tok, NULL, B, T) == 0, "%s", fh_last_error());
        real *full = malloc(sizeof(real) * B * T * V);
        memcpy(full, model_logits(&m), sizeof(real) * B * T * V);
        Generator *g = generator_create(&m, B);
        CHECK(g != NULL, "%s", fh_last_error());
        if (!g) { free(full); model_free(&m); return; }
        real *step = malloc(sizeof(real) * B * V), *want = malloc(sizeof(real) * B * V);
        double worst = 0;
        for (int t = 0; t < T; t++) {
            int in[2] = {tok[t], tok[T + t]};
            CHECK(generator_step(g, in, step) == 0, "%s", fh_last_error());
            for (int b = 0; b < B; b++) memcpy(want + b * V, full + ((size_t)b * T + t) * V, sizeof(real) * V);
            double e = rel_l2(step, want, (size_t)B * V);
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-5, "%s T=%d: incremental vs full logits rel err %.3e", s->name, T, worst);
        printf("    %-22s T=%2d  max rel err %.2e\n", s->name, T, worst);
        generator_free(g);
        free(step); free(want); free(full);
        model_free(&m);
    }
}

/* Batched prefill (generator_prefill) against token-by-token steps: for
 * prompts of P = 1 .. the whole window, the prefill's logits equal those of
 * the P-th step, and N decode steps after it equal steps P+1 .. P+N of the
 * token-by-token run (so the caches, conv windows and SSM states it left are
 * the steps' state). A reset generator prefilled again gives the same logits. */
static void prefill_equals_steps(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    c.max_seq_len = 24;   /* the plan window */
    enum { B = 2, W = 24 };
    int V = c.vocab_size, prompts[] = {1, 2, 3, 5, 13, 20, 24};
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    model_init_params(&m, 11);
    m.plan_len = W;
    int tok[B * W], tgt[B * W];
    tiny_batch(tok, tgt, B, W, V, 7);
    /* the reference: W token steps, logits of every position */
    real *ref = malloc(sizeof(real) * W * B * V), *got = malloc(sizeof(real) * B * V),
         *again = malloc(sizeof(real) * B * V);
    Generator *g = generator_create(&m, B);
    CHECK(g != NULL, "%s", fh_last_error());
    if (!g) { free(ref); free(got); free(again); model_free(&m); return; }
    for (int t = 0; t < W; t++) {
        int in[B] = {tok[t], tok[W + t]};
        CHECK(generator_step(g, in, ref + (size_t)t * B * V) == 0, "%s", fh_last_error());
    }
    generator_free(g);
    double worst = 0;
    for (size_t pi = 0; pi < sizeof prompts / sizeof prompts[0]; pi++) {
        int P = prompts[pi], N = W - P < 4 ? W - P : 4;
        int prompt[B * W];
        for (int b = 0; b < B; b++) memcpy(prompt + b * P, tok + b * W, sizeof(int) * P);
        g = generator_create(&m, B);
        CHECK(g && generator_prefill(g, prompt, P, got) == 0, "%s P=%d: %s", s->name, P, fh_last_error());
        if (!g) break;
        CHECK(generator_position(g) == P, "%s P=%d: position %d after the prefill", s->name, P, generator_position(g));
        double e = rel_l2(got, ref + (size_t)(P - 1) * B * V, (size_t)B * V), ed = 0;
        for (int k = 0; k < N; k++) {
            int in[B] = {tok[P + k], tok[W + P + k]};
            CHECK(generator_step(g, in, got) == 0, "%s", fh_last_error());
            double ek = rel_l2(got, ref + (size_t)(P + k) * B * V, (size_t)B * V);
            if (ek > ed) ed = ek;
        }
        CHECK(e < 1e-5 && ed < 1e-5, "%s P=%d: prefill logits rel err %.3e, the %d steps after it %.3e", s->name, P,
              e, N, ed);
        if (e > worst) worst = e;
        if (ed > worst) worst = ed;
        /* the same prompt again after a reset; a second prefill without one is refused */
        CHECK(generator_prefill(g, prompt, P, again) != 0 && strstr(fh_last_error(), "position 0"),
              "prefill at position %d refused", generator_position(g));
        generator_reset(g);
        CHECK(generator_prefill(g, prompt, P, again) == 0, "%s", fh_last_error());
        double er = rel_l2(again, ref + (size_t)(P - 1) * B * V, (size_t)B * V);
        CHECK(er < 1e-5, "%s P=%d: prefill after a reset rel err %.3e", s->name, P, er);
        generator_free(g);
    }
    printf("    %-22s P=1..%d  max rel err %.2e (prefill and the steps after it)\n", s->name, W, worst);
    free(ref); free(got); free(again);
    model_free(&m);
}

/* a seed-1 llama tiny model with a 4-token window, and a generator of batch 1 on it */
static Generator *window4_generator(Model *m) {
    Config c = tiny_config(&tiny_specs[0]);
    c.max_seq_len = 4;
    model_create(m, &c, &cpu_ops);
    model_init_params(m, 1);
    return generator_create(m, 1);
}

static void prefill_refuses(void) {
    Model m;
    Generator *g = window4_generator(&m);
    int t[5] = {1, 2, 3, 4, 5};
    real logits[32];
    CHECK(generator_prefill(g, t, 5, logits) != 0 && strstr(fh_last_error(), "window"), "5 tokens refused: %s",
          fh_last_error());
    CHECK(generator_prefill(g, t, 0, logits) != 0, "an empty prompt refused");
    t[1] = 99;
    CHECK(generator_prefill(g, t, 3, logits) != 0 && strstr(fh_last_error(), "vocabulary"), "bad id refused");
    CHECK(generator_position(g) == 0, "nothing consumed");
    generator_free(g);
    model_free(&m);
}

static void window_is_enforced(void) {
    Model m;
    Generator *g = window4_generator(&m);
    real logits[32];
    int t = 1;
    for (int i = 0; i < 4; i++) CHECK(generator_step(g, &t, logits) == 0, "%s", fh_last_error());
    CHECK(generator_step(g, &t, logits) != 0 && strstr(fh_last_error(), "window"), "5th token refused: %s", fh_last_error());
    t = 99;
    generator_free(g);
    g = generator_create(&m, 1);
    CHECK(generator_step(g, &t, logits) != 0 && strstr(fh_last_error(), "vocabulary"), "bad id refused");
    generator_free(g);
    model_free(&m);
}

/* The decode fusions (ops.h "fused decode ops", generate.c add_norm,
 * linear3, attn_fused ...) against the unfused step (FLOWHN_DECODE_FUSE=0):
 * on the CPU the fused ops are their compositions, so every step's logits
 * must have the same bits. */
static void fused_equals_unfused(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    c.max_seq_len = 24;
    enum { B = 2, W = 24 };
    int V = c.vocab_size;
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    model_init_params(&m, 13);
    m.plan_len = W;
    int tok[B * W], tgt[B * W];
    tiny_batch(tok, tgt, B, W, V, 9);
    real *out[2];
    for (int f = 0; f < 2; f++) {
        out[f] = malloc(sizeof(real) * W * B * V);
        setenv("FLOWHN_DECODE_FUSE", f ? "1" : "0", 1);
        Generator *g = generator_create(&m, B);
        CHECK(g != NULL, "%s", fh_last_error());
        for (int t = 0; g && t < W; t++) {
            int in[B] = {tok[t], tok[W + t]};
            CHECK(generator_step(g, in, out[f] + (size_t)t * B * V) == 0, "%s", fh_last_error());
        }
        generator_free(g);
    }
    unsetenv("FLOWHN_DECODE_FUSE");
    CHECK(!memcmp(out[0], out[1], sizeof(real) * W * B * V), "%s: fused decode logits differ from the unfused",
          s->name);
    free(out[0]);
    free(out[1]);
    model_free(&m);
}

static void sampler(void) {
    real logits[5] = {0, 3, 1, 2.9f, -1};
    Rng r;
    rng_seed(&r, 1, 1);
    SamplerConfig greedy = {0, 0, 0}, top1 = {1.0, 1, 0}, topk2 = {1.0, 2, 0}, nucleus = {1.0, 0, 0.5};
    CHECK(sample_token(logits, 5, &greedy, &r) == 1, "greedy picks the max");
    for (int i = 0; i < 50; i++) CHECK(sample_token(logits, 5, &top1, &r) == 1, "top-k 1 is greedy");
    int seen[5] = {0};
    for (int i = 0; i < 2000; i++) seen[sample_token(logits, 5, &topk2, &r)]++;
    CHECK(seen[0] == 0 && seen[2] == 0 && seen[4] == 0 && seen[1] > 0 && seen[3] > 0, "top-k 2 keeps two tokens");
    /* p(1) = e^3 / Z ~ 0.48 < 0.5, so top-p 0.5 keeps tokens 1 and 3 */
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++) seen[sample_token(logits, 5, &nucleus, &r)]++;
    CHECK(seen[2] == 0 && seen[0] == 0 && seen[1] > 800 && seen[3] > 600, "top-p: %d %d %d", seen[1], seen[3], seen[2]);
}

/* generator_step_params (the decode bench's bandwidth bound) against a count
 * of the layout's named entries: every parameter, the untied embedding's B
 * rows only, and for FlowHN with a split at each position the entries of the
 * branch it is not routed to left out (prefix context: the attention
 * branch's mixer_norm, k_proj and v_proj stay, every token's K/V being
 * cached). Checks the routing accessor too: defined exactly for FlowHN with a
 * split, and both branches used somewhere in the window. */
static void step_params_match_layout(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    c.max_seq_len = 24;
    enum { B = 3 };
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    m.plan_len = c.max_seq_len;
    Generator *g = generator_create(&m, B);
    CHECK(g != NULL, "%s", fh_last_error());
    if (!g) { model_free(&m); return; }
    int split = c.arch == ARCH_FLOWHN && c.split != SPLIT_NONE, prefix = c.context == CONTEXT_PREFIX;
    int to_attn = 0, to_ssm = 0;
    for (int t = 0; t < c.max_seq_len; t++) {
        size_t want = 0;
        for (int e = 0; e < m.layout.n; e++) {
            const ParamEntry *p = &m.layout.entries[e];
            if (!c.tie_embeddings && !strcmp(p->name, "embed.weight")) { want += (size_t)B * c.hidden_size; continue; }
            int l = -1, used = 1;
            char rest[96] = "";
            if (sscanf(p->name, "layers.%d.%95s", &l, rest) == 2) {
                int r = generator_routes_to_attention(g, l, t);
                CHECK((r >= 0) == split, "%s: route defined for layer %d: %d", s->name, l, r);
                if (r == 1) to_attn++;
                if (r == 0) to_ssm++;
                if (r == 1 && !strncmp(rest, "ssm_branch.", 11)) used = 0;
                if (r == 0 && !strncmp(rest, "attn_branch.", 12))
                    used = prefix && (!strcmp(rest, "attn_branch.mixer_norm.weight") ||
                                      !strcmp(rest, "attn_branch.mixer.k_proj.weight") ||
                                      !strcmp(rest, "attn_branch.mixer.v_proj.weight"));
            }
            if (used) want += p->numel;
        }
        size_t got = generator_step_params(g, t);
        CHECK(got == want, "%s t=%d: generator_step_params %zu, layout count %zu", s->name, t, got, want);
    }
    if (split) CHECK(to_attn > 0 && to_ssm > 0, "%s: both branches used (%d, %d)", s->name, to_attn, to_ssm);
    generator_free(g);
    model_free(&m);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(incremental_equals_full, i, tiny_specs[i].name);
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(prefill_equals_steps, i, tiny_specs[i].name);
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(step_params_match_layout, i, tiny_specs[i].name);
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(fused_equals_unfused, i, tiny_specs[i].name);
    RUN(prefill_refuses);
    RUN(window_is_enforced);
    RUN(sampler);
    TEST_SUMMARY();
}
