/* tokenizer_internal.h - what the tokenizer_*.c files share: the Tokenizer
 * struct, two small open-addressing hash maps, GPT-2's byte <-> unicode
 * mapping and the pre-tokeniser. Not part of the public interface (tests may
 * include it to check the pieces). */
#ifndef FLOWHN_TOKENIZER_INTERNAL_H
#define FLOWHN_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_EOT "<|endoftext|>"

/* ---- hash maps (open addressing, linear probing, power-of-two capacity) ---- */

/* byte-string key -> int64 value; keys are copied into the map */
typedef struct {
    char **keys;      /* NULL = empty slot */
    uint32_t *klen;
    uint64_t *hash;
    int64_t *val;
    size_t cap, n;
} StrMap;

int strmap_init(StrMap *m, size_t expected);
void strmap_free(StrMap *m);
/* pointer to the value of key, or NULL */
int64_t *strmap_get(const StrMap *m, const char *key, size_t len);
/* pointer to the value of key, inserting it with value `init` if absent; NULL on OOM */
int64_t *strmap_put(StrMap *m, const char *key, size_t len, int64_t init);
uint64_t tok_hash(const char *s, size_t len);

/* uint64 key -> uint64 value; key UINT64_MAX is reserved for "empty" */
typedef struct {
    uint64_t *keys, *vals;
    size_t cap, n;
} U64Map;

int u64map_init(U64Map *m, size_t expected);
void u64map_free(U64Map *m);
uint64_t *u64map_get(const U64Map *m, uint64_t key);
uint64_t *u64map_put(U64Map *m, uint64_t key, uint64_t init);

static inline uint64_t pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* ---- the tokenizer ---- */

typedef struct {
    char *content;   /* raw text matched in the input */
    size_t len;
    int id;
    int special;
} AddedToken;

struct Tokenizer {
    int n_ids;            /* 1 + the largest id (vocab and added tokens) */
    char **str;           /* [n_ids] the token as written in tokenizer.json (byte-level form); NULL = unused id */
    char **bytes;         /* [n_ids] the raw bytes the id decodes to */
    uint32_t *nbytes;
    int byte_id[256];     /* id of each single-byte token, -1 where the vocabulary has none */
    U64Map merges;        /* pair_key(a, b) -> rank << 32 | merged id */
    int n_merges;
    int (*merge_list)[2]; /* [n_merges] the pairs in rank order, for saving */
    StrMap raw_vocab;     /* raw bytes -> id, for ignore_merges */
    int ignore_merges;    /* a whole word found in the vocabulary is one token (HF option) */
    AddedToken *added;
    int n_added;
    int eot;
};

/* Builds the derived tables (byte_id, raw_vocab, eot) once str/bytes/added
 * are filled. 0 or -1. */
int tokenizer_finish(Tokenizer *t);

/* ---- byte-level mapping (GPT-2's bytes_to_unicode) ---- */

/* the code point that stands for byte b */
uint32_t bytelevel_char(int b);
/* the byte a code point stands for, or -1 */
int bytelevel_byte(uint32_t cp);
/* GPT-2's order of the 256 byte tokens (code point order of bytelevel_char) */
int bytelevel_order(int i);
/* raw bytes -> byte-level UTF-8 string (malloc'd, NUL-terminated) */
char *bytelevel_encode(const char *raw, size_t len);
/* byte-level UTF-8 string -> raw bytes (malloc'd); -1 if a character is not
 * in the byte-level alphabet */
int bytelevel_decode(const char *s, size_t len, char **raw, size_t *raw_len);

/* ---- pre-tokenisation ---- */

/* End of the GPT-2 pre-token that starts at s[i] (i < len): the regex
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * matched by hand on UTF-8. Bytes that are not valid UTF-8 count as single
 * characters of the [^\s\p{L}\p{N}] class. */
size_t pretok_end(const unsigned char *s, size_t len, size_t i);
/* Next match of any added token at or after `from`: leftmost, then longest.
 * Returns its index in t->added and sets *at, or -1 if none. `next` caches one
 * position per added token between calls (init all to SIZE_MAX - 1). */
int added_find(const Tokenizer *t, const char *text, size_t len, size_t from, size_t *next, size_t *at);

#endif
