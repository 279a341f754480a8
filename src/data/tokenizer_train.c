/* tokenizer_train.c - learns byte-level BPE merges from text.
 *
 * 1. Pre-tokenise the texts (skipping <|endoftext|>) and count each distinct
 *    word once: training works on (word, count) pairs, not on the text.
 * 2. Count adjacent symbol pairs over the words, remembering for each pair
 *    the words it occurs in.
 * 3. Repeatedly take the most frequent pair (ties: the smaller (left id,
 *    right id), as HF's trainer does, ids of the 256 byte tokens being in
 *    GPT-2's order), merge it in the words that contain it, and update only
 *    the counts of the pairs next to each merge. A max-heap with lazy
 *    deletion finds the top pair: an entry whose count is out of date is put
 *    back with its current count when it surfaces.
 * Ids: the 256 byte tokens, then one per merge, then <|endoftext|>. */
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "tokenizer_internal.h"

typedef struct { int *v; int n, cap; } Ints;

static int ints_push(Ints *a, int x) {
    if (a->n == a->cap) {
        int c = a->cap ? a->cap * 2 : 4;
        int *v = realloc(a->v, (size_t)c * sizeof *v);
        if (!v) return fh_error("tokenizer_train: out of memory");
        a->v = v;
        a->cap = c;
    }
    a->v[a->n++] = x;
    return 0;
}

typedef struct {
    int a, b;
    int64_t count;
    Ints words;   /* words the pair occurs (or occurred) in; may repeat */
} Pair;

typedef struct { int64_t count; int a, b; } HeapEnt;

typedef struct {
    /* words */
    Ints *sym;          /* [n_words] the current symbols of each word */
    int64_t *wcount;    /* [n_words] occurrences of each word */
    int *wstamp;        /* [n_words] last merge step that visited the word */
    int n_words;
    /* pairs */
    U64Map pair_index;  /* pair_key -> index into pairs */
    Pair *pairs;
    int n_pairs, cap_pairs;
    int *pstamp;        /* [cap_pairs] last merge step that raised the pair */
    Ints touched;       /* pairs raised in the current step */
    HeapEnt *heap;
    size_t heap_n, heap_cap;
    /* tokens */
    char **tok;         /* raw bytes of each id */
    uint32_t *tlen;
    int n_tok;
    StrMap tok_index;   /* raw bytes -> id */
} Trainer;

/* heap order: higher count first, then smaller (a, b) */
static int ent_above(HeapEnt x, HeapEnt y) {
    if (x.count != y.count) return x.count > y.count;
    return x.a != y.a ? x.a < y.a : x.b < y.b;
}

