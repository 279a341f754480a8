/* test_eval.c - zero-shot scoring against an independent computation: the
 * log-likelihood of a continuation is recomputed token by token with the
 * generator (KV cache / SSM state path, log-softmax summed here), and the
 * files' labels are made from those scores so the expected accuracy is known. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "../src/core/error.h"
#include "../src/infer/eval.h"
#include "../src/infer/generate.h"
#include "helpers/tiny.h"
#include "helpers/tmpdir.h"
#include "test.h"

static Tokenizer *tok;
static char dir[128];

/* sum of log p(continuation tokens) via the generator; also the greedy next token after the context */
static double reference_logprob(Model *m, const char *ctx, const char *cont, int *greedy_first) {
    int *a, *b;
    size_t na, nb;
    tokenizer_encode(tok, ctx, strlen(ctx), &a, &na);
    tokenizer_encode(tok, cont, strlen(cont), &b, &nb);
    Generator *g = generator_create(m, 1);
    int V = m->cfg.vocab_size, eot = tokenizer_eot(tok);
    real *logits = malloc(sizeof(real) * V);
    generator_step(g, &eot, logits);
    for (size_t i = 0; i < na; i++) generator_step(g, &a[i], logits);
    double lp = 0;
    for (size_t i = 0; i < nb; i++) {
        double mx = -1e30, z = 0;
        int best = 0;
        for (int v = 0; v < V; v++) { if (logits[v] > mx) mx = logits[v]; if (logits[v] > logits[best]) best = v; }
        if (i == 0 && greedy_first) *greedy_first = best;
        for (int v = 0; v < V; v++) z += exp(logits[v] - mx);
        lp += logits[b[i]] - mx - log(z);
        generator_step(g, &b[i], logits);
    }
    generator_free(g);
    free(logits); free(a); free(b);
    return lp;
}

static Model make_model(int spec) {
    Config c = tiny_config(&tiny_specs[spec]);
    c.vocab_size = tokenizer_vocab_size(tok);
    c.max_seq_len = 64;
    Model m;
    model_create(&m, &c, &cpu_ops);
    model_init_params(&m, 3);
    m.plan_len = c.max_seq_len;
    return m;
}

static void scores_match_generator(int spec) {
    Model m = make_model(spec);
    const char *ctx[3] = {"the cat sat", "a dog ran to", "birds"}, *cont[3] = {" on the mat", " the park", " fly high"};
    for (int i = 0; i < 3; i++) {
        double lp, want = reference_logprob(&m, ctx[i], cont[i], NULL);
        int n;
        CHECK(score_continuation(&m, tok, ctx[i], cont[i], &lp, &n, NULL) == 0, "%s", fh_last_error());
        CHECK(fabs(lp - want) < 1e-4 * fabs(want), "%s: %.6f vs generator %.6f", tiny_specs[spec].name, lp, want);
    }
    model_free(&m);
}

