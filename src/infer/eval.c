/* eval.c - zero-shot scoring (see eval.h). */
#include "eval.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

int score_continuation(Model *m, const Tokenizer *tok, const char *context, const char *continuation,
                       double *logprob, int *n_tokens, int *greedy_match) {
    int *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    if (tokenizer_encode(tok, context, strlen(context), &a, &na) ||
        tokenizer_encode(tok, continuation, strlen(continuation), &b, &nb)) {
        free(a); free(b);
        return -1;
    }
    if (nb == 0) { free(a); free(b); return fh_error("empty continuation after tokenisation"); }
    /* sequence: <eot> context continuation; predict every continuation token */
    int W = m->cfg.max_seq_len;
    size_t total = 1 + na + nb;
    int *seq = malloc(sizeof(int) * total);
    if (!seq) { free(a); free(b); return fh_error("out of memory"); }
    int eot = tokenizer_eot(tok);
    seq[0] = eot >= 0 ? eot : 0;
    memcpy(seq + 1, a, sizeof(int) * na);
    memcpy(seq + 1 + na, b, sizeof(int) * nb);
    free(a); free(b);
    /* The continuation's tokens seq[p0, L) are scored in blocks of at most W
     * (rolling windows, as lm-evaluation-harness does for long texts): block
     * [p0, p1) is predicted from the inputs seq[a, p1 - 1) with a as far left as
     * the window allows, so every token keeps up to W tokens of context. */
    size_t L = total, p0 = 1 + na;
    int *tg = malloc(sizeof(int) * W);
    real *row = greedy_match ? malloc(sizeof(real) * m->cfg.vocab_size) : NULL;
    if (!tg || (greedy_match && !row)) { free(seq); free(tg); free(row); return fh_error("out of memory"); }
    *logprob = 0;
    *n_tokens = 0;
    if (greedy_match) *greedy_match = 1;
    int rc = 0;
    while (p0 < L && !rc) {
        size_t p1 = p0 + (size_t)W < L ? p0 + (size_t)W : L;
        size_t a = p1 - 1 > (size_t)W ? p1 - 1 - (size_t)W : 0;
        int T = (int)(p1 - 1 - a);
        for (int t = 0; t < T; t++) tg[t] = a + t + 1 >= p0 ? seq[a + t + 1] : -1;
        rc = model_forward(m, seq + a, tg, 1, T);
        if (rc) break;
        *logprob -= m->loss * m->n_valid;
        *n_tokens += m->n_valid;
        for (int t = 0; greedy_match && *greedy_match && t < T; t++) {
            if (tg[t] < 0) continue;
            int V = m->cfg.vocab_size, best = 0;
            m->ops->to_host(row, model_logits(m) + (size_t)t * V, sizeof(real) * V);
            for (int v = 1; v < V; v++) if (row[v] > row[best]) best = v;
            if (best != tg[t]) *greedy_match = 0;
        }
        p0 = p1;
    }
    free(row);
    free(tg);
    free(seq);
    return rc;
}

/* Reads one JSON line; returns NULL at EOF, sets *err on a bad line. */
static cJSON *next_line(FILE *f, const char *path, long lineno, int *err) {
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, f);
    if (n < 0) { free(buf); return NULL; }
    cJSON *o = cJSON_Parse(buf);
    free(buf);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        *err = fh_error("%s:%ld: not a JSON object", path, lineno);
        return NULL;   /* the caller stops here; never hand back the freed line */
    }
    return o;
}

static void progress_line(const char *what, int i, int limit, double acc) {
    if (limit > 0) fprintf(stderr, "\r%s: %d / %d items, accuracy so far %.4f   ", what, i, limit, acc);
    else fprintf(stderr, "\r%s: %d items, accuracy so far %.4f   ", what, i, acc);
}

/* One item of a task: scores the JSON object, updates the task's tallies,
 * returns 0 or -1 (message without the file:line prefix, added by the driver). */
typedef int (*ItemFn)(Model *m, const Tokenizer *tok, const cJSON *o, void *ctx);

/* Reads a JSON-lines file item by item (at most limit > 0 items), with the
 * plan window used for scoring, a progress line, and errors named file:line.
 * *n counts items done; *correct feeds the progress line. */
static int for_each_item(Model *m, const Tokenizer *tok, const char *path, int limit, int progress, ItemFn fn,
                         void *ctx, const int *n, const int *correct) {
    FILE *f = fopen(path, "r");
    if (!f) return fh_error("cannot open %s: %s", path, strerror(errno));
    m->plan_len = m->cfg.max_seq_len;
    long lineno = 0;
    int err = 0;
    cJSON *o;
    while ((limit <= 0 || *n < limit) && (o = next_line(f, path, ++lineno, &err)) != NULL) {
        int rc = fn(m, tok, o, ctx);
        cJSON_Delete(o);
        if (rc) { fclose(f); return fh_error("%s:%ld: %s", path, lineno, fh_last_error()); }
        if (progress && *n % 20 == 0) progress_line(path, *n, limit, (double)*correct / *n);
    }
    fclose(f);
    if (progress) fprintf(stderr, "\n");
    if (err) return -1;
    if (!*n) return fh_error("%s: no items", path);
    return 0;
}

