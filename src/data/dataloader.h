/* dataloader.h - batches from llm.c token shards, walked as llm.c walks them.
 *
 * The shards matching a glob pattern (sorted by name) are visited one after
 * the other, wrapping around to the first after the last (one pass = one
 * epoch). Within a shard of n tokens, with span = world*B*T, batch k of rank r
 * is the B*T+1 tokens starting at k*span + r*B*T, for k < (n-1)/span: the
 * ranks read disjoint slices of each span, and the tail of a shard too short
 * for a whole span is skipped. A batch gives inputs = those tokens [0, B*T)
 * and targets = [1, B*T+1), i.e. row b is the window of T+1 tokens at b*T.
 *
 * With shuffle on, each epoch visits the shards in a new order and each
 * shard's batches (whole spans, so ranks stay disjoint) in a new order; both
 * orders are a function of (seed, epoch, shard) only, so every rank agrees
 * and a restored position replays the same sequence. */
#ifndef FLOWHN_DATALOADER_H
#define FLOWHN_DATALOADER_H

#include <stdint.h>

#include "shards.h"

typedef struct {
    int B, T;            /* batch size and sequence length */
    int rank, world;     /* this process and the number of processes (0, 1 alone) */
    int vocab_size;      /* each shard's ids are checked against it when the walk enters it; <= 0: no check */
    int shuffle;         /* 0: name order, file order; 1: reshuffled per epoch from seed */
    uint64_t seed;
} DataLoaderConfig;

/* Where the next batch comes from; save it in a checkpoint and pass it to
 * dataloader_seek to resume the identical batch sequence (with the same
 * files and config). Always points at a batch that exists. */
typedef struct {
    int64_t epoch;       /* completed passes over all shards */
    int64_t shard;       /* index into this epoch's shard order (the file index when not shuffling) */
    int64_t batch;       /* index into this shard's batch order (token offset batch*world*B*T + rank*B*T when not shuffling) */
} DataPosition;

typedef struct {
    DataLoaderConfig cfg;
    int n_shards;
    char **paths;        /* sorted glob matches */
    long *n_batches;     /* per file: batches in one visit */
    int *shard_order;    /* this epoch's order of file indices */
    long *batch_order;   /* shuffling: the batch order of file batch_file in epoch batch_epoch */
    int64_t order_epoch; /* the epoch shard_order was made for (-1: none yet) */
    int64_t batch_epoch;
    int batch_file;
    DataPosition pos;
    Shard cur;           /* the open shard, file index cur_file (-1: none) */
    int cur_file;
    int *buf;            /* B*T+1 tokens */
} DataLoader;

/* Finds the shards matching pattern (e.g. "data/train_*.bin") and checks each
 * one's header and size, and that it holds at least one batch for every
 * rank (world*B*T+1 tokens). 0 or -1 (nothing to close on error). */
int dataloader_open(DataLoader *d, const char *pattern, const DataLoaderConfig *cfg);
/* Fills inputs and targets (B*T ints each) with the next batch. 0 or -1. */
int dataloader_next(DataLoader *d, int *inputs, int *targets);
DataPosition dataloader_tell(const DataLoader *d);
/* Moves to a position saved by dataloader_tell; -1 if it does not exist in
 * these shards (different data or batch shape). */
int dataloader_seek(DataLoader *d, DataPosition pos);
/* Batches this rank sees in one epoch. */
long dataloader_batches_per_epoch(const DataLoader *d);
void dataloader_close(DataLoader *d);

#endif
