/* fuzz_shard.c - shard_open() on an arbitrary file, with and without the
 * vocabulary check; an opened shard reads its first and last tokens. */
#include "fuzz_common.h"

#include "../src/data/shards.h"

static int fuzz_shard_one(const uint8_t *data, size_t size) {
    const char *path = fuzz_tmp_file(data, size);
    for (int k = 0; k < 2; k++) {
        Shard s;
        if (shard_open(&s, path, k ? 300 : 0)) continue;
        int tok[8];
        long n = s.n_tokens < 8 ? s.n_tokens : 8;
        if (shard_read(&s, 0, n, tok) || shard_read(&s, s.n_tokens - n, n, tok)) {
            fprintf(stderr, "fuzz_shard: an opened shard failed to read its own tokens\n");
            abort();
        }
        for (long i = 0; k && i < n; i++)
            if (tok[i] < 0 || tok[i] >= 300) { fprintf(stderr, "fuzz_shard: id %d passed the vocabulary check\n", tok[i]); abort(); }
        shard_close(&s);
    }
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_shard_one(data, size); }
#endif
