/* tokenizer.c - byte-level BPE encoding and decoding, plus the hash maps the
 * tokenizer files share. Loading/saving is in tokenizer_json.c, training in
 * tokenizer_train.c, pre-tokenisation in tokenizer_pretok.c.
 *
 * Encoding follows Hugging Face `tokenizers` exactly: split out added tokens
 * (leftmost, then longest match), pre-tokenise the rest with GPT-2's regex,
 * map each pre-token's bytes to their byte-token ids, then apply merges lowest
 * rank first (leftmost among equal ranks). Pre-tokens repeat a lot in text,
 * so each call keeps a cache from word bytes to ids. */
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "tokenizer_internal.h"

/* ---- hashing and maps ---- */

uint64_t tok_hash(const char *s, size_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xFF51AFD7ED558CCDull);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, len - i);
    h = (h ^ w) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 32;
    h *= 0x165667B19E3779F9ull;
    return h ^ (h >> 29);
}

static size_t cap_for(size_t expected) {
    size_t c = 16;
    while (c < expected * 2) c *= 2;
    return c;
}

int strmap_init(StrMap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = cap_for(expected);
    m->keys = fh_calloc(m->cap, sizeof *m->keys, "tokenizer hash map");
    m->klen = fh_malloc(m->cap * sizeof *m->klen, "tokenizer hash map");
    m->hash = fh_malloc(m->cap * sizeof *m->hash, "tokenizer hash map");
    m->val = fh_malloc(m->cap * sizeof *m->val, "tokenizer hash map");
    if (!m->keys || !m->klen || !m->hash || !m->val) { strmap_free(m); return -1; }
    return 0;
}

void strmap_free(StrMap *m) {
    if (m->keys)
        for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys); free(m->klen); free(m->hash); free(m->val);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const StrMap *m, const char *key, size_t len, uint64_t h) {
    size_t i = h & (m->cap - 1);
    while (m->keys[i] && !(m->hash[i] == h && m->klen[i] == len && !memcmp(m->keys[i], key, len)))
        i = (i + 1) & (m->cap - 1);
    return i;
}

int64_t *strmap_get(const StrMap *m, const char *key, size_t len) {
    if (!m->cap) return NULL;
    size_t i = strmap_slot(m, key, len, tok_hash(key, len));
    return m->keys[i] ? &m->val[i] : NULL;
}

static int strmap_grow(StrMap *m) {
    StrMap g;
    if (strmap_init(&g, m->cap)) return -1; /* doubles the capacity */
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = m->hash[i] & (g.cap - 1);
        while (g.keys[j]) j = (j + 1) & (g.cap - 1);
        g.keys[j] = m->keys[i]; g.klen[j] = m->klen[i]; g.hash[j] = m->hash[i]; g.val[j] = m->val[i];
        m->keys[i] = NULL;
    }
    g.n = m->n;
    strmap_free(m);
    *m = g;
    return 0;
}

int64_t *strmap_put(StrMap *m, const char *key, size_t len, int64_t init) {
    uint64_t h = tok_hash(key, len);
    size_t i = strmap_slot(m, key, len, h);
    if (m->keys[i]) return &m->val[i];
    if ((m->n + 1) * 2 > m->cap) {
        if (strmap_grow(m)) return NULL;
        i = strmap_slot(m, key, len, h);
    }
    char *k = fh_malloc(len + 1, "tokenizer hash map key");
    if (!k) return NULL;
    memcpy(k, key, len);
    k[len] = 0;
    m->keys[i] = k; m->klen[i] = (uint32_t)len; m->hash[i] = h; m->val[i] = init;
    m->n++;
    return &m->val[i];
}

static inline uint64_t mix64(uint64_t k) {
    k ^= k >> 33; k *= 0xFF51AFD7ED558CCDull; k ^= k >> 33;
    return k;
}

int u64map_init(U64Map *m, size_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->keys = fh_malloc(m->cap * sizeof *m->keys, "tokenizer pair map");
    m->vals = fh_malloc(m->cap * sizeof *m->vals, "tokenizer pair map");
    if (!m->keys || !m->vals) { u64map_free(m); return -1; }
    memset(m->keys, 0xFF, m->cap * sizeof *m->keys);
    return 0;
}

void u64map_free(U64Map *m) {
    free(m->keys); free(m->vals);
    memset(m, 0, sizeof *m);
}

uint64_t *u64map_get(const U64Map *m, uint64_t key) {
    if (!m->cap) return NULL;
    for (size_t i = mix64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == UINT64_MAX) return NULL;
    }
}

