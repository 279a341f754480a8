/* data_source.c - token shards as a batch stream (see data_source.h). */
#include "data_source.h"

#include <cJSON.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../data/shards.h"

/* Reads a whole shard (validated by shard_open: magic, version, size, ids). */
static int read_shard_tokens(const char *path, int vocab, int **out, long *n_out) {
    Shard sh;
    if (shard_open(&sh, path, vocab)) return -1;
    int *tok = malloc(sizeof(int) * (size_t)(sh.n_tokens ? sh.n_tokens : 1));
    int rc = tok ? shard_read(&sh, 0, sh.n_tokens, tok) : fh_error("out of memory reading %s", path);
    *n_out = sh.n_tokens;
    shard_close(&sh);
    if (rc) { free(tok); return -1; }
    *out = tok;
    return 0;
}

int shard_source_open(ShardSource *s, const char *dir, const char *split, int vocab, int rank, int world) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->split, sizeof s->split, "%s", split);
    s->rank = rank;
    s->world = world;
    char pattern[600];
    snprintf(pattern, sizeof pattern, "%s/%s_*.bin", dir, split);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) || g.gl_pathc == 0) {
        globfree(&g);
        return fh_error("no %s shards match %s (run `flowhn prepare` to make them)", split, pattern);
    }
    for (size_t f = 0; f < g.gl_pathc; f++) {
        int *tok = NULL;
        long n = 0;
        if (read_shard_tokens(g.gl_pathv[f], vocab, &tok, &n)) { globfree(&g); shard_source_close(s); return -1; }
        int *all = realloc(s->tokens, sizeof(int) * (s->n + n));
        if (!all) { free(tok); globfree(&g); shard_source_close(s); return fh_error("out of memory reading %s", g.gl_pathv[f]); }
        s->tokens = all;
        memcpy(s->tokens + s->n, tok, sizeof(int) * n);
        s->n += n;
        free(tok);
    }
    globfree(&g);
    if (s->n < 2) { shard_source_close(s); return fh_error("%s: the %s shards hold fewer than 2 tokens", dir, split); }
    return 0;
}

void shard_source_close(ShardSource *s) {
    free(s->tokens);
    s->tokens = NULL;
    s->n = 0;
}

long shard_source_tokens(const ShardSource *s) { return s->n; }

double shard_unigram_baseline(const ShardSource *train, const ShardSource *val) {
    int V = 0;
    for (long i = 0; i < train->n; i++) if (train->tokens[i] >= V) V = train->tokens[i] + 1;
    for (long i = 0; i < val->n; i++) if (val->tokens[i] >= V) V = val->tokens[i] + 1;
    double *count = calloc(V, sizeof(double));
    if (!count) return NAN;
    for (long i = 0; i < train->n; i++) count[train->tokens[i]] += 1;
    double total = train->n + V, nll = 0;
    for (long i = 0; i < val->n; i++) nll -= log((count[val->tokens[i]] + 1) / total);
    free(count);
    return nll / val->n;
}

/* Batch b of rank r is the window starting at pos + (r*B + b)*T; the stream
 * wraps to the start when the next window would run past the end. */
static int next_batch(void *ctx, int *tok, int *tgt, int B, int T) {
    ShardSource *s = ctx;
    long span = (long)s->world * B * T;
    if (span + 1 > s->n)
        return fh_error("%s/%s shards hold %ld tokens, fewer than one batch of %d x %d (+1) across %d process(es); use "
                        "more data or a smaller batch", s->dir, s->split, s->n, B, T, s->world);
    if (s->pos + span + 1 > s->n) s->pos = 0;
    for (int b = 0; b < B; b++) {
        const int *w = s->tokens + s->pos + ((long)s->rank * B + b) * T;
        memcpy(tok + (long)b * T, w, sizeof(int) * T);
        memcpy(tgt + (long)b * T, w + 1, sizeof(int) * T);
    }
    s->pos += span;
    return 0;
}

static char *state(void *ctx) {
    ShardSource *s = ctx;
    char *j = malloc(96);
    if (j) snprintf(j, 96, "{\"pos\": %ld, \"tokens\": %ld}", s->pos, s->n);
    return j;
}

static int restore(void *ctx, const char *json) {
    ShardSource *s = ctx;
    cJSON *o = cJSON_Parse(json);
    cJSON *pos = o ? cJSON_GetObjectItemCaseSensitive(o, "pos") : NULL, *n = o ? cJSON_GetObjectItemCaseSensitive(o, "tokens") : NULL;
    int rc = 0;
    if (!cJSON_IsNumber(pos) || !cJSON_IsNumber(n)) rc = fh_error("checkpoint has no data position");
    else if ((long)n->valuedouble != s->n)
        rc = fh_error("the %s shards in %s hold %ld tokens, the checkpoint was trained on %ld: resume on the same data",
                      s->split, s->dir, s->n, (long)n->valuedouble);
    else s->pos = (long)pos->valuedouble;
    cJSON_Delete(o);
    return rc;
}

BatchSource shard_batch_source(ShardSource *s) {
    BatchSource b = {next_batch, state, restore, s};
    return b;
}
