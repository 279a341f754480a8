/* tokenizer_json.c - reads and writes Hugging Face tokenizer.json files for
 * byte-level BPE: model BPE (vocab + merges in either the "a b" string form
 * or the [a, b] pair form), pre_tokenizer ByteLevel (or the Sequence of
 * Split(GPT-2 regex) + ByteLevel that newer versions write), decoder
 * ByteLevel, added_tokens. Anything that would change the ids (a normalizer,
 * a post-processor adding tokens, unk/byte fallback, prefixes, ...) is
 * refused with an error naming the file and the field. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/error.h"
#include "tokenizer_internal.h"

#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fh_error("%s: cannot open tokenizer file (check the path)", path); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf; n += got) {
        if (n == cap && !(buf = realloc(buf, cap *= 2))) break;
        if (!(got = fread(buf + n, 1, cap - n, f))) break;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) { free(buf); fh_error("%s: cannot read the tokenizer file", path); return NULL; }
    *len = n;
    return buf;
}

static int is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* a boolean field that may be absent (then `dflt`) */
static int get_bool(const char *path, const cJSON *obj, const char *where, const char *key, int dflt, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_null(v)) { *out = dflt; return 0; }
    if (!cJSON_IsBool(v)) return fh_error("%s: field \"%s.%s\": expected true or false", path, where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static const char *type_of(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int check_bytelevel(const char *path, const cJSON *o, const char *where, int need_regex) {
    int prefix, regex;
    /* HF's ByteLevel defaults: add_prefix_space true, use_regex true */
    if (get_bool(path, o, where, "add_prefix_space", 1, &prefix) || get_bool(path, o, where, "use_regex", 1, &regex))
        return -1;
    if (prefix)
        return fh_error("%s: field \"%s.add_prefix_space\": must be false (a GPT-2 style tokenizer adds no space)", path,
                        where);
    if (regex != need_regex)
        return fh_error("%s: field \"%s.use_regex\": must be %s here", path, where, need_regex ? "true" : "false");
    return 0;
}

static int check_pre_tokenizer(const char *path, const cJSON *root) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *ty = cJSON_IsObject(p) ? type_of(p) : NULL;
    if (ty && !strcmp(ty, "ByteLevel")) return check_bytelevel(path, p, "pre_tokenizer", 1);
    if (ty && !strcmp(ty, "Sequence")) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *sp = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
        if (!cJSON_IsArray(seq) || cJSON_GetArraySize(seq) != 2 || !type_of(sp) || strcmp(type_of(sp), "Split") ||
            !type_of(bl) || strcmp(type_of(bl), "ByteLevel"))
            return fh_error("%s: field \"pre_tokenizer.pretokenizers\": expected [Split, ByteLevel]", path);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(sp, "pattern"), "Regex");
        if (!cJSON_IsString(pat) || strcmp(pat->valuestring, GPT2_PATTERN))
            return fh_error("%s: field \"pre_tokenizer.pretokenizers[0].pattern.Regex\": only the GPT-2 pattern %s is "
                            "supported", path, GPT2_PATTERN);
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(sp, "behavior");
        int invert;
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
            return fh_error("%s: field \"pre_tokenizer.pretokenizers[0].behavior\": must be \"Isolated\"", path);
        if (get_bool(path, sp, "pre_tokenizer.pretokenizers[0]", "invert", 0, &invert)) return -1;
        if (invert) return fh_error("%s: field \"pre_tokenizer.pretokenizers[0].invert\": must be false", path);
        return check_bytelevel(path, bl, "pre_tokenizer.pretokenizers[1]", 0);
    }
    return fh_error("%s: field \"pre_tokenizer\": expected an object of type \"ByteLevel\" (or a Sequence of "
                    "Split + ByteLevel); byte-level BPE is the only kind supported", path);
}

static int check_pipeline(const char *path, const cJSON *root) {
    if (!is_null(cJSON_GetObjectItemCaseSensitive(root, "normalizer")))
        return fh_error("%s: field \"normalizer\": must be null (normalizers are not supported)", path);
    if (check_pre_tokenizer(path, root)) return -1;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!cJSON_IsObject(d) || !type_of(d) || strcmp(type_of(d), "ByteLevel"))
        return fh_error("%s: field \"decoder\": expected an object of type \"ByteLevel\"", path);
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (!is_null(pp) && (!type_of(pp) || strcmp(type_of(pp), "ByteLevel")))
        return fh_error("%s: field \"post_processor\": must be null or of type \"ByteLevel\" (others add tokens)", path);
    return 0;
}

