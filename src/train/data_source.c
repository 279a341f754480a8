/* data_source.c - token shards as a batch stream (see data_source.h). */
#include "data_source.h"

#include <cJSON.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

/* Calls fn(ctx, tokens, n) over every shard of the source, in chunks. */
static int for_each_chunk(const ShardSource *s, void (*fn)(void *, const int *, long), void *ctx) {
    glob_t g;
    if (glob(s->pattern, 0, NULL, &g) || g.gl_pathc == 0) {
        globfree(&g);
        return fh_error("no %s shards match %s (run `flowhn prepare` to make them)", s->split, s->pattern);
    }
    enum { CHUNK = 1 << 20 };
    int *buf = malloc(sizeof(int) * CHUNK), rc = buf ? 0 : fh_error("out of memory");
    for (size_t f = 0; f < g.gl_pathc && !rc; f++) {
        Shard sh;
        if (shard_open(&sh, g.gl_pathv[f], fn ? 0 : s->vocab)) { rc = -1; break; }
        for (long off = 0; fn && off < sh.n_tokens && !rc; off += CHUNK) {
            long n = sh.n_tokens - off < CHUNK ? sh.n_tokens - off : CHUNK;
            if (shard_read(&sh, off, n, buf)) rc = -1;
            else fn(ctx, buf, n);
        }
        if (!fn) ((ShardSource *)s)->n_tokens += sh.n_tokens;
        shard_close(&sh);
    }
    free(buf);
    globfree(&g);
    return rc;
}

int shard_source_open(ShardSource *s, const char *dir, const char *split, int vocab, int rank, int world) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->split, sizeof s->split, "%s", split);
    snprintf(s->pattern, sizeof s->pattern, "%s/%s_*.bin", dir, split);
    s->vocab = vocab;
    s->rank = rank;
    s->world = world;
    /* every shard's header, size and token ids, up front: bad data fails before training starts */
    if (for_each_chunk(s, NULL, NULL)) return -1;
    if (s->n_tokens < 2) return fh_error("%s: the %s shards hold fewer than 2 tokens", dir, split);
    return 0;
}

void shard_source_close(ShardSource *s) {
    if (s->open) dataloader_close(&s->dl);
    s->open = 0;
}

long shard_source_tokens(const ShardSource *s) { return s->n_tokens; }

typedef struct { double *count; int V; long n; double nll; int eval; } Unigram;
static void unigram_chunk(void *p, const int *t, long n) {
    Unigram *u = p;
    for (long i = 0; i < n; i++) {
        if (t[i] >= u->V) continue;
        if (u->eval) u->nll -= log(u->count[t[i]]);
        else u->count[t[i]] += 1;
    }
    u->n += n;
}

double shard_unigram_baseline(const ShardSource *train, const ShardSource *val) {
    Unigram u = {calloc(train->vocab, sizeof(double)), train->vocab, 0, 0, 0};
    if (!u.count || for_each_chunk(train, unigram_chunk, &u)) { free(u.count); return NAN; }
    /* add-one smoothing over the model's vocabulary */
    double total = (double)u.n + u.V;
    for (int v = 0; v < u.V; v++) u.count[v] = (u.count[v] + 1) / total;
    Unigram e = {u.count, u.V, 0, 0, 1};
    if (for_each_chunk(val, unigram_chunk, &e)) { free(u.count); return NAN; }
    free(u.count);
    return e.n ? e.nll / e.n : NAN;
}

static int next_batch(void *ctx, int *tok, int *tgt, int B, int T) {
    ShardSource *s = ctx;
    if (s->open && (s->dl.cfg.B != B || s->dl.cfg.T != T)) { dataloader_close(&s->dl); s->open = 0; }
    if (!s->open) {
        DataLoaderConfig c = {B, T, s->rank, s->world, 0 /* ids were checked at open */, s->shuffle, s->seed};
        if (dataloader_open(&s->dl, s->pattern, &c)) return -1;
        s->open = 1;
        if (s->has_pending) {
            s->has_pending = 0;
            if (dataloader_seek(&s->dl, s->pending)) return -1;
        }
    }
    return dataloader_next(&s->dl, tok, tgt);
}

static char *state(void *ctx) {
    ShardSource *s = ctx;
    DataPosition p = s->open ? dataloader_tell(&s->dl) : (DataPosition){0, 0, 0};
    char *j = malloc(160);
    if (j) snprintf(j, 160, "{\"epoch\": %lld, \"shard\": %lld, \"batch\": %lld, \"tokens\": %ld}", (long long)p.epoch,
                    (long long)p.shard, (long long)p.batch, s->n_tokens);
    return j;
}

static int restore(void *ctx, const char *json) {
    ShardSource *s = ctx;
    cJSON *o = cJSON_Parse(json);
    const char *keys[4] = {"epoch", "shard", "batch", "tokens"};
    double v[4];
    int rc = o ? 0 : fh_error("checkpoint has no data position");
    for (int k = 0; k < 4 && !rc; k++) {
        cJSON *it = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (!cJSON_IsNumber(it)) rc = fh_error("checkpoint data position lacks \"%s\"", keys[k]);
        else v[k] = it->valuedouble;
    }
    cJSON_Delete(o);
    if (rc) return rc;
    if ((long)v[3] != s->n_tokens)
        return fh_error("the %s shards in %s hold %ld tokens, the checkpoint was trained on %ld: resume on the same data",
                        s->split, s->dir, s->n_tokens, (long)v[3]);
    DataPosition p = {(int64_t)v[0], (int64_t)v[1], (int64_t)v[2]};
    if (!s->open) {   /* the position is applied when the loader opens */
        s->pending = p;
        s->has_pending = 1;
        return 0;
    }
    return dataloader_seek(&s->dl, p);
}

BatchSource shard_batch_source(ShardSource *s) {
    BatchSource b = {next_batch, state, restore, s};
    return b;
}
