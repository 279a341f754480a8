/* test_tokenizer.c - byte-level BPE tokenizer (src/data/tokenizer*.c).
 *
 * Checks: GPT-2's byte <-> unicode map; GPT-2 pre-tokenisation splits (the
 * expected splits were produced by HF `tokenizers`); decode(encode(x)) == x
 * on random UTF-8, emoji, invalid bytes and whitespace runs; encoding equals
 * a naive GPT-2 BPE (repeatedly merge every occurrence of the lowest-rank
 * pair); training equals a naive trainer that recounts every pair at every
 * step, and gives HF's first merges on a classic example; <|endoftext|> in
 * the text; save/load round trip; both merges formats; malformed files give
 * errors naming the file and the field. The HF comparison proper is
 * tests/py/test_tokenizer_hf.py. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/data/tokenizer.h"
#include "../src/data/tokenizer_internal.h"
#include "test.h"

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static const char *tmp_path(const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/flowhn_test_tok_%d_%s", (int)getpid(), name);
    return buf;
}

/* some English-like text with repeats, for training */
static char *sample_text(size_t *len, int n_words) {
    static const char *words[] = {"the", "cat", "sat", "on", "mat", "and", "then", "it's", "running", "runner",
                                  "ran", "123", "4.5", "don't", "we'll", "Über", "naïve", "日本語", "😀", "--",
                                  "!!", "?", "hello", "world", "Hello", "World", "lower", "newest", "widest"};
    static const char *seps[] = {" ", " ", " ", "  ", "\n", "\n\n", ", ", ". ", "\t", " \n "};
    size_t cap = (size_t)n_words * 24 + 1, n = 0;
    char *s = malloc(cap);
    for (int i = 0; i < n_words; i++) {
        const char *w = words[rnd() % (sizeof words / sizeof *words)], *p = seps[rnd() % (sizeof seps / sizeof *seps)];
        memcpy(s + n, w, strlen(w)); n += strlen(w);
        memcpy(s + n, p, strlen(p)); n += strlen(p);
    }
    s[n] = 0;
    *len = n;
    return s;
}

static Tokenizer *train_sample(int vocab) {
    size_t len;
    char *s = sample_text(&len, 20000);
    const char *texts[1] = {s};
    Tokenizer *t = tokenizer_train(texts, &len, 1, vocab);
    free(s);
    return t;
}

static void test_byte_level_map(void) {
    int seen[512] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t c = bytelevel_char(b);
        CHECK(c < 512 && !seen[c], "byte %d maps to U+%04X, twice or out of range", b, c);
        if (c < 512) seen[c] = 1;
        CHECK(bytelevel_byte(c) == b, "inverse of U+%04X is %d, not %d", c, bytelevel_byte(c), b);
    }
    /* GPT-2's: ' ' -> U+0120 'Ġ', '\n' -> U+010A 'Ċ', 0 -> U+0100, 0xAD -> U+0143, 'a' -> 'a' */
    CHECK(bytelevel_char(' ') == 0x120 && bytelevel_char('\n') == 0x10A && bytelevel_char(0) == 0x100 &&
          bytelevel_char(0xAD) == 0x143 && bytelevel_char('a') == 'a', "GPT-2 byte map");
    CHECK(bytelevel_byte(0x144) == -1 && bytelevel_byte(0x7F) == -1, "code points outside the alphabet");
    /* GPT-2's vocabulary order: '!' first, then printable, then byte 0 at 188, 0xAD last */
    CHECK(bytelevel_order(0) == '!' && bytelevel_order(93) == '~' && bytelevel_order(94) == 0xA1 &&
          bytelevel_order(188) == 0 && bytelevel_order(255) == 0xAD, "byte token order");
    char *e = bytelevel_encode(" \n\xff", 3), *raw;
    size_t rl;
    CHECK(e && !strcmp(e, "\xc4\xa0\xc4\x8a\xc3\xbf"), "bytelevel_encode");
    CHECK(e && !bytelevel_decode(e, strlen(e), &raw, &rl) && rl == 3 && !memcmp(raw, " \n\xff", 3), "decode");
    free(e);
    if (rl == 3) free(raw);
}