static int heap_push(Trainer *tr, HeapEnt e) {
    if (tr->heap_n == tr->heap_cap) {
        size_t c = tr->heap_cap ? tr->heap_cap * 2 : 1024;
        HeapEnt *h = realloc(tr->heap, c * sizeof *h);
        if (!h) return fh_error("tokenizer_train: out of memory");
        tr->heap = h;
        tr->heap_cap = c;
    }
    size_t i = tr->heap_n++;
    while (i > 0 && ent_above(e, tr->heap[(i - 1) / 2])) { tr->heap[i] = tr->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    tr->heap[i] = e;
    return 0;
}

static HeapEnt heap_pop(Trainer *tr) {
    HeapEnt *h = tr->heap, top = h[0], last = h[--tr->heap_n];
    size_t i = 0, n = tr->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ent_above(h[c + 1], h[c])) c++;
        if (!ent_above(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static Pair *get_pair(Trainer *tr, int a, int b) {
    uint64_t *v = u64map_put(&tr->pair_index, pair_key(a, b), UINT64_MAX);
    if (!v) return NULL;
    if (*v == UINT64_MAX) {
        if (tr->n_pairs == tr->cap_pairs) {
            int c = tr->cap_pairs ? tr->cap_pairs * 2 : 4096;
            Pair *p = realloc(tr->pairs, (size_t)c * sizeof *p);
            int *s = p ? realloc(tr->pstamp, (size_t)c * sizeof *s) : NULL;
            if (p) tr->pairs = p;
            if (!s) { fh_error("tokenizer_train: out of memory"); return NULL; }
            tr->pstamp = s;
            tr->cap_pairs = c;
        }
        tr->pairs[tr->n_pairs] = (Pair){a, b, 0, {0}};
        tr->pstamp[tr->n_pairs] = -1;
        *v = (uint64_t)tr->n_pairs++;
    }
    return &tr->pairs[*v];
}

/* count += delta for pair (a, b) occurring in word w; a raised pair is
 * remembered so that it goes back on the heap after this step */
static int add_pair(Trainer *tr, int a, int b, int64_t delta, int w, int step) {
    Pair *p = get_pair(tr, a, b);
    if (!p) return -1;
    p->count += delta;
    if (delta <= 0) return 0;
    int idx = (int)(p - tr->pairs);
    if ((!p->words.n || p->words.v[p->words.n - 1] != w) && ints_push(&p->words, w)) return -1;
    if (tr->pstamp[idx] != step) {
        tr->pstamp[idx] = step;
        if (ints_push(&tr->touched, idx)) return -1;
    }
    return 0;
}

static int add_token(Trainer *tr, const char *bytes, size_t len) {
    if (!(tr->n_tok & (tr->n_tok - 1)) || !tr->n_tok) { /* grow at powers of two */
        size_t c = tr->n_tok ? (size_t)tr->n_tok * 2 : 512;
        char **t = realloc(tr->tok, c * sizeof *t);
        uint32_t *l = t ? realloc(tr->tlen, c * sizeof *l) : NULL;
        if (t) tr->tok = t;
        if (!l) return fh_error("tokenizer_train: out of memory");
        tr->tlen = l;
    }
    char *s = malloc(len + 1);
    int64_t *slot = s ? strmap_put(&tr->tok_index, bytes, len, tr->n_tok) : NULL;
    if (!slot) { free(s); return fh_error("tokenizer_train: out of memory"); }
    memcpy(s, bytes, len);
    s[len] = 0;
    tr->tok[tr->n_tok] = s;
    tr->tlen[tr->n_tok] = (uint32_t)len;
    return tr->n_tok++;
}

/* step 1: distinct pre-token words with their counts */
static int count_words(Trainer *tr, const char *const *texts, const size_t *lens, int n_texts, const int *byte_id) {
    StrMap wc;
    if (strmap_init(&wc, 1 << 16)) return -1;
    const size_t eot_len = strlen(TOK_EOT);
    for (int d = 0; d < n_texts; d++) {
        const unsigned char *s = (const unsigned char *)texts[d];
        size_t len = lens[d];
        for (size_t pos = 0; pos < len;) {
            const char *e = memmem(s + pos, len - pos, TOK_EOT, eot_len);
            size_t stop = e ? (size_t)((const unsigned char *)e - s) : len;
            for (size_t i = pos; i < stop;) {
                size_t j = pretok_end(s, stop, i);
                int64_t *c = strmap_put(&wc, (const char *)s + i, j - i, 0);
                if (!c) { strmap_free(&wc); return -1; }
                ++*c;
                i = j;
            }
            pos = e ? stop + eot_len : len;
        }
    }
    tr->n_words = (int)wc.n;
    tr->sym = calloc(wc.n ? wc.n : 1, sizeof *tr->sym);
    tr->wcount = malloc((wc.n ? wc.n : 1) * sizeof *tr->wcount);
    tr->wstamp = malloc((wc.n ? wc.n : 1) * sizeof *tr->wstamp);
    int rc = tr->sym && tr->wcount && tr->wstamp ? 0 : fh_error("tokenizer_train: out of memory");
    /* words in hash-slot order: deterministic, and the result does not depend on it */
    for (size_t i = 0, w = 0; i < wc.cap && !rc; i++) {
        if (!wc.keys[i]) continue;
        tr->wcount[w] = wc.val[i];
        tr->wstamp[w] = -1;
        for (uint32_t k = 0; k < wc.klen[i] && !rc; k++)
            rc = ints_push(&tr->sym[w], byte_id[(unsigned char)wc.keys[i][k]]);
        w++;
    }
    strmap_free(&wc);
    return rc;
}

/* merges (a, b) -> c everywhere in word w, left to right, updating the
 * neighbouring pair counts */
static int merge_word(Trainer *tr, int w, int a, int b, int c, int step) {
    Ints *s = &tr->sym[w];
    int64_t n = tr->wcount[w];
    int k = 0; /* write position */
    for (int i = 0; i < s->n; i++) {
        if (i + 1 < s->n && s->v[i] == a && s->v[i + 1] == b) {
            if (k > 0 && (add_pair(tr, s->v[k - 1], a, -n, w, step) || add_pair(tr, s->v[k - 1], c, n, w, step)))
                return -1;
            if (i + 2 < s->n && (add_pair(tr, b, s->v[i + 2], -n, w, step) || add_pair(tr, c, s->v[i + 2], n, w, step)))
                return -1;
            s->v[k++] = c;
            i++;
        } else {
            s->v[k++] = s->v[i];
        }
    }
    s->n = k;
    return 0;
}

static void trainer_free(Trainer *tr) {
    for (int w = 0; w < tr->n_words; w++) free(tr->sym[w].v);
    free(tr->sym); free(tr->wcount); free(tr->wstamp);
    for (int p = 0; p < tr->n_pairs; p++) free(tr->pairs[p].words.v);
    free(tr->pairs); free(tr->pstamp); free(tr->touched.v); free(tr->heap);
    u64map_free(&tr->pair_index);
    for (int i = 0; i < tr->n_tok; i++) free(tr->tok[i]);
    free(tr->tok); free(tr->tlen);
    strmap_free(&tr->tok_index);
}

/* builds the Tokenizer from the learnt tokens and merges */
static Tokenizer *build(Trainer *tr, int (*merges)[3], int n_merges) {
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) { fh_error("tokenizer_train: out of memory"); return NULL; }
    int n = tr->n_tok + 1, eot = tr->n_tok;
    t->n_ids = n;
    t->str = calloc(n, sizeof *t->str);
    t->bytes = calloc(n, sizeof *t->bytes);
    t->nbytes = calloc(n, sizeof *t->nbytes);
    t->added = calloc(1, sizeof *t->added);
    t->merge_list = malloc((n_merges ? n_merges : 1) * sizeof *t->merge_list);
    int rc = t->str && t->bytes && t->nbytes && t->added && t->merge_list && !u64map_init(&t->merges, n_merges) ? 0 : -1;
    for (int id = 0; id < tr->n_tok && !rc; id++) {
        t->bytes[id] = tr->tok[id];
        t->nbytes[id] = tr->tlen[id];
        tr->tok[id] = NULL;
        if (!(t->str[id] = bytelevel_encode(t->bytes[id], t->nbytes[id]))) rc = -1;
    }
    if (!rc) {
        t->str[eot] = strdup(TOK_EOT);
        t->bytes[eot] = strdup(TOK_EOT);
        t->nbytes[eot] = (uint32_t)strlen(TOK_EOT);
        t->added[0] = (AddedToken){strdup(TOK_EOT), strlen(TOK_EOT), eot, 1};
        t->n_added = 1;
        if (!t->str[eot] || !t->bytes[eot] || !t->added[0].content) rc = -1;
    }
    for (int r = 0; r < n_merges && !rc; r++) {
        uint64_t *v = u64map_put(&t->merges, pair_key(merges[r][0], merges[r][1]), 0);
        if (!v) { rc = -1; break; }
        *v = (uint64_t)r << 32 | (uint32_t)merges[r][2];
        t->merge_list[r][0] = merges[r][0];
        t->merge_list[r][1] = merges[r][1];
    }
    t->n_merges = n_merges;
    if (rc || tokenizer_finish(t)) {
        fh_error("tokenizer_train: out of memory");
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

Tokenizer *tokenizer_train(const char *const *texts, const size_t *lens, int n_texts, int vocab_size) {
    if (vocab_size < 257) {
        fh_error("tokenizer_train: vocab_size %d is too small; it needs at least 257 (256 byte tokens + %s)",
                 vocab_size, TOK_EOT);
        return NULL;
    }
    Trainer tr = {0};
    int (*merges)[3] = malloc((size_t)(vocab_size - 256) * sizeof *merges);
    int n_merges = 0, byte_id[256], rc = merges && !strmap_init(&tr.tok_index, (size_t)vocab_size) ? 0 : -1;
    for (int i = 0; i < 256 && !rc; i++) { /* byte tokens in GPT-2's order */
        char b = (char)bytelevel_order(i);
        byte_id[(unsigned char)b] = i;
        if (add_token(&tr, &b, 1) < 0) rc = -1;
    }
    if (!rc) rc = count_words(&tr, texts, lens, n_texts, byte_id);
    if (!rc) rc = u64map_init(&tr.pair_index, 1 << 16);
    /* step 2: initial pair counts */
    for (int w = 0; w < tr.n_words && !rc; w++)
        for (int i = 0; i + 1 < tr.sym[w].n && !rc; i++)
            rc = add_pair(&tr, tr.sym[w].v[i], tr.sym[w].v[i + 1], tr.wcount[w], w, 0);
    for (int p = 0; p < tr.n_pairs && !rc; p++)
        rc = heap_push(&tr, (HeapEnt){tr.pairs[p].count, tr.pairs[p].a, tr.pairs[p].b});
    tr.touched.n = 0;
    /* step 3: merges until the vocabulary (plus <|endoftext|>) is full */
    for (int step = 1; !rc && tr.n_tok < vocab_size - 1 && tr.heap_n;) {
        HeapEnt top = heap_pop(&tr);
        Pair *p = get_pair(&tr, top.a, top.b);
        if (p->count != top.count) { /* out of date: back in with its current count */
            if (p->count > 0) rc = heap_push(&tr, (HeapEnt){p->count, top.a, top.b});
            continue;
        }
        if (top.count <= 0) break;
        /* the merged token; two different pairs can spell the same bytes, then they share an id */
        size_t la = tr.tlen[top.a], lb = tr.tlen[top.b];
        char *cat = malloc(la + lb);
        if (!cat) { rc = fh_error("tokenizer_train: out of memory"); break; }
        memcpy(cat, tr.tok[top.a], la);
        memcpy(cat + la, tr.tok[top.b], lb);
        const int64_t *have = strmap_get(&tr.tok_index, cat, la + lb);
        int c = have ? (int)*have : add_token(&tr, cat, la + lb);
        free(cat);
        if (c < 0) { rc = -1; break; }
        merges[n_merges][0] = top.a;
        merges[n_merges][1] = top.b;
        merges[n_merges][2] = c;
        n_merges++;
        int pidx = (int)(p - tr.pairs);
        Ints words = p->words; /* add_pair may move tr.pairs */
        p->words = (Ints){0};
        for (int k = 0; k < words.n && !rc; k++) {
            int w = words.v[k];
            if (tr.wstamp[w] == step) continue;
            tr.wstamp[w] = step;
            rc = merge_word(&tr, w, top.a, top.b, c, step);
        }
        free(words.v);
        tr.pairs[pidx].count = 0; /* every occurrence is merged */
        for (int k = 0; k < tr.touched.n && !rc; k++) {
            Pair *q = &tr.pairs[tr.touched.v[k]];
            if (q->count > 0) rc = heap_push(&tr, (HeapEnt){q->count, q->a, q->b});
        }
        tr.touched.n = 0;
        step++;
        if (n_merges == vocab_size - 256) break; /* bounds `merges` when merged tokens repeat */
    }
    Tokenizer *t = rc ? NULL : build(&tr, merges, n_merges);
    trainer_free(&tr);
    free(merges);
    return t;
}
