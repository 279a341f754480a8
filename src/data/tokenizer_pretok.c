/* tokenizer_pretok.c - GPT-2's byte <-> unicode mapping and its
 * pre-tokenisation regex, matched by hand on UTF-8 bytes.
 *
 * The regex (alternatives tried in order, each greedy):
 *   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
 * A character is in exactly one of four classes (space, letter, number,
 * other), so at any position the first alternative that can match is decided
 * by the first one or two characters, and the match is a run of one class. */
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "tokenizer_internal.h"
#include "unicode_tables.h"

/* ---- byte-level mapping ----
 * Printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves;
 * the other 68 bytes, in increasing order, take code points 256, 257, ... */

static int printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

/* the n-th (0-based) non-printable byte: 0..32, 127..160, 173 */
static int nonprintable(int n) { return n < 33 ? n : n < 67 ? 127 + (n - 33) : 173; }

uint32_t bytelevel_char(int b) {
    if (printable(b)) return (uint32_t)b;
    return 256u + (uint32_t)(b <= 32 ? b : b <= 160 ? 33 + (b - 127) : 67);
}

int bytelevel_byte(uint32_t cp) {
    if (cp < 256) return printable((int)cp) ? (int)cp : -1;
    return cp < 256 + 68 ? nonprintable((int)cp - 256) : -1;
}

int bytelevel_order(int i) {
    if (i < 94) return '!' + i;
    if (i < 106) return 0xA1 + (i - 94);
    if (i < 188) return 0xAE + (i - 106);
    return nonprintable(i - 188);
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one well-formed UTF-8 character at s[i]; returns its length, or 0
 * for a byte that does not start one (overlong, surrogate, truncated, ...). */
static size_t utf8_get(const unsigned char *s, size_t len, size_t i, uint32_t *cp) {
    unsigned c = s[i];
    if (c < 0x80) { *cp = c; return 1; }
    size_t n;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { n = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (i + n > len) return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i + k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

char *bytelevel_encode(const char *raw, size_t len) {
    char *o = fh_malloc(len * 2 + 1, "byte-level token string");
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) k += utf8_put(o + k, bytelevel_char((unsigned char)raw[i]));
    o[k] = 0;
    return o;
}

int bytelevel_decode(const char *s, size_t len, char **raw, size_t *raw_len) {
    char *o = fh_malloc(len + 1, "token bytes");
    if (!o) return -1;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_get((const unsigned char *)s, len, i, &cp);
        int b = n ? bytelevel_byte(cp) : -1;
        if (b < 0) { free(o); return -1; }
        o[k++] = (char)b;
        i += n;
    }
    o[k] = 0;
    *raw = o;
    *raw_len = k;
    return 0;
}

/* ---- character classes ---- */

enum { C_OTHER = 0, C_LETTER = UNI_LETTER, C_NUMBER = UNI_NUMBER, C_SPACE = 3 };

/* \s: Unicode White_Space, which is what the regex engines behind HF use
 * (note U+001C..U+001F are not in it, unlike Python's str.isspace). */
static int is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int class_of(uint32_t cp) {
    if (is_space(cp)) return C_SPACE;
    size_t lo = 0, hi = sizeof uni_ranges / sizeof uni_ranges[0];
    while (lo < hi) { /* first range with hi >= cp */
        size_t mid = (lo + hi) / 2;
        if (uni_ranges[mid].hi < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < sizeof uni_ranges / sizeof uni_ranges[0] && uni_ranges[lo].lo <= cp) return uni_ranges[lo].cls;
    return C_OTHER;
}

static inline int ascii_class(unsigned c) {
    if ((c | 32) - 'a' < 26u) return C_LETTER;
    if (c - '0' < 10u) return C_NUMBER;
    if (c == ' ' || c - 9u < 5u) return C_SPACE;
    return C_OTHER;
}

/* class and byte length of the character at s[i] */
static inline int char_at(const unsigned char *s, size_t len, size_t i, size_t *n) {
    if (s[i] < 0x80) { *n = 1; return ascii_class(s[i]); }
    uint32_t cp;
    *n = utf8_get(s, len, i, &cp);
    if (!*n) { *n = 1; return C_OTHER; }
    return class_of(cp);
}

/* end of the run of class `cls` starting at s[i] */
static size_t run_end(const unsigned char *s, size_t len, size_t i, int cls) {
    while (i < len) {
        size_t n;
        if (char_at(s, len, i, &n) != cls) break;
        i += n;
    }
    return i;
}

size_t pretok_end(const unsigned char *s, size_t len, size_t i) {
    if (s[i] == '\'' && i + 1 < len) { /* contractions, case-sensitive */
        unsigned char a = s[i + 1], b = i + 2 < len ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    size_t n;
    int cls = char_at(s, len, i, &n);
    if (s[i] == ' ' && i + 1 < len) { /* " ?X+" with the optional space */
        size_t n2;
        int c2 = char_at(s, len, i + 1, &n2);
        if (c2 != C_SPACE) return run_end(s, len, i + 1, c2);
    }
    if (cls != C_SPACE) return run_end(s, len, i, cls);
    /* whitespace: \s+(?!\S) takes the run but leaves its last character to
     * the next pre-token when a non-space follows; a lone space char is \s+ */
    size_t last = i, j = i;
    while (j < len) {
        size_t m;
        if (char_at(s, len, j, &m) != C_SPACE) break;
        last = j;
        j += m;
    }
    if (j == len || last == i) return j;
    return last;
}

int added_find(const Tokenizer *t, const char *text, size_t len, size_t from, size_t *next, size_t *at) {
    int best = -1;
    for (int k = 0; k < t->n_added; k++) {
        const AddedToken *a = &t->added[k];
        if (next[k] == (size_t)-1) continue;
        if (next[k] == (size_t)-2 || next[k] < from) {
            const char *p = a->len && from < len ? memmem(text + from, len - from, a->content, a->len) : NULL;
            next[k] = p ? (size_t)(p - text) : (size_t)-1;
            if (!p) continue;
        }
        if (best < 0 || next[k] < *at || (next[k] == *at && a->len > t->added[best].len)) {
            best = k;
            *at = next[k];
        }
    }
    return best;
}