/* splits `s` with pretok_end and compares with the '|'-separated `want` */
static void check_split(const char *s, const char *want) {
    char got[512] = "";
    size_t len = strlen(s), k = 0;
    for (size_t i = 0; i < len;) {
        size_t e = pretok_end((const unsigned char *)s, len, i);
        if (e <= i || e > len) { CHECK(0, "pretok_end(%zu) = %zu", i, e); return; }
        if (i) got[k++] = '|';
        memcpy(got + k, s + i, e - i);
        k += e - i;
        i = e;
    }
    got[k] = 0;
    CHECK(!strcmp(got, want), "split of \"%s\": got \"%s\", want \"%s\"", s, got, want);
}

static void test_pretokenize(void) {
    /* expected values from HF ByteLevel(add_prefix_space=False).pre_tokenize_str */
    check_split("Hello world's  fine!!\n\n  x 123abc", "Hello| world|'s| | fine|!!|\n\n | x| 123|abc");
    check_split("I'll don't 'S it's'' a\tb  \t c\r\n", "I|'ll| don|'t| '|S| it|'s|''| a|\t|b|  \t| c|\r\n");
    check_split("   leading", "  | leading");
    check_split("trailing   ", "trailing|   ");
    check_split("x!!!'s y", "x|!!!'|s| y");
    check_split("ab12cd 3.14 -5 \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\xf0\x9f\x98\x80 z",
                "ab|12|cd| 3|.|14| -|5| \xc3\xa9t\xc3\xa9| \xf0\x9f\x98\x80\xf0\x9f\x98\x80| z");
    check_split("  \n\nq", "  \n|\n|q");
    /* U+00A0 and U+3000 are \s, U+200B and U+001F are not; U+00BD (No) is a number, U+0301 (Mn) is not a letter */
    check_split("a\xc2\xa0\xc2\xa0" "b", "a|\xc2\xa0|\xc2\xa0|b");
    check_split("a\xe3\x80\x80z\x1f\x1fq", "a|\xe3\x80\x80|z|\x1f\x1f|q");
    check_split("a\xe2\x80\x8b" "b 1\xc2\xbd e\xcc\x81", "a|\xe2\x80\x8b|b| 1\xc2\xbd| e|\xcc\x81");
    /* invalid UTF-8 bytes are "other" characters, one byte each */
    check_split("ab\xff\xfe cd\xc3", "ab|\xff\xfe| cd|\xc3");
}

/* random bytes that stress the byte-level path */
static size_t random_text(char *s, size_t max) {
    static const char *pieces[] = {"\xf0\x9f\x98\x80", "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb", "\xe6\x97\xa5",
                                   "\xc3\xa9", "     ", "\n\n\n", "\t \t", "\r\n", "<|endoftext|>", "<|endoftext",
                                   "'s", "'ll", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xc0\xaf", "\x00",
                                   "hello", " world", "123", "\xe3\x80\x80", "\xc2\xa0"};
    size_t n = 0;
    while (n + 32 < max) {
        if (rnd() % 3) {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            size_t l = p[0] ? strlen(p) : 1;
            memcpy(s + n, p, l);
            n += l;
        } else {
            s[n++] = (char)(rnd() & 0xFF);
        }
        if (rnd() % 50 == 0) break;
    }
    return n;
}

static void test_round_trip(void) {
    Tokenizer *t = train_sample(600);
    CHECK(t != NULL, "train: %s", fh_last_error());
    if (!t) return;
    char s[4096];
    int bad = 0;
    for (int iter = 0; iter < 2000 && bad < 3; iter++) {
        size_t n = random_text(s, sizeof s), n_ids, back_len;
        int *ids;
        if (tokenizer_encode(t, s, n, &ids, &n_ids)) { CHECK(0, "encode: %s", fh_last_error()); return; }
        char *back = tokenizer_decode(t, ids, n_ids, &back_len);
        if (!back || back_len != n || memcmp(back, s, n)) { bad++; CHECK(0, "round trip %d (%zu bytes)", iter, n); }
        free(back);
        free(ids);
    }
    tokenizer_free(t);
}

/* the token id whose bytes are a+b, or -1 */
static int find_token(const Tokenizer *t, const char *a, size_t la, const char *b, size_t lb) {
    for (int id = 0; id < t->n_ids; id++)
        if (t->str[id] && t->nbytes[id] == la + lb && !memcmp(t->bytes[id], a, la) && !memcmp(t->bytes[id] + la, b, lb))
            return id;
    return -1;
}

/* GPT-2's original algorithm on one word: merge every occurrence of the
 * lowest-rank pair, until no pair has a rank */
