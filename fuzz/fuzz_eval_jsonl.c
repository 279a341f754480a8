/* fuzz_eval_jsonl.c - eval_choices() and eval_lambada() on arbitrary JSON
 * lines, scored by a tiny random llama with a tokenizer trained in memory.
 * The first input byte picks the task (bit 0: LAMBADA), the rest is the
 * file; at most 4 items are scored so an input stays cheap. */
#include "fuzz_common.h"

#include "../src/core/error.h"
#include "../src/infer/eval.h"

static const char FUZZ_EVAL_CONFIG[] =
    "{\"architecture\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"intermediate_size\": 8, \"vocab_size\": 300, \"max_position_embeddings\": 8, "
    "\"tie_word_embeddings\": true, \"split_strategy\": \"none\"}";

static Model fuzz_eval_model;
static Tokenizer *fuzz_eval_tok;

static void fuzz_eval_free(void) {
    tokenizer_free(fuzz_eval_tok);
    model_free(&fuzz_eval_model);
}

static void fuzz_eval_setup(void) {
    static const char *texts[] = {"the cat sat on the mat", "a dog ran to the park and the cat ran too",
                                  "Query: which is it? Answer: the first one"};
    size_t lens[3];
    for (int i = 0; i < 3; i++) lens[i] = strlen(texts[i]);
    Config c;
    fuzz_eval_tok = tokenizer_train(texts, lens, 3, 280);
    if (!fuzz_eval_tok || config_parse(&c, FUZZ_EVAL_CONFIG, "fuzz eval config") ||
        model_create(&fuzz_eval_model, &c, &cpu_ops) || model_init_params(&fuzz_eval_model, 1)) {
        fprintf(stderr, "fuzz_eval_jsonl: setup failed: %s\n", fh_last_error());
        abort();
    }
    atexit(fuzz_eval_free);
}

static int fuzz_eval_jsonl_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!fuzz_eval_tok) fuzz_eval_setup();
    const char *path = fuzz_tmp_file(data + 1, size - 1);
    if (data[0] & 1) {
        LambadaResult r;
        eval_lambada(&fuzz_eval_model, fuzz_eval_tok, path, 4, 0, &r);
    } else {
        ChoiceResult r;
        eval_choices(&fuzz_eval_model, fuzz_eval_tok, path, 4, 0, &r);
    }
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_eval_jsonl_one(data, size); }
#endif