static int check_model_options(const char *path, const cJSON *model) {
    const char *ty = type_of(model);
    if (cJSON_HasObjectItem(model, "type") && (!ty || strcmp(ty, "BPE")))
        return fh_error("%s: field \"model.type\": expected \"BPE\"", path);
    static const char *must_be_null[] = {"dropout", "unk_token"};
    for (int i = 0; i < 2; i++)
        if (!is_null(cJSON_GetObjectItemCaseSensitive(model, must_be_null[i])))
            return fh_error("%s: field \"model.%s\": must be null (not supported by this byte-level BPE)", path,
                            must_be_null[i]);
    static const char *must_be_empty[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, must_be_empty[i]);
        if (!is_null(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return fh_error("%s: field \"model.%s\": must be null (not supported by this byte-level BPE)", path,
                            must_be_empty[i]);
    }
    int fb;
    if (get_bool(path, model, "model", "byte_fallback", 0, &fb)) return -1;
    if (fb) return fh_error("%s: field \"model.byte_fallback\": must be false", path);
    return 0;
}

/* Ids index arrays, so an id far beyond any real vocabulary is a corrupt file,
 * not a request for gigabytes (doubling the capacity past 2^30 also overflows). */
#define TOK_MAX_ID (1 << 24)

/* grows the id-indexed arrays to hold id */
static int fit_id(Tokenizer *t, int id, int *cap) {
    if (id >= TOK_MAX_ID)
        return fh_error("tokenizer: id %d is over the limit of %d ids; the file is corrupt", id, TOK_MAX_ID);
    if (id < *cap) { if (id >= t->n_ids) t->n_ids = id + 1; return 0; }
    int c = *cap ? *cap : 1024;
    while (c <= id) c *= 2;
    char **s = realloc(t->str, c * sizeof *s);
    if (s) t->str = s;
    char **b = realloc(t->bytes, c * sizeof *b);
    if (b) t->bytes = b;
    uint32_t *nb = realloc(t->nbytes, c * sizeof *nb);
    if (nb) t->nbytes = nb;
    if (!s || !b || !nb) return fh_error("tokenizer: out of memory for %d ids", c);
    for (int i = *cap; i < c; i++) { t->str[i] = NULL; t->bytes[i] = NULL; t->nbytes[i] = 0; }
    *cap = c;
    if (id >= t->n_ids) t->n_ids = id + 1;
    return 0;
}

/* an integer id in [0, 2^31) */
static int get_id(const cJSON *v, int *id) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2147483647.0 || v->valuedouble != (int)v->valuedouble)
        return -1;
    *id = (int)v->valuedouble;
    return 0;
}

static int load_vocab(const char *path, const cJSON *model, Tokenizer *t, StrMap *by_str, int *cap) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return fh_error("%s: field \"model.vocab\": expected an object of token -> id", path);
    if (strmap_init(by_str, (size_t)cJSON_GetArraySize(vocab))) return -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id;
        if (get_id(e, &id))
            return fh_error("%s: field \"model.vocab\": token \"%s\" has no valid id (expected an integer >= 0)", path,
                            e->string);
        if (fit_id(t, id, cap)) return -1;
        if (t->str[id]) return fh_error("%s: field \"model.vocab\": id %d is given to both \"%s\" and \"%s\"", path, id,
                                        t->str[id], e->string);
        size_t sl = strlen(e->string), bl;
        int64_t *slot = strmap_put(by_str, e->string, sl, -1);
        if (!slot) return -1;
        if (*slot >= 0) return fh_error("%s: field \"model.vocab\": token \"%s\" appears twice", path, e->string);
        *slot = id;
        if (!(t->str[id] = strdup(e->string))) return fh_error("tokenizer: out of memory");
        /* tokens outside the byte-level alphabet (none in a byte-level vocab)
         * decode to their own UTF-8 text */
        if (bytelevel_decode(e->string, sl, &t->bytes[id], &bl)) {
            fh_clear_error();
            if (!(t->bytes[id] = strdup(e->string))) return fh_error("tokenizer: out of memory");
            bl = sl;
        }
        t->nbytes[id] = (uint32_t)bl;
    }
    return 0;
}

