/* fuzz_tokenizer_json.c - tokenizer_load() on an arbitrary file; a tokenizer
 * that loads encodes and decodes a fixed text (with the special token). */
#include "fuzz_common.h"

#include "../src/data/tokenizer.h"

static int fuzz_tokenizer_json_one(const uint8_t *data, size_t size) {
    Tokenizer *t = tokenizer_load(fuzz_tmp_file(data, size));
    if (!t) return 0;
    static const char text[] = "Hello, world! It's 2024:\n\tcaf\xc3\xa9 <|endoftext|> \xff\xfe end";
    int *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(t, text, sizeof text - 1, &ids, &n) == 0) {
        int V = tokenizer_vocab_size(t);
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) { fprintf(stderr, "fuzz_tokenizer_json: id %d outside [0, %d)\n", ids[i], V); abort(); }
        size_t len;
        free(tokenizer_decode(t, ids, n, &len));
    }
    free(ids);
    tokenizer_eot(t);
    tokenizer_free(t);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenizer_json_one(data, size); }
#endif