uint64_t *u64map_put(U64Map *m, uint64_t key, uint64_t init) {
    uint64_t *v = u64map_get(m, key);
    if (v) return v;
    if ((m->n + 1) * 2 > m->cap) {
        U64Map g;
        if (u64map_init(&g, m->cap)) return NULL;
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i] != UINT64_MAX) *u64map_put(&g, m->keys[i], m->vals[i]) = m->vals[i];
        u64map_free(m);
        *m = g;
    }
    size_t i = mix64(key) & (m->cap - 1);
    while (m->keys[i] != UINT64_MAX) i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = init;
    m->n++;
    return &m->vals[i];
}

/* ---- tokenizer ---- */

int tokenizer_finish(Tokenizer *t) {
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    if (strmap_init(&t->raw_vocab, (size_t)t->n_ids)) return -1;
    for (int id = 0; id < t->n_ids; id++) {
        if (!t->str[id]) continue; /* added-only ids are not part of the BPE model */
        if (t->nbytes[id] == 1 && t->byte_id[(unsigned char)t->bytes[id][0]] < 0)
            t->byte_id[(unsigned char)t->bytes[id][0]] = id;
        int64_t *v = strmap_put(&t->raw_vocab, t->bytes[id], t->nbytes[id], id);
        if (!v) return -1;
    }
    t->eot = -1;
    for (int k = 0; k < t->n_added; k++)
        if (!strcmp(t->added[k].content, TOK_EOT)) t->eot = t->added[k].id;
    return 0;
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_ids; }
int tokenizer_eot(const Tokenizer *t) { return t->eot; }

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_ids; i++) {
        if (t->str) free(t->str[i]);
        if (t->bytes) free(t->bytes[i]);
    }
    free(t->str); free(t->bytes); free(t->nbytes);
    u64map_free(&t->merges);
    free(t->merge_list);
    strmap_free(&t->raw_vocab);
    for (int k = 0; k < t->n_added; k++) free(t->added[k].content);
    free(t->added);
    free(t);
}

/* ---- encoding ---- */

typedef struct { int *v; size_t n, cap; } IntVec;

static int ivec_push(IntVec *a, int x) {
    if (a->n == a->cap) {
        size_t c = a->cap ? a->cap * 2 : 1024;
        int *v = realloc(a->v, c * sizeof *v);
        if (!v) return fh_error("tokenizer: out of memory for %zu token ids", c);
        a->v = v;
        a->cap = c;
    }
    a->v[a->n++] = x;
    return 0;
}

/* A heap entry of the merge loop: the pair starting at symbol `pos` merges
 * into `new_id` with priority `rank` (lower first, then leftmost). */
typedef struct { uint32_t rank, pos; int new_id; } MergeEnt;