static void accuracy_from_known_labels(void) {
    Model m = make_model(12);
    const char *q[4] = {"the cat", "a dog", "one two", "red blue"};
    const char *c[4][2] = {{" sat", " ran"}, {" is", " was"}, {" three", " four"}, {" green", " sky"}};
    char best_path[200], worst_path[200], wino_path[200];
    snprintf(best_path, sizeof best_path, "%s/best.jsonl", dir);
    snprintf(worst_path, sizeof worst_path, "%s/worst.jsonl", dir);
    snprintf(wino_path, sizeof wino_path, "%s/wino.jsonl", dir);
    FILE *fb = fopen(best_path, "w"), *fw = fopen(worst_path, "w"), *fp = fopen(wino_path, "w");
    for (int i = 0; i < 4; i++) {
        double s0 = reference_logprob(&m, q[i], c[i][0], NULL), s1 = reference_logprob(&m, q[i], c[i][1], NULL);
        int best = s1 > s0;
        fprintf(fb, "{\"Query\": \"%s\", \"Choices\": [\"%s\", \"%s\"], \"label\": %d}\n", q[i], c[i][0], c[i][1], best);
        fprintf(fw, "{\"Query\": \"%s\", \"Choices\": [\"%s\", \"%s\"], \"label\": %d}\n", q[i], c[i][0], c[i][1], 1 - best);
        /* WinoGrande layout: the choices are contexts, the query the continuation; label 1-based string */
        double w0 = reference_logprob(&m, c[i][0], q[i], NULL), w1 = reference_logprob(&m, c[i][1], q[i], NULL);
        fprintf(fp, "{\"Query\": \"%s\", \"Choices\": [\"%s\", \"%s\"], \"label\": \"%d\"}\n", q[i], c[i][0], c[i][1],
                (w1 > w0) + 1);
    }
    fclose(fb); fclose(fw); fclose(fp);
    ChoiceResult r;
    CHECK(eval_choices(&m, tok, best_path, 0, 0, &r) == 0 && r.n == 4 && r.acc == 1.0, "best labels: acc %.2f", r.acc);
    CHECK(eval_choices(&m, tok, worst_path, 0, 0, &r) == 0 && r.acc == 0.0, "worst labels: acc %.2f", r.acc);
    CHECK(eval_choices(&m, tok, wino_path, 0, 0, &r) == 0 && r.acc == 1.0, "partial (WinoGrande) layout: acc %.2f", r.acc);
    CHECK(eval_choices(&m, tok, best_path, 2, 0, &r) == 0 && r.n == 2, "limit");
    /* LAMBADA: a target equal to the greedy first token matches when it is one token */
    int g;
    reference_logprob(&m, "the cat", " x", &g);
    size_t bl;
    char *word = tokenizer_decode(tok, &g, 1, &bl);
    char lpath[200];
    snprintf(lpath, sizeof lpath, "%s/lambada.jsonl", dir);
    FILE *fl = fopen(lpath, "w");
    cJSON *o = cJSON_CreateObject();   /* the decoded piece may hold characters that need escaping */
    cJSON_AddStringToObject(o, "Query", "the cat");
    cJSON_AddStringToObject(o, "label", word);
    char *line = cJSON_PrintUnformatted(o);
    fprintf(fl, "%s\n", line);
    free(line);
    cJSON_Delete(o);
    fclose(fl);
    LambadaResult lr;
    CHECK(eval_lambada(&m, tok, lpath, 0, 0, &lr) == 0 && lr.n == 1, "%s", fh_last_error());
    int *ids;
    size_t n;
    tokenizer_encode(tok, word, strlen(word), &ids, &n);
    if (n == 1) CHECK(lr.correct == 1, "greedy target '%s' must match", word);
    free(ids);
    free(word);
    model_free(&m);
}

static void continuation_longer_than_window(void) {
    Model m = make_model(12);   /* window 64 */
    char longtext[2000] = "";
    for (int i = 0; i < 40; i++) strcat(longtext, " the cat sat on the mat");
    int *ids;
    size_t n;
    tokenizer_encode(tok, longtext, strlen(longtext), &ids, &n);
    free(ids);
    double lp;
    int nt, g;
    CHECK(n > 64, "the text is longer than the window (%zu tokens)", n);
    CHECK(score_continuation(&m, tok, "a dog", longtext, &lp, &nt, &g) == 0, "%s", fh_last_error());
    CHECK(nt == (int)n && isfinite(lp) && lp < 0, "every token scored in rolling windows: %d of %zu, lp %g", nt, n, lp);
    model_free(&m);
}

static void bad_files(void) {
    Model m = make_model(0);
    char p[200];
    snprintf(p, sizeof p, "%s/bad.jsonl", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"Query\": \"a\", \"Choices\": [\"b\", \"c\"], \"label\": 0}\n{\"Query\": \"a\", \"label\": 0}\n");
    fclose(f);
    ChoiceResult r;
    CHECK(eval_choices(&m, tok, p, 0, 0, &r) != 0 && strstr(fh_last_error(), "bad.jsonl:2"), "%s", fh_last_error());
    f = fopen(p, "w");
    fprintf(f, "{\"Query\": \"a\", \"Choices\": [\"b\", \"c\"], \"label\": 5}\n");
    fclose(f);
    CHECK(eval_choices(&m, tok, p, 0, 0, &r) != 0 && strstr(fh_last_error(), "label"), "%s", fh_last_error());
    CHECK(eval_choices(&m, tok, "/nonexistent.jsonl", 0, 0, &r) != 0 && strstr(fh_last_error(), "/nonexistent.jsonl"), "missing file");
    model_free(&m);
}

/* A BatchSource over fixed batches held in memory (tiny_batch), replayable. */
typedef struct { int V, i; } MemSource;
static int mem_next(void *ctx, int *tokens, int *targets, int B, int T) {
    MemSource *s = ctx;
    tiny_batch(tokens, targets, B, T, s->V, 100 + s->i++);
    return 0;
}