static int naive_bpe(const Tokenizer *t, const unsigned char *w, size_t n, int *out) {
    int m = 0;
    for (size_t i = 0; i < n; i++) out[m++] = t->byte_id[w[i]];
    for (;;) {
        int best = -1;
        for (int i = 0; i + 1 < m; i++)
            for (int r = 0; r < t->n_merges && (best < 0 || r < best); r++)
                if (t->merge_list[r][0] == out[i] && t->merge_list[r][1] == out[i + 1]) { best = r; break; }
        if (best < 0) return m;
        int a = t->merge_list[best][0], b = t->merge_list[best][1];
        int c = find_token(t, t->bytes[a], t->nbytes[a], t->bytes[b], t->nbytes[b]), k = 0;
        for (int i = 0; i < m; i++) {
            if (i + 1 < m && out[i] == a && out[i + 1] == b) { out[k++] = c; i++; }
            else out[k++] = out[i];
        }
        m = k;
    }
}

static void test_encode_matches_naive(void) {
    Tokenizer *t = train_sample(700);
    if (!t) { CHECK(0, "train: %s", fh_last_error()); return; }
    size_t len;
    char *s = sample_text(&len, 3000);
    int *ids, naive[256];
    size_t n_ids, k = 0;
    CHECK(!tokenizer_encode(t, s, len, &ids, &n_ids), "encode: %s", fh_last_error());
    int mismatch = 0;
    for (size_t i = 0; i < len && !mismatch;) {
        size_t e = pretok_end((const unsigned char *)s, len, i);
        int m = naive_bpe(t, (const unsigned char *)s + i, e - i, naive);
        for (int j = 0; j < m; j++, k++)
            if (k >= n_ids || ids[k] != naive[j]) { mismatch = 1; CHECK(0, "token %zu differs from naive BPE", k); break; }
        i = e;
    }
    CHECK(k == n_ids, "naive BPE gives %zu ids, encode %zu", k, n_ids);
    free(ids);
    free(s);
    tokenizer_free(t);
}

static void merge_str(const Tokenizer *t, int r, char *buf, size_t n) {
    snprintf(buf, n, "%s %s", t->str[t->merge_list[r][0]], t->str[t->merge_list[r][1]]);
}

static void test_training_first_merges(void) {
    const char *s = "low low low low low lower lower newest newest newest newest newest newest widest widest widest";
    size_t len = strlen(s);
    Tokenizer *t = tokenizer_train(&s, &len, 1, 262);
    if (!t) { CHECK(0, "train: %s", fh_last_error()); return; }
    /* HF's BpeTrainer (ByteLevel alphabet, same text) gives e s, es t, l o, lo w, e w */
    static const char *want[] = {"e s", "es t", "l o", "lo w", "e w"};
    CHECK(t->n_merges == 5 && tokenizer_vocab_size(t) == 262, "%d merges, vocab %d", t->n_merges,
          tokenizer_vocab_size(t));
    for (int r = 0; r < 5 && r < t->n_merges; r++) {
        char buf[64];
        merge_str(t, r, buf, sizeof buf);
        CHECK(!strcmp(buf, want[r]), "merge %d is \"%s\", want \"%s\"", r, buf, want[r]);
    }
    CHECK(tokenizer_eot(t) == 261, "eot id %d", tokenizer_eot(t));
    tokenizer_free(t);
}