static int load_added(const char *path, const cJSON *root, Tokenizer *t, int *cap) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (is_null(arr)) return 0;
    if (!cJSON_IsArray(arr)) return fh_error("%s: field \"added_tokens\": expected an array", path);
    int n = cJSON_GetArraySize(arr), k = 0;
    if (!(t->added = calloc(n ? n : 1, sizeof *t->added))) return fh_error("tokenizer: out of memory");
    for (const cJSON *e = arr->child; e; e = e->next, k++) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%d]", k);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        int id, flag;
        if (!cJSON_IsObject(e) || get_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
            return fh_error("%s: field \"%s.id\": expected an integer >= 0", path, where);
        if (!cJSON_IsString(c) || !c->valuestring[0])
            return fh_error("%s: field \"%s.content\": expected a non-empty string", path, where);
        static const char *unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (int i = 0; i < 3; i++) {
            if (get_bool(path, e, where, unsupported[i], 0, &flag)) return -1;
            if (flag) return fh_error("%s: field \"%s.%s\": must be false (not supported)", path, where, unsupported[i]);
        }
        AddedToken *a = &t->added[t->n_added++];
        if (get_bool(path, e, where, "special", 0, &a->special)) return -1;
        a->id = id;
        a->len = strlen(c->valuestring);
        if (!(a->content = strdup(c->valuestring))) return fh_error("tokenizer: out of memory");
        if (fit_id(t, id, cap)) return -1;
        /* an added token decodes to its content, whether or not the model's vocab has it */
        free(t->bytes[id]);
        if (!(t->bytes[id] = strdup(a->content))) return fh_error("tokenizer: out of memory");
        t->nbytes[id] = (uint32_t)a->len;
    }
    return 0;
}

/* one merge: "a b" or ["a", "b"] -> the two token strings */
static int merge_parts(const cJSON *m, char *buf, size_t bufsz, const char **a, const char **b) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ') || strlen(s) >= bufsz) return -1;
        memcpy(buf, s, strlen(s) + 1);
        buf[sp - s] = 0;
        *a = buf;
        *b = buf + (sp - s) + 1;
        return 0;
    }
    const cJSON *x = cJSON_GetArrayItem(m, 0), *y = cJSON_GetArrayItem(m, 1);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(x) || !cJSON_IsString(y)) return -1;
    *a = x->valuestring;
    *b = y->valuestring;
    return 0;
}

static int load_merges(const char *path, const cJSON *model, Tokenizer *t, const StrMap *by_str) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (is_null(arr)) arr = NULL;
    else if (!cJSON_IsArray(arr)) return fh_error("%s: field \"model.merges\": expected an array", path);
    int n = arr ? cJSON_GetArraySize(arr) : 0, r = 0;
    if (u64map_init(&t->merges, (size_t)n) || !(t->merge_list = malloc((n ? n : 1) * sizeof *t->merge_list)))
        return fh_error("tokenizer: out of memory for %d merges", n);
    char buf[1024], cat[1024];
    for (const cJSON *m = arr ? arr->child : NULL; m; m = m->next, r++) {
        const char *a, *b;
        if (merge_parts(m, buf, sizeof buf, &a, &b))
            return fh_error("%s: field \"model.merges[%d]\": expected \"left right\" (one space) or [\"left\", "
                            "\"right\"]", path, r);
        const int64_t *ia = strmap_get(by_str, a, strlen(a)), *ib = strmap_get(by_str, b, strlen(b));
        if (!ia || !ib)
            return fh_error("%s: field \"model.merges[%d]\": token \"%s\" is not in model.vocab", path, r, ia ? b : a);
        size_t la = strlen(a), lb = strlen(b);
        if (la + lb >= sizeof cat) return fh_error("%s: field \"model.merges[%d]\": token too long", path, r);
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb + 1);
        const int64_t *ic = strmap_get(by_str, cat, la + lb);
        if (!ic)
            return fh_error("%s: field \"model.merges[%d]\": the merged token \"%s\" is not in model.vocab", path, r,
                            cat);
        /* a pair listed twice keeps its last rank, as HF does */
        uint64_t *v = u64map_put(&t->merges, pair_key((int)*ia, (int)*ib), 0);
        if (!v) return -1;
        *v = (uint64_t)r << 32 | (uint32_t)*ic;
        t->merge_list[r][0] = (int)*ia;
        t->merge_list[r][1] = (int)*ib;
    }
    t->n_merges = r;
    return 0;
}

