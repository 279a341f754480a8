/* shards.h - llm.c token shards: the on-disk format of training data.
 *
 * A shard is a header of 256 little-endian int32 followed by the tokens:
 *   header[0] = 20240520 (magic), header[1] = version, header[2] = token count,
 *   version 1: uint16 tokens (what llm.c writes), version 2: uint32 tokens.
 * We write version 1 whenever the vocabulary fits in 16 bits (vocab_size <=
 * 65,536) and version 2 only beyond that, so llm.c's own files and ours are
 * interchangeable for every vocabulary llm.c can express. */
#ifndef FLOWHN_SHARDS_H
#define FLOWHN_SHARDS_H

#include <stdint.h>
#include <stdio.h>

#define SHARD_MAGIC 20240520
#define SHARD_HEADER_INTS 256
#define SHARD_HEADER_BYTES (SHARD_HEADER_INTS * 4)

/* An open shard; tokens are read on demand, the file stays open. */
typedef struct {
    FILE *f;
    char path[1024];
    int version;       /* 1 (uint16) or 2 (uint32) */
    int width;         /* bytes per token: 2 or 4 */
    long n_tokens;
} Shard;

/* 1 for vocabularies up to 65,536 entries, else 2. */
int shard_version_for_vocab(int vocab_size);

/* Writes tokens[0..n) as a shard at path, atomically: a temp file in the same
 * directory is written, fsync'd and renamed over path, so readers never see a
 * half-written shard. Every id must lie in [0, vocab_size). 0 or -1. */
int shard_write(const char *path, const int *tokens, long n, int vocab_size);

/* Opens and validates a shard: magic, version, and that the file holds exactly
 * the header's token count (truncated or oversized files are errors). With
 * vocab_size > 0 it also reads every token once and checks id < vocab_size
 * (the error names the offset of the first bad token); vocab_size <= 0 checks
 * the header and size only (fast). 0 or -1 (nothing to close on error). */
int shard_open(Shard *s, const char *path, int vocab_size);
/* Reads tokens [offset, offset + count) into out. 0 or -1. */
int shard_read(Shard *s, long offset, long count, int *out);
void shard_close(Shard *s);

#endif
