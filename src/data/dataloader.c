/* dataloader.c - batches from token shards (see dataloader.h). */
#include "dataloader.h"

#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/rng.h"

static long span_of(const DataLoaderConfig *c) { return (long)c->world * c->B * c->T; }

/* The random stream of one ordering: the shard order of an epoch (file -1) or
 * the batch order of one file in an epoch. Only seed, epoch and file go in,
 * so all ranks and every resume draw the same permutation. */
static void shuffle_rng(Rng *r, uint64_t seed, int64_t epoch, int file) {
    rng_seed(r, seed, ((uint64_t)epoch << 24) ^ (uint64_t)(file + 1));
}

/* Fisher-Yates: a[i] swaps with a uniform a[j], j <= i */
#define SHUFFLE(a, n, r)                                              \
    for (long i_ = (long)(n) - 1; i_ > 0; i_--) {                     \
        long j_ = (long)(rng_uniform(r) * (double)(i_ + 1));          \
        __typeof__((a)[0]) t_ = (a)[i_]; (a)[i_] = (a)[j_]; (a)[j_] = t_; \
    }

/* Makes the shard order of pos.epoch and the batch order of the shard at
 * pos.shard, if they are not the ones already held. */
static int ensure_orders(DataLoader *d) {
    if (d->order_epoch != d->pos.epoch) {
        for (int i = 0; i < d->n_shards; i++) d->shard_order[i] = i;
        if (d->cfg.shuffle) {
            Rng r;
            shuffle_rng(&r, d->cfg.seed, d->pos.epoch, -1);
            SHUFFLE(d->shard_order, d->n_shards, &r);
        }
        d->order_epoch = d->pos.epoch;
    }
    int file = d->shard_order[d->pos.shard];
    if (d->cfg.shuffle && (d->batch_epoch != d->pos.epoch || d->batch_file != file)) {
        long n = d->n_batches[file];
        long *p = realloc(d->batch_order, sizeof(long) * (size_t)n);
        if (!p) return fh_error("out of memory for the batch order of %s (%ld batches)", d->paths[file], n);
        d->batch_order = p;
        for (long i = 0; i < n; i++) p[i] = i;
        Rng r;
        shuffle_rng(&r, d->cfg.seed, d->pos.epoch, file);
        SHUFFLE(p, n, &r);
        d->batch_epoch = d->pos.epoch;
        d->batch_file = file;
    }
    return 0;
}

int dataloader_open(DataLoader *d, const char *pattern, const DataLoaderConfig *cfg) {
    memset(d, 0, sizeof *d);
    const DataLoaderConfig *c = cfg;
    if (c->B < 1 || c->T < 1 || c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return fh_error("dataloader: batch %d x %d with rank %d of world %d; need B, T >= 1 and 0 <= rank < world",
                        c->B, c->T, c->rank, c->world);
    d->cfg = *c;
    d->cur_file = -1;
    d->order_epoch = -1;
    d->batch_epoch = -1;
    glob_t g;
    memset(&g, 0, sizeof g);
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        globfree(&g);
        return fh_error("no shard files match %s (make them with `flowhn prepare --out DIR`, then use DIR/train_*.bin "
                        "or DIR/val_*.bin)", pattern);
    }
    int rc = 0;
    long span = span_of(c);
    d->n_shards = (int)g.gl_pathc;
    d->paths = calloc((size_t)d->n_shards, sizeof(char *));
    d->n_batches = calloc((size_t)d->n_shards, sizeof(long));
    d->shard_order = calloc((size_t)d->n_shards, sizeof(int));
    d->buf = malloc(sizeof(int) * (size_t)(c->B * (long)c->T + 1));
    if (!d->paths || !d->n_batches || !d->shard_order || !d->buf) rc = fh_error("out of memory opening %s", pattern);
    for (int i = 0; i < d->n_shards && !rc; i++) {
        d->paths[i] = strdup(g.gl_pathv[i]);
        Shard s;
        if (!d->paths[i]) rc = fh_error("out of memory opening %s", pattern);
        else if (shard_open(&s, d->paths[i], 0)) rc = -1;  /* header and size now; ids when the walk enters it */
        else {
            shard_close(&s);
            if (s.n_tokens < span + 1)
                rc = fh_error("%s holds %ld tokens, fewer than one batch for every process (world %d x B %d x T %d + 1 "
                              "= %ld); use a smaller batch, or fewer, larger shards (flowhn prepare --shard-tokens)",
                              d->paths[i], s.n_tokens, c->world, c->B, c->T, span + 1);
            d->n_batches[i] = (s.n_tokens - 1) / span;
        }
    }
    globfree(&g);
    if (!rc) rc = ensure_orders(d);
    if (rc) dataloader_close(d);
    return rc;
}

int dataloader_next(DataLoader *d, int *inputs, int *targets) {
    if (ensure_orders(d)) return -1;
    int file = d->shard_order[d->pos.shard];
    if (d->cur_file != file) {
        shard_close(&d->cur);
        d->cur_file = -1;
        if (shard_open(&d->cur, d->paths[file], d->cfg.vocab_size)) return -1;
        d->cur_file = file;
    }
    long BT = (long)d->cfg.B * d->cfg.T;
    long k = d->cfg.shuffle ? d->batch_order[d->pos.batch] : d->pos.batch;
    if (shard_read(&d->cur, k * span_of(&d->cfg) + d->cfg.rank * BT, BT + 1, d->buf)) return -1;
    memcpy(inputs, d->buf, sizeof(int) * (size_t)BT);
    memcpy(targets, d->buf + 1, sizeof(int) * (size_t)BT);
    /* advance, keeping the position on a batch that exists */
    if (++d->pos.batch == d->n_batches[file]) {
        d->pos.batch = 0;
        if (++d->pos.shard == d->n_shards) {
            d->pos.shard = 0;
            d->pos.epoch++;
        }
    }
    return 0;
}

DataPosition dataloader_tell(const DataLoader *d) { return d->pos; }

int dataloader_seek(DataLoader *d, DataPosition pos) {
    if (pos.epoch < 0 || pos.shard < 0 || pos.shard >= d->n_shards || pos.batch < 0)
        return fh_error("data position (epoch %lld, shard %lld, batch %lld) does not exist: there are %d shard(s) "
                        "(the first %s); resume on the same data", (long long)pos.epoch, (long long)pos.shard,
                        (long long)pos.batch, d->n_shards, d->paths[0]);
    DataPosition old = d->pos;
    d->pos = pos;
    if (ensure_orders(d)) { d->pos = old; return -1; }
    int file = d->shard_order[pos.shard];
    if (pos.batch >= d->n_batches[file]) {
        d->pos = old;
        return fh_error("data position: batch %lld of %s, which has %ld batches of %d x %d for %d process(es); resume "
                        "with the same data, batch size, sequence length and process count", (long long)pos.batch,
                        d->paths[file], d->n_batches[file], d->cfg.B, d->cfg.T, d->cfg.world);
    }
    return 0;
}

long dataloader_batches_per_epoch(const DataLoader *d) {
    long n = 0;
    for (int i = 0; i < d->n_shards; i++) n += d->n_batches[i];
    return n;
}

void dataloader_close(DataLoader *d) {
    shard_close(&d->cur);
    for (int i = 0; d->paths && i < d->n_shards; i++) free(d->paths[i]);
    free(d->paths);
    free(d->n_batches);
    free(d->shard_order);
    free(d->batch_order);
    free(d->buf);
    memset(d, 0, sizeof *d);
    d->cur_file = -1;
}
