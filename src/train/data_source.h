/* data_source.h - the trainer's view of token shards: the shards of one
 * split (DIR/train_*.bin or DIR/val_*.bin, llm.c format) walked by the
 * dataloader (src/data/dataloader.h) as batches of B sequences of T+1 tokens,
 * with a position that checkpoints save and restore exactly. */
#ifndef FLOWHN_DATA_SOURCE_H
#define FLOWHN_DATA_SOURCE_H

#include "../data/dataloader.h"
#include "trainer.h"

typedef struct {
    char pattern[600], dir[512], split[16];
    int vocab, rank, world, shuffle;
    uint64_t seed;
    long n_tokens;       /* over all the split's shards */
    int open;            /* the loader is opened on the first batch, when B and T are known */
    int has_pending;     /* a restored position waiting for the loader to open */
    DataPosition pending;
    DataLoader dl;
} ShardSource;

/* Finds DIR/<split>_*.bin and validates every shard's header, size and ids. */
int shard_source_open(ShardSource *s, const char *dir, const char *split, int vocab, int rank, int world);
void shard_source_close(ShardSource *s);
long shard_source_tokens(const ShardSource *s);
/* Cross-entropy (nats/token) on val of a unigram model fitted on train
 * (add-one smoothing): the loss a model that ignores context would reach. */
double shard_unigram_baseline(const ShardSource *train, const ShardSource *val);
BatchSource shard_batch_source(ShardSource *s);

#endif