/* naive trainer: after each merge, recount every pair in every word */
static void test_training_matches_naive(void) {
    size_t len;
    char *s = sample_text(&len, 4000);
    const int V = 340;
    const char *texts[1] = {s};
    Tokenizer *t = tokenizer_train(texts, &len, 1, V);
    if (!t) { CHECK(0, "train: %s", fh_last_error()); free(s); return; }
    /* words as id sequences; ids: GPT-2 byte order, then one per new token */
    int n_words = 0, *wlen = malloc(len * sizeof(int)), **w = malloc(len * sizeof(int *)), order_id[256];
    for (int i = 0; i < 256; i++) order_id[bytelevel_order(i)] = i;
    for (size_t i = 0; i < len;) {
        size_t e = pretok_end((const unsigned char *)s, len, i);
        w[n_words] = malloc((e - i) * sizeof(int));
        for (size_t k = i; k < e; k++) w[n_words][k - i] = order_id[(unsigned char)s[k]];
        wlen[n_words++] = (int)(e - i);
        i = e;
    }
    char (*tok)[64] = calloc(V, 64);
    int *tl = calloc(V, sizeof(int)), n_tok = 256;
    for (int i = 0; i < 256; i++) { tok[i][0] = (char)bytelevel_order(i); tl[i] = 1; }
    int64_t *cnt = malloc(sizeof(int64_t) * V * V);
    int r = 0, ok = 1;
    for (; n_tok < V - 1 && ok; r++) {
        memset(cnt, 0, sizeof(int64_t) * V * V);
        for (int i = 0; i < n_words; i++)
            for (int k = 0; k + 1 < wlen[i]; k++) cnt[w[i][k] * V + w[i][k + 1]]++;
        int best = 0;
        for (int p = 1; p < V * V; p++)
            if (cnt[p] > cnt[best]) best = p; /* first max = smallest (a, b) */
        if (!cnt[best]) break;
        int a = best / V, b = best % V, c = -1;
        for (int i = 0; i < n_tok; i++)
            if (tl[i] == tl[a] + tl[b] && !memcmp(tok[i], tok[a], tl[a]) && !memcmp(tok[i] + tl[a], tok[b], tl[b])) c = i;
        if (c < 0) { c = n_tok++; memcpy(tok[c], tok[a], tl[a]); memcpy(tok[c] + tl[a], tok[b], tl[b]); tl[c] = tl[a] + tl[b]; }
        if (r >= t->n_merges || t->merge_list[r][0] != a || t->merge_list[r][1] != b) {
            CHECK(0, "merge %d: naive (%d, %d), trained (%d, %d)", r, a, b, r < t->n_merges ? t->merge_list[r][0] : -1,
                  r < t->n_merges ? t->merge_list[r][1] : -1);
            ok = 0;
        }
        for (int i = 0; i < n_words; i++) {
            int k = 0;
            for (int j = 0; j < wlen[i]; j++) {
                if (j + 1 < wlen[i] && w[i][j] == a && w[i][j + 1] == b) { w[i][k++] = c; j++; }
                else w[i][k++] = w[i][j];
            }
            wlen[i] = k;
        }
    }
    CHECK(!ok || r == t->n_merges, "naive made %d merges, trained %d", r, t->n_merges);
    CHECK(t->n_merges > 50, "only %d merges learnt", t->n_merges);
    for (int i = 0; i < n_words; i++) free(w[i]);
    free(w); free(wlen); free(tok); free(tl); free(cnt); free(s);
    tokenizer_free(t);
}

static void test_special_token(void) {
    Tokenizer *t = train_sample(400);
    if (!t) { CHECK(0, "train: %s", fh_last_error()); return; }
    int eot = tokenizer_eot(t);
    /* the sample text runs out of pairs before 400 */
    int V = tokenizer_vocab_size(t);
    CHECK(eot == V - 1 && V > 300 && V <= 400, "eot %d, vocab %d", eot, V);
    const char *s = "<|endoftext|>the cat<|endoftext|><|endoftext|> sat<|endoftext";
    int *ids;
    size_t n;
    CHECK(!tokenizer_encode(t, s, strlen(s), &ids, &n), "encode");
    int n_eot = 0;
    for (size_t i = 0; i < n; i++) n_eot += ids[i] == eot;
    CHECK(n_eot == 3 && ids[0] == eot, "%d <|endoftext|> tokens, first id %d", n_eot, ids[0]);
    size_t bl;
    char *back = tokenizer_decode(t, ids, n, &bl);
    CHECK(back && bl == strlen(s) && !memcmp(back, s, bl), "decode with <|endoftext|>");
    free(back);
    free(ids);
    CHECK(!tokenizer_encode(t, "", 0, &ids, &n) && n == 0, "empty text");
    free(ids);
    int bad[3] = {5, V, -1};
    char vs[16];
    snprintf(vs, sizeof vs, "id %d", V);
    CHECK(tokenizer_decode(t, bad, 2, &bl) == NULL && strstr(fh_last_error(), vs), "bad id refused: %s", fh_last_error());
    CHECK(tokenizer_decode(t, bad + 2, 1, &bl) == NULL, "negative id refused");
    tokenizer_free(t);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc(n + 1);
    s[fread(s, 1, n, f)] = 0;
    fclose(f);
    return s;
}