Tokenizer *tokenizer_load(const char *path) {
    size_t len;
    char *text = read_all(path, &len);
    if (!text) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    Tokenizer *t = calloc(1, sizeof *t);
    StrMap by_str = {0};
    int cap = 0, rc = -1;
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        fh_error("%s: not valid JSON (near byte %ld)", path, at ? (long)(at - text) : -1L);
    } else if (!t) {
        fh_error("tokenizer: out of memory");
    } else if (!cJSON_IsObject(root)) {
        fh_error("%s: expected a JSON object at the top level", path);
    } else {
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
        int ig;
        if (!cJSON_IsObject(model)) fh_error("%s: field \"model\": expected an object (a BPE model)", path);
        else if (!check_pipeline(path, root) && !check_model_options(path, model) &&
                 !get_bool(path, model, "model", "ignore_merges", 0, &ig) &&
                 !load_vocab(path, model, t, &by_str, &cap) && !load_added(path, root, t, &cap) &&
                 !load_merges(path, model, t, &by_str)) {
            t->ignore_merges = ig;
            if (!t->n_ids) fh_error("%s: field \"model.vocab\": is empty", path);
            else rc = tokenizer_finish(t);
        }
    }
    strmap_free(&by_str);
    cJSON_Delete(root);
    free(text);
    if (rc) { tokenizer_free(t); return NULL; }
    return t;
}

/* ---- saving ---- */

static cJSON *bytelevel_obj(int prefix) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", prefix);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", 1);
    return o;
}

static cJSON *to_json(const Tokenizer *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int k = 0; k < t->n_added; k++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", t->added[k].id);
        cJSON_AddStringToObject(a, "content", t->added[k].content);
        cJSON_AddFalseToObject(a, "single_word");
        cJSON_AddFalseToObject(a, "lstrip");
        cJSON_AddFalseToObject(a, "rstrip");
        cJSON_AddBoolToObject(a, "normalized", !t->added[k].special);
        cJSON_AddBoolToObject(a, "special", t->added[k].special);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel_obj(0));
    cJSON_AddNullToObject(root, "post_processor");
    /* HF writes add_prefix_space true here; it has no effect when decoding */
    cJSON_AddItemToObject(root, "decoder", bytelevel_obj(1));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddFalseToObject(m, "fuse_unk");
    cJSON_AddFalseToObject(m, "byte_fallback");
    cJSON_AddBoolToObject(m, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    for (int id = 0; id < t->n_ids; id++)
        if (t->str[id]) cJSON_AddNumberToObject(vocab, t->str[id], id);
    /* the compact "a b" form is unambiguous unless a token contains a space */
    int pairs = 0;
    for (int r = 0; r < t->n_merges && !pairs; r++)
        pairs = strchr(t->str[t->merge_list[r][0]], ' ') || strchr(t->str[t->merge_list[r][1]], ' ');
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (int r = 0; r < t->n_merges; r++) {
        const char *a = t->str[t->merge_list[r][0]], *b = t->str[t->merge_list[r][1]];
        if (pairs) {
            cJSON *p = cJSON_CreateArray();
            cJSON_AddItemToArray(p, cJSON_CreateString(a));
            cJSON_AddItemToArray(p, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, p);
        } else {
            size_t la = strlen(a), lb = strlen(b);
            char *s = malloc(la + lb + 2);
            if (!s) { cJSON_Delete(root); return NULL; }
            memcpy(s, a, la);
            s[la] = ' ';
            memcpy(s + la + 1, b, lb + 1);
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
            free(s);
        }
    }
    return root;
}

int tokenizer_save(const Tokenizer *t, const char *path) {
    cJSON *root = to_json(t);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return fh_error("%s: out of memory while writing the tokenizer", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) { free(text); return fh_error("out of memory"); }
    snprintf(tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(text, 1, strlen(text), f) == strlen(text) && fputc('\n', f) != EOF;
    ok = f && !fclose(f) && ok;
    free(text);
    if (!ok || rename(tmp, path)) {
        remove(tmp);
        free(tmp);
        return fh_error("%s: cannot write the tokenizer file (check the directory exists and is writable, and the "
                        "disk has space)", path);
    }
    free(tmp);
    return 0;
}
