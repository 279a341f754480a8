/* fuzz_checkpoint.c - checkpoint_read_config() and checkpoint_load() on an
 * arbitrary file.
 *
 * The first input byte is a switch, the rest is the file: with bit 0 set the
 * harness rewrites the last 16 bytes as a correct checksum + end marker, so
 * mutations reach the header and size checks behind the checksum. A config
 * that reads is loaded into a model built from it (when small), and every
 * input is also loaded into a fixed tiny model (the config-diff path). */
#include "fuzz_common.h"

#include "../src/core/error.h"
#include "../src/model/layout.h"
#include "../src/train/checkpoint.h"

#define FUZZ_CKPT_MAX_PARAMS 200000

static const char FUZZ_CKPT_TINY[] =
    "{\"architecture\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"intermediate_size\": 8, \"vocab_size\": 32, \"max_position_embeddings\": 8, "
    "\"tie_word_embeddings\": true, \"split_strategy\": \"none\"}";

static void fuzz_ckpt_load_into(const Config *c, const char *path) {
    Model m;
    if (model_create(&m, c, &cpu_ops)) return;
    size_t n = m.layout.total;
    real *mom = malloc(sizeof(real) * n), *vel = malloc(sizeof(real) * n);
    char *state = NULL;
    if (mom && vel) {
        checkpoint_load(path, &m, mom, vel, &state);
        free(state);
        state = NULL;
        checkpoint_load(path, &m, NULL, NULL, NULL);
    }
    free(mom);
    free(vel);
    model_free(&m);
}

static int fuzz_checkpoint_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t len = size - 1;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) abort();
    memcpy(buf, data + 1, len);
    if ((data[0] & 1) && len >= 16) {
        uint64_t h = 14695981039346656037ull;   /* FNV-1a, as checkpoint.c */
        for (size_t i = 0; i < len - 16; i++) { h ^= buf[i]; h *= 1099511628211ull; }
        memcpy(buf + len - 16, &h, 8);
        memcpy(buf + len - 8, "FLOWHEND", 8);
    }
    const char *path = fuzz_tmp_file(buf, len);
    free(buf);

    Config c;
    if (checkpoint_read_config(path, &c) == 0) {
        ParamLayout L;
        if (layout_build(&L, &c) == 0) {
            size_t total = L.total;
            layout_free(&L);
            if (total <= FUZZ_CKPT_MAX_PARAMS) fuzz_ckpt_load_into(&c, path);
        }
    }
    static Config tiny;
    static int have_tiny;
    if (!have_tiny) {
        if (config_parse(&tiny, FUZZ_CKPT_TINY, "fuzz tiny config")) { fprintf(stderr, "%s\n", fh_last_error()); abort(); }
        have_tiny = 1;
    }
    fuzz_ckpt_load_into(&tiny, path);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_checkpoint_one(data, size); }
#endif
