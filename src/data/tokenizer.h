/* tokenizer.h - byte-level BPE (GPT-2 style), stored as a Hugging Face
 * tokenizer.json. Encodings must equal the Python `tokenizers` package's for
 * the same file (tests/py/test_tokenizer_hf.py). */
#ifndef FLOWHN_TOKENIZER_H
#define FLOWHN_TOKENIZER_H

#include <stddef.h>

typedef struct Tokenizer Tokenizer;

/* Loads a tokenizer.json (ours or one written by HF tokenizers with a
 * ByteLevel BPE model). NULL + fh_error naming the file and field on failure. */
Tokenizer *tokenizer_load(const char *path);
/* Writes tokenizer.json atomically (temp file + rename). 0 or -1. */
int tokenizer_save(const Tokenizer *t, const char *path);
/* Trains byte-level BPE on the given texts up to vocab_size entries (256 byte
 * tokens + merges + the special token <|endoftext|>). NULL on error. */
Tokenizer *tokenizer_train(const char *const *texts, const size_t *lens, int n_texts, int vocab_size);
/* Encodes UTF-8 bytes; *ids is malloc'd. 0 or -1. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int **ids, size_t *n_ids);
/* Decodes ids to a malloc'd NUL-terminated string (*len bytes). NULL on a bad id. */
char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len);
int tokenizer_vocab_size(const Tokenizer *t);
/* Id of <|endoftext|>, or -1 if the vocabulary has none. */
int tokenizer_eot(const Tokenizer *t);
void tokenizer_free(Tokenizer *t);

#endif
