/* cmd_generate.c - `flowhn generate`: prompt in, text out. The prompt goes
 * through the model in one batched pass (generator_prefill), then the text
 * comes token by token with the KV cache and SSM state (src/infer/generate.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/error.h"
#include "../data/tokenizer.h"
#include "../infer/generate.h"
#include "../model/memory.h"
#include "../ops/backend.h"
#include "../train/checkpoint.h"
#include "args.h"
#include "commands.h"

static void usage(void) {
    fprintf(stderr, "usage: flowhn generate --checkpoint FILE --tokenizer tokenizer.json [--prompt TEXT] [--max-tokens N]\n"
                    "                       [--temperature T] [--top-k K] [--top-p P] [--seed S] [--samples N]\n"
                    "                       [--device cpu|cuda]\n"
                    "  defaults: 200 tokens, temperature 0.8, top-k 40, top-p 0.95, seed 1, 1 sample;\n"
                    "  temperature 0 is greedy. Stops at <|endoftext|> or the model's window.\n"
                    "  --device cuda decodes on the GPU (the CUDA build, build/flowhn-cuda); the logits\n"
                    "  come back to the host each token for sampling.\n");
}

/* Feeds the prompt (or <|endoftext|> when empty), then samples; prints as it goes. */
static int generate_text(Model *m, const Tokenizer *tok, const char *prompt, int max_tokens, const SamplerConfig *sc,
                  Rng *rng, FILE *out) {
    int *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n)) return -1;
    int eot = tokenizer_eot(tok), V = m->cfg.vocab_size;
    /* a leading <|endoftext|> marks a document start, as in training */
    int *seq = malloc(sizeof(int) * (n + 1));
    real *logits = malloc(sizeof(real) * V);
    Generator *g = generator_create(m, 1);
    if (!seq || !logits || !g) { free(seq); free(logits); free(ids); generator_free(g); return -1; }
    size_t len = 0;
    if (eot >= 0) seq[len++] = eot;
    memcpy(seq + len, ids, sizeof(int) * n);
    len += n;
    free(ids);
    int rc = 0;
    fputs(prompt, out);
    /* the prompt in one batched pass (generator_prefill); an empty prompt with
     * no <|endoftext|> leaves nothing to condition on */
    if (len > 0) rc = generator_prefill(g, seq, (int)len, logits);
    for (int k = 0; k < max_tokens && !rc && generator_position(g) < m->cfg.max_seq_len; k++) {
        int next = sample_token(logits, V, sc, rng);
        if (next == eot) break;
        size_t bl;
        char *piece = tokenizer_decode(tok, &next, 1, &bl);
        if (piece) { fwrite(piece, 1, bl, out); fflush(out); free(piece); }
        rc = generator_step(g, &next, logits);
    }
    fputc('\n', out);
    generator_free(g);
    free(seq);
    free(logits);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *tokp = NULL, *prompt = "", *device = "cpu";
    int max_tokens = 200, top_k = 40, seed = 1, samples = 1;
    double temp = 0.8, top_p = 0.95;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!(v = arg_value("generate", argc, argv, &i))) return 2;
        if (!strcmp(a, "--checkpoint")) ckpt = v;
        else if (!strcmp(a, "--tokenizer")) tokp = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--max-tokens")) { if (arg_int("generate", a, v, 0, 1 << 24, &max_tokens)) return 2; }
        else if (!strcmp(a, "--top-k")) { if (arg_int("generate", a, v, 0, 1 << 30, &top_k)) return 2; }
        else if (!strcmp(a, "--seed")) { if (arg_int("generate", a, v, 0, 2147483647, &seed)) return 2; }
        else if (!strcmp(a, "--samples")) { if (arg_int("generate", a, v, 1, 1000, &samples)) return 2; }
        else if (!strcmp(a, "--temperature")) { if (arg_double("generate", a, v, 0, 100, &temp)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (arg_double("generate", a, v, 0, 1, &top_p)) return 2; }
        else { fprintf(stderr, "flowhn generate: unknown option '%s'\n", a); usage(); return 2; }
    }
    if (!ckpt || !tokp) { usage(); return 2; }
    const Backend *be = backend_find(device);
    if (!be) { fprintf(stderr, "flowhn generate: --device %s: %s\n", device, fh_last_error()); return 2; }
    /* refused before loading (and before the tokenizer) when it cannot fit: weights + the generator's KV
     * caches and states + the prompt's prefill, for at most its byte count + 1 tokens (byte-level BPE: a
     * token covers at least one byte; + the leading <|endoftext|>), up to the window */
    Config cc;
    MemoryEstimate mem;
    size_t np = strlen(prompt) + 1;
    int rc = checkpoint_read_config(ckpt, &cc);
    if (!rc && np > (size_t)cc.max_seq_len) np = cc.max_seq_len;
    if (rc || model_memory_estimate(&cc, 1, (int)np, MEMORY_GENERATE, &mem) || memory_check(&mem, be)) {
        fprintf(stderr, "flowhn generate: %s\n", fh_last_error());
        return 1;
    }
    Model m;
    if (checkpoint_load_model(ckpt, be->ops, &m)) {
        fprintf(stderr, "flowhn generate: %s\n", fh_last_error());
        return 1;
    }
    const Config c = m.cfg;
    Tokenizer *tok = tokenizer_load(tokp);
    if (!tok) { fprintf(stderr, "flowhn generate: %s\n", fh_last_error()); model_free(&m); return 1; }
    if (tokenizer_vocab_size(tok) > c.vocab_size) {
        fprintf(stderr, "flowhn generate: tokenizer %s has %d tokens but the model's vocab_size is %d\n", tokp,
                tokenizer_vocab_size(tok), c.vocab_size);
        return 1;
    }
    SamplerConfig sc = {temp, top_k, top_p};
    Rng rng;
    rng_seed(&rng, (uint64_t)seed, 7);
    for (int s = 0; s < samples && !rc; s++) {
        if (samples > 1) printf("--- sample %d ---\n", s + 1);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = generate_text(&m, tok, prompt, max_tokens, &sc, &rng, stdout) || be->sync();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!rc && samples == 1)
            fprintf(stderr, "(%.2f s on %s)\n", (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec), be->name);
    }
    if (rc) fprintf(stderr, "flowhn generate: %s\n", fh_last_error());
    tokenizer_free(tok);
    model_free(&m);
    return rc ? 1 : 0;
}