static int choice_item(Model *m, const Tokenizer *tok, const cJSON *o, void *ctx) {
    ChoiceResult *r = ctx;
    cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "Query"), *ch = cJSON_GetObjectItemCaseSensitive(o, "Choices");
    cJSON *lab = cJSON_GetObjectItemCaseSensitive(o, "label");
    int label = -1, partial = 0, nc = cJSON_GetArraySize(ch);
    /* range-checked before the cast: a huge or NaN label would be undefined behaviour */
    if (cJSON_IsNumber(lab) && lab->valuedouble >= 0 && lab->valuedouble < nc) label = (int)lab->valuedouble;
    else if (cJSON_IsString(lab) && lab->valuestring[0] >= '1' && lab->valuestring[0] <= '9') {
        label = atoi(lab->valuestring) - 1;   /* WinoGrande: 1-based, choices are contexts */
        partial = 1;
    }
    if (!cJSON_IsString(q) || !cJSON_IsArray(ch) || nc < 2 || label < 0 || label >= nc)
        return fh_error("expected \"Query\" (string), \"Choices\" (array of >= 2 strings) and \"label\" "
                        "(index into Choices: integer from 0, or string from \"1\")");
    int best = -1, best_norm = -1;
    double bs = -INFINITY, bn = -INFINITY;
    for (int k = 0; k < nc; k++) {
        cJSON *c = cJSON_GetArrayItem(ch, k);
        if (!cJSON_IsString(c)) return fh_error("choice %d is not a string", k);
        const char *cx = partial ? c->valuestring : q->valuestring, *cont = partial ? q->valuestring : c->valuestring;
        double lp;
        int nt;
        if (score_continuation(m, tok, cx, cont, &lp, &nt, NULL)) return -1;
        double norm = lp / (double)(strlen(cont) ? strlen(cont) : 1);
        if (lp > bs) { bs = lp; best = k; }
        if (norm > bn) { bn = norm; best_norm = k; }
    }
    r->n++;
    r->correct += best == label;
    r->correct_norm += best_norm == label;
    return 0;
}

int eval_choices(Model *m, const Tokenizer *tok, const char *path, int limit, int progress, ChoiceResult *r) {
    memset(r, 0, sizeof *r);
    if (for_each_item(m, tok, path, limit, progress, choice_item, r, &r->n, &r->correct)) return -1;
    r->acc = (double)r->correct / r->n;
    r->acc_norm = (double)r->correct_norm / r->n;
    return 0;
}

typedef struct { LambadaResult *r; double total; long tokens; } LambadaTally;

static int lambada_item(Model *m, const Tokenizer *tok, const cJSON *o, void *ctx) {
    LambadaTally *t = ctx;
    cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "Query"), *lab = cJSON_GetObjectItemCaseSensitive(o, "label");
    if (!cJSON_IsString(q) || !cJSON_IsString(lab))
        return fh_error("LAMBADA lines need \"Query\" and \"label\" (the target word) strings");
    double lp;
    int nt, match;
    if (score_continuation(m, tok, q->valuestring, lab->valuestring, &lp, &nt, &match)) return -1;
    t->r->n++;
    t->r->correct += match;
    t->total += lp;
    t->tokens += nt;
    return 0;
}

int eval_lambada(Model *m, const Tokenizer *tok, const char *path, int limit, int progress, LambadaResult *r) {
    memset(r, 0, sizeof *r);
    LambadaTally t = {r, 0, 0};
    if (for_each_item(m, tok, path, limit, progress, lambada_item, &t, &r->n, &r->correct)) return -1;
    r->acc = (double)r->correct / r->n;
    r->mean_logprob = t.total / r->n;
    r->ppl = exp(-t.total / (t.tokens ? t.tokens : 1));
    return 0;
}

int eval_loss_by_position(Model *m, BatchSource *src, int n_batches, int B, int T, int K, double *bucket_sum,
                          long *bucket_count, double *loss) {
    if (K < 1 || K > T) return fh_error("--by-position: %d buckets for %d positions (need 1..T)", K, T);
    size_t BT = (size_t)B * T;
    int *tok = malloc(sizeof(int) * BT), *tgt = malloc(sizeof(int) * BT);
    real *l = malloc(sizeof(real) * BT);
    if (!tok || !tgt || !l) { free(tok); free(tgt); free(l); return fh_error("out of memory"); }
    for (int k = 0; k < K; k++) { bucket_sum[k] = 0; bucket_count[k] = 0; }
    double sum = 0;
    long count = 0;
    int rc = 0;
    for (int i = 0; i < n_batches && !rc; i++) {
        if ((rc = src->next(src->ctx, tok, tgt, B, T)) || (rc = model_forward(m, tok, tgt, B, T))) break;
        m->ops->to_host(l, model_token_losses(m), sizeof(real) * BT);
        for (size_t j = 0; j < BT; j++) {
            if (tgt[j] < 0) continue;
            int t = (int)(j % (size_t)T);
            /* the bucket whose range [k*T/K, (k+1)*T/K) holds t */
            int k = (int)(((long)t * K + K - 1) / T);
            while (k > 0 && (long)k * T / K > t) k--;
            while (k + 1 < K && (long)(k + 1) * T / K <= t) k++;
            bucket_sum[k] += l[j];
            bucket_count[k]++;
            sum += l[j];
            count++;
        }
    }
    free(tok); free(tgt); free(l);
    if (rc) return -1;
    *loss = count ? sum / count : 0;
    return 0;
}
