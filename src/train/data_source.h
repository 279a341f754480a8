/* data_source.h - the trainer's view of token shards: all shards of one
 * split (DIR/train_*.bin or DIR/val_*.bin, llm.c format) as one token
 * stream, cut into batches of B sequences of T+1 tokens (inputs and shifted
 * targets), with a position that checkpoints save and restore exactly. */
#ifndef FLOWHN_DATA_SOURCE_H
#define FLOWHN_DATA_SOURCE_H

#include "trainer.h"

typedef struct {
    int *tokens;       /* the split's tokens, concatenated in file order */
    long n;
    long pos;          /* next batch starts here */
    int rank, world;   /* this process reads every world-th batch, offset by rank */
    char dir[512], split[16];
} ShardSource;

/* Opens every DIR/<split>_*.bin, validating headers and token ids < vocab. */
int shard_source_open(ShardSource *s, const char *dir, const char *split, int vocab, int rank, int world);
void shard_source_close(ShardSource *s);
long shard_source_tokens(const ShardSource *s);
/* Cross-entropy (nats/token) on val of a unigram model fitted on train
 * (add-one smoothing): the loss a model that ignores context would reach. */
double shard_unigram_baseline(const ShardSource *train, const ShardSource *val);
BatchSource shard_batch_source(ShardSource *s);

#endif
