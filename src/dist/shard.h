/* shard.h - ZeRO-1 sharding of the flat parameter/gradient buffer.
 *
 * The buffer of `total` reals is padded to world * per_rank reals, per_rank =
 * ceil(total / world), so the reduce-scatter and all-gather are equal parts
 * of one flat buffer. Rank r owns [r*per_rank, (r+1)*per_rank) cut to
 * [0, total): every real element is owned by exactly one rank, the padding by
 * none (it stays zero). */
#ifndef FLOWHN_SHARD_H
#define FLOWHN_SHARD_H

#include <stddef.h>

static inline size_t shard_per_rank(size_t total, int world) { return (total + world - 1) / world; }
static inline size_t shard_padded(size_t total, int world) { return shard_per_rank(total, world) * world; }
/* rank's owned range [*lo, *hi) (empty, lo == hi, for a rank past the end) */
static inline void shard_range(size_t total, int world, int rank, size_t *lo, size_t *hi) {
    size_t s = shard_per_rank(total, world), a = s * rank, b = a + s;
    *lo = a < total ? a : total;
    *hi = b < total ? b : total;
}

#endif