/* The buckets' count-weighted mean is the overall loss, which is the trainer's
 * validation loss (evaluate_loss on the same batches); each bucket's loss is
 * the model's own mean loss with only that bucket's targets kept; T = 30 in
 * K = 7 buckets (unequal sizes 4/5) covers the bucket bounds. */
static void loss_by_position(int spec) {
    Config c = tiny_config(&tiny_specs[spec]);
    Model m;
    model_create(&m, &c, &cpu_ops);
    model_init_params(&m, 5);
    enum { B = 2, T = 30, K = 7, NB = 3 };
    m.plan_len = T;
    double bsum[K], loss, want;
    long bcount[K];
    MemSource ms = {c.vocab_size, 0};
    BatchSource src = {mem_next, NULL, NULL, &ms};
    CHECK(eval_loss_by_position(&m, &src, NB, B, T, K, bsum, bcount, &loss) == 0, "%s", fh_last_error());
    ms.i = 0;
    CHECK(evaluate_loss(&m, &src, NB, B, T, &want) == 0, "%s", fh_last_error());
    CHECK(fabs(loss - want) < 1e-6 * want, "overall %.8f vs evaluate_loss %.8f", loss, want);
    double wsum = 0;
    long n = 0;
    for (int k = 0; k < K; k++) { wsum += bsum[k]; n += bcount[k]; }
    CHECK(n > 0 && fabs(wsum / n - loss) < 1e-9 * loss, "weighted mean of the buckets %.8f vs %.8f", wsum / n, loss);
    /* per bucket: the forward's mean loss with the targets outside the bucket masked */
    int tok[B * T], tgt[B * T];
    double ksum[K] = {0};
    long kcount[K] = {0};
    for (int b = 0; b < NB; b++) {
        for (int k = 0; k < K; k++) {
            tiny_batch(tok, tgt, B, T, c.vocab_size, 100 + b);
            int from = k * T / K, to = (k + 1) * T / K;
            for (int j = 0; j < B * T; j++) if (j % T < from || j % T >= to) tgt[j] = -1;
            CHECK(model_forward(&m, tok, tgt, B, T) == 0, "%s", fh_last_error());
            ksum[k] += m.loss * m.n_valid;
            kcount[k] += m.n_valid;
        }
    }
    for (int k = 0; k < K; k++)
        CHECK(kcount[k] == bcount[k] && fabs(ksum[k] - bsum[k]) < 1e-5 * fabs(ksum[k]) + 1e-9,
              "bucket %d: %ld tokens, sum %.6f; masked forward %ld, %.6f", k, bcount[k], bsum[k], kcount[k], ksum[k]);
    /* a known case: zero parameters give uniform logits, so every bucket's loss is ln V */
    memset(m.params, 0, sizeof(real) * m.layout.total);
    ms.i = 0;
    CHECK(eval_loss_by_position(&m, &src, 1, B, T, K, bsum, bcount, &loss) == 0, "%s", fh_last_error());
    for (int k = 0; k < K; k++)
        CHECK(fabs(bsum[k] / bcount[k] - log(c.vocab_size)) < 1e-5, "zero model, bucket %d: %.6f vs ln V %.6f", k,
              bsum[k] / bcount[k], log(c.vocab_size));
    CHECK(eval_loss_by_position(&m, &src, 1, B, T, T + 1, bsum, bcount, &loss) != 0, "more buckets than positions refused");
    model_free(&m);
}

int main(void) {
    test_dir_make(dir, sizeof dir, "eval");
    const char *text = "the cat sat on the mat. a dog ran to the park. birds fly high in the sky. one two three four. "
                       "red blue green. the cat was here and the dog is there. ";
    size_t len = strlen(text);
    tok = tokenizer_train(&text, &len, 1, 300);
    if (!tok) { printf("FAIL tokenizer: %s\n", fh_last_error()); return 1; }
    RUN_ARG(scores_match_generator, 0, "llama");
    RUN_ARG(scores_match_generator, 12, "flowhn-fac-isolated");
    RUN_ARG(scores_match_generator, 2, "mamba2");
    RUN(accuracy_from_known_labels);
    RUN(continuation_longer_than_window);
    RUN(bad_files);
    RUN_ARG(loss_by_position, 0, "llama");
    RUN_ARG(loss_by_position, 12, "flowhn-fac-isolated");
    RUN_ARG(loss_by_position, 13, "flowhn-fac-prefix");
    tokenizer_free(tok);
    test_dir_remove(dir);
    TEST_SUMMARY();
}