static inline int ent_before(MergeEnt a, MergeEnt b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(MergeEnt *h, size_t *n, MergeEnt e) {
    size_t i = (*n)++;
    while (i > 0 && ent_before(e, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = e;
}

static MergeEnt heap_pop(MergeEnt *h, size_t *n) {
    MergeEnt top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && ent_before(h[c + 1], h[c])) c++;
        if (!ent_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* scratch arrays for one word, grown as needed */
typedef struct {
    int *sym, *prev, *next;
    MergeEnt *heap;
    size_t cap;
} Scratch;

static int scratch_fit(Scratch *s, size_t n) {
    if (n <= s->cap) return 0;
    size_t c = s->cap ? s->cap : 64;
    while (c < n) c *= 2;
    free(s->sym); free(s->prev); free(s->next); free(s->heap);
    s->sym = malloc(c * sizeof(int)); s->prev = malloc(c * sizeof(int)); s->next = malloc(c * sizeof(int));
    /* each merge pushes at most two entries: 3n bounds the heap */
    s->heap = malloc(3 * c * sizeof(MergeEnt));
    s->cap = c;
    if (!s->sym || !s->prev || !s->next || !s->heap) { s->cap = 0; return fh_error("tokenizer: out of memory for a %zu-byte word", n); }
    return 0;
}

static inline void push_pair(const Tokenizer *t, Scratch *s, size_t *hn, int pos) {
    const uint64_t *m = u64map_get(&t->merges, pair_key(s->sym[pos], s->sym[s->next[pos]]));
    if (m) heap_push(s->heap, hn, (MergeEnt){(uint32_t)(*m >> 32), (uint32_t)pos, (int)(uint32_t)*m});
}

/* BPE of one pre-token (raw bytes), appending its ids to out */
static int bpe_word(const Tokenizer *t, const unsigned char *w, size_t n, Scratch *s, IntVec *out) {
    if (t->ignore_merges) {
        const int64_t *v = strmap_get(&t->raw_vocab, (const char *)w, n);
        if (v) return ivec_push(out, (int)*v);
    }
    if (scratch_fit(s, n)) return -1;
    int m = 0;
    for (size_t i = 0; i < n; i++) /* bytes without a token are dropped, as HF does without unk_token */
        if (t->byte_id[w[i]] >= 0) s->sym[m++] = t->byte_id[w[i]];
    for (int i = 0; i < m; i++) { s->prev[i] = i - 1; s->next[i] = i + 1 < m ? i + 1 : -1; }
    size_t hn = 0;
    for (int i = 0; i + 1 < m; i++) push_pair(t, s, &hn, i);
    while (hn) {
        MergeEnt e = heap_pop(s->heap, &hn);
        int i = (int)e.pos, j;
        if (s->sym[i] < 0 || (j = s->next[i]) < 0) continue;
        /* stale entry: the pair at i changed since it was pushed */
        const uint64_t *mm = u64map_get(&t->merges, pair_key(s->sym[i], s->sym[j]));
        if (!mm || (int)(uint32_t)*mm != e.new_id) continue;
        s->sym[i] = e.new_id;
        s->sym[j] = -1;
        s->next[i] = s->next[j];
        if (s->next[j] >= 0) s->prev[s->next[j]] = i;
        if (s->prev[i] >= 0) push_pair(t, s, &hn, s->prev[i]);
        if (s->next[i] >= 0) push_pair(t, s, &hn, i);
    }
    for (int i = 0; i < m; i++)
        if (s->sym[i] >= 0 && ivec_push(out, s->sym[i])) return -1;
    return 0;
}

/* words up to this many bytes go through the per-call cache */
#define CACHE_MAX_WORD 64

typedef struct {
    StrMap map;  /* word bytes -> offset << 16 | count into ids */
    IntVec ids;
} WordCache;

static int encode_piece(const Tokenizer *t, const unsigned char *w, size_t n, WordCache *c, Scratch *s, IntVec *out) {
    if (n > CACHE_MAX_WORD) return bpe_word(t, w, n, s, out);
    int64_t *v = strmap_get(&c->map, (const char *)w, n);
    if (!v) {
        size_t start = c->ids.n;
        if (bpe_word(t, w, n, s, &c->ids)) return -1;
        if (!(v = strmap_put(&c->map, (const char *)w, n, (int64_t)start << 16 | (int64_t)(c->ids.n - start))))
            return -1;
    }
    size_t off = (size_t)(*v >> 16), cnt = (size_t)(*v & 0xFFFF);
    for (size_t k = 0; k < cnt; k++)
        if (ivec_push(out, c->ids.v[off + k])) return -1;
    return 0;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int **ids, size_t *n_ids) {
    IntVec out = {0};
    WordCache cache = {0};
    Scratch s = {0};
    size_t *next = malloc((t->n_added + 1) * sizeof *next);
    int rc = next && !strmap_init(&cache.map, 1024) ? 0 : fh_error("tokenizer: out of memory");
    for (int k = 0; k < t->n_added && !rc; k++) next[k] = (size_t)-2;
    const unsigned char *u = (const unsigned char *)text;
    for (size_t pos = 0; pos < len && !rc;) {
        size_t at = len;
        int k = added_find(t, text, len, pos, next, &at);
        for (size_t i = pos; i < at && !rc;) {
            size_t e = pretok_end(u, at, i);
            rc = encode_piece(t, u + i, e - i, &cache, &s, &out);
            i = e;
        }
        if (k < 0 || rc) break;
        rc = ivec_push(&out, t->added[k].id);
        pos = at + t->added[k].len;
    }
    free(next);
    strmap_free(&cache.map);
    free(cache.ids.v);
    free(s.sym); free(s.prev); free(s.next); free(s.heap);
    if (rc) { free(out.v); return -1; }
    if (!out.v) out.v = malloc(sizeof(int)); /* a valid pointer even for empty input */
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->bytes[ids[i]]) {
            fh_error("tokenizer: cannot decode id %d at position %zu (valid ids are 0..%d)", ids[i], i, t->n_ids - 1);
            return NULL;
        }
        total += t->nbytes[ids[i]];
    }
    char *o = fh_malloc(total + 1, "decoded text");
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(o + k, t->bytes[ids[i]], t->nbytes[ids[i]]);
        k += t->nbytes[ids[i]];
    }
    o[k] = 0;
    if (len) *len = k;
    return o;
}