static void test_save_load(void) {
    Tokenizer *t = train_sample(500);
    if (!t) { CHECK(0, "train: %s", fh_last_error()); return; }
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s", tmp_path("a.json"));
    snprintf(p2, sizeof p2, "%s", tmp_path("b.json"));
    CHECK(!tokenizer_save(t, p1), "save: %s", fh_last_error());
    Tokenizer *u = tokenizer_load(p1);
    CHECK(u != NULL, "load: %s", fh_last_error());
    if (u) {
        CHECK(tokenizer_vocab_size(u) == tokenizer_vocab_size(t) && tokenizer_eot(u) == tokenizer_eot(t) &&
                  u->n_merges == t->n_merges, "sizes");
        size_t len, n1, n2;
        char *s = sample_text(&len, 2000);
        int *a, *b;
        CHECK(!tokenizer_encode(t, s, len, &a, &n1) && !tokenizer_encode(u, s, len, &b, &n2), "encode");
        CHECK(n1 == n2 && !memcmp(a, b, n1 * sizeof(int)), "loaded tokenizer encodes differently");
        free(a); free(b); free(s);
        CHECK(!tokenizer_save(u, p2), "save again");
        char *x = read_text(p1), *y = read_text(p2);
        CHECK(x && y && !strcmp(x, y), "saving the loaded tokenizer gives a different file");
        free(x); free(y);
        tokenizer_free(u);
    }
    CHECK(tokenizer_save(t, "/nonexistent_dir/x.json") && strstr(fh_last_error(), "/nonexistent_dir/x.json"),
          "unwritable path: %s", fh_last_error());
    remove(p1);
    remove(p2);
    tokenizer_free(t);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* a tiny HF-style file; %s slots: added_tokens, pre_tokenizer, model fields
 * before the vocab, extra vocab entries, merges */
static const char *tiny_fmt =
    "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":null,\"pre_tokenizer\":%s,\"post_processor\":null,"
    "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{%s\"vocab\":{\"a\":0,\"b\":1,\"\\u0120\":2,\"ab\":3,\"\\u0120ab\":4%s},\"merges\":[%s]}}";
#define BL "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}"
#define SEQ                                                                                                      \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"'s|'t|'re|'ve|'m|'ll|'d| " \
    "?\\\\p{L}+| ?\\\\p{N}+| ?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]}"
#define BPE "\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
#define ADDED "{\"id\":5,\"content\":\"<|endoftext|>\",\"special\":true,\"lstrip\":false,\"rstrip\":false}"

static void test_load_formats(void) {
    char buf[2048];
    const char *p = tmp_path("fmt.json");
    const char *pre[2] = {BL, SEQ}, *merges[2] = {"\"a b\",\"\\u0120 ab\"", "[\"a\",\"b\"],[\"\\u0120\",\"ab\"]"};
    for (int k = 0; k < 4; k++) {
        snprintf(buf, sizeof buf, tiny_fmt, ADDED, pre[k & 1], BPE, "", merges[k >> 1]);
        write_file(p, buf);
        Tokenizer *t = tokenizer_load(p);
        CHECK(t != NULL, "format %d: %s", k, fh_last_error());
        if (!t) continue;
        int *ids;
        size_t n;
        const char *s = "ab ab<|endoftext|>ba";
        CHECK(!tokenizer_encode(t, s, strlen(s), &ids, &n), "encode");
        int want[] = {3, 4, 5, 1, 0};
        CHECK(n == 5 && !memcmp(ids, want, sizeof want), "format %d: ids %d %d %d %d %d", k, ids[0], ids[1], ids[2],
              ids[3], ids[4]);
        CHECK(tokenizer_eot(t) == 5 && tokenizer_vocab_size(t) == 6, "eot/vocab");
        free(ids);
        tokenizer_free(t);
    }
    remove(p);
}

/* equal ranks merge leftmost first: "aaaaa" -> aa|aa|a -> aa|aaa (GPT-2 and HF) */
static void test_equal_rank_leftmost(void) {
    const char *p = tmp_path("aaa.json");
    write_file(p, "{\"pre_tokenizer\":" BL ",\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
                  "\"vocab\":{\"a\":0,\"aa\":1,\"aaa\":2},\"merges\":[\"a a\",\"aa a\"]}}");
    Tokenizer *t = tokenizer_load(p);
    CHECK(t != NULL, "load: %s", fh_last_error());
    if (!t) return;
    int *ids;
    size_t n;
    CHECK(!tokenizer_encode(t, "aaaaa", 5, &ids, &n) && n == 2 && ids[0] == 1 && ids[1] == 2, "aaaaa -> %zu ids", n);
    free(ids);
    CHECK(!tokenizer_encode(t, "aaa", 3, &ids, &n) && n == 1 && ids[0] == 2, "aaa -> %zu ids", n);
    free(ids);
    tokenizer_free(t);
    remove(p);
}

static void expect_error(const char *label, const char *text, const char *field) {
    const char *p = tmp_path("bad.json");
    if (text) write_file(p, text);
    fh_clear_error();
    Tokenizer *t = tokenizer_load(text ? p : "/nonexistent/tokenizer.json");
    const char *e = fh_last_error();
    CHECK(t == NULL, "%s: loaded", label);
    CHECK(strstr(e, text ? p : "/nonexistent/tokenizer.json") && strstr(e, field), "%s: error \"%s\" should name \"%s\"",
          label, e, field);
    tokenizer_free(t);
    remove(p);
}

/* text with its first `from` replaced by `to` must be refused, the error naming `field` */
static void expect_error_replaced(const char *field, const char *text, const char *from, const char *to) {
    const char *at = strstr(text, from);
    CHECK(at != NULL, "%s: the text has no %s to replace", field, from);
    if (!at) return;
    char fixed[2048];
    snprintf(fixed, sizeof fixed, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    expect_error(field, fixed, field);
}

static void test_load_errors(void) {
    char buf[2048];
    expect_error("missing file", NULL, "cannot open");
    expect_error("not JSON", "{\"model\": [1, 2", "not valid JSON");
    expect_error("no model", "{\"pre_tokenizer\":" BL ",\"decoder\":{\"type\":\"ByteLevel\"}}", "\"model\"");
#define BAD(label, added, pre, model_extra, vocab_extra, merges, field)                  \
    snprintf(buf, sizeof buf, tiny_fmt, added, pre, model_extra, vocab_extra, merges); \
    expect_error(label, buf, field)
    BAD("WordPiece", "", BL, "\"type\":\"WordPiece\",", "", "", "model.type");
    BAD("negative id", "", BL, "", ",\"c\":-1", "", "model.vocab");
    BAD("duplicate id", "", BL, "", ",\"c\":1", "", "model.vocab");
    BAD("merge token unknown", "", BL, "", "", "\"a c\"", "model.merges[0]");
    BAD("merge result unknown", "", BL, "", "", "\"b a\"", "model.merges[0]");
    BAD("merge without space", "", BL, "", "", "\"ab\"", "model.merges[0]");
    BAD("merge pair of three", "", BL, "", "", "\"a b\",[\"a\",\"b\",\"c\"]", "model.merges[1]");
    BAD("unk token", "", BL, "\"unk_token\":\"a\",", "", "", "model.unk_token");
    BAD("byte fallback", "", BL, BPE "\"byte_fallback\":true,", "", "", "model.byte_fallback");
    BAD("subword prefix", "", BL, BPE "\"continuing_subword_prefix\":\"##\",", "", "", "model.continuing_subword_prefix");
    BAD("no pre_tokenizer", "", "null", "", "", "", "pre_tokenizer");
    BAD("prefix space", "", "{\"type\":\"ByteLevel\",\"add_prefix_space\":true}", "", "", "", "add_prefix_space");
    BAD("prefix space by default", "", "{\"type\":\"ByteLevel\"}", "", "", "", "add_prefix_space");
    BAD("whitespace pre_tokenizer", "", "{\"type\":\"Whitespace\"}", "", "", "", "pre_tokenizer");
    BAD("other regex", "",
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
        "\"use_regex\":false}]}",
        "", "", "", "pattern.Regex");
    BAD("lstrip", "{\"id\":5,\"content\":\"<|endoftext|>\",\"lstrip\":true}", BL, "", "", "", "added_tokens[0].lstrip");
    BAD("added without id", "{\"content\":\"x\"}", BL, "", "", "", "added_tokens[0].id");
    BAD("added empty", "{\"id\":6,\"content\":\"\"}", BL, "", "", "", "added_tokens[0].content");
#undef BAD
    snprintf(buf, sizeof buf, tiny_fmt, "", BL, BPE, "", "");
    expect_error_replaced("normalizer", buf, "\"normalizer\":null", "\"normalizer\":{\"type\":\"NFC\"}");
    expect_error_replaced("decoder", buf, "\"decoder\":{\"type\":\"ByteLevel\"}", "\"decoder\":{\"type\":\"WordPiece\"}");
}

int main(void) {
    RUN(test_byte_level_map);
    RUN(test_pretokenize);
    RUN(test_round_trip);
    RUN(test_encode_matches_naive);
    RUN(test_training_first_merges);
    RUN(test_training_matches_naive);
    RUN(test_special_token);
    RUN(test_save_load);
    RUN(test_load_formats);
    RUN(test_equal_rank_leftmost);
    RUN(test_load_errors);
    TEST_SUMMARY();
}
