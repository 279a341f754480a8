/* config.c - config.json parsing and validation (fields and rules in
 * docs/model-definition.md, section 1). Table-driven: every field is one row
 * naming its key, type, range and where it lives in Config. */
#include "config.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

static const char *const ARCH_NAMES[] = {"flowhn", "llama", "mamba1", "mamba2", "jamba", "shm", "hymba", NULL};
static const char *const SPLIT_NAMES[] = {"none", "ae", "fa", "fac", NULL};
static const char *const CONTEXT_NAMES[] = {"isolated", "prefix", NULL};
static const char *const POSITION_NAMES[] = {"first", "last", NULL};

typedef enum { F_INT, F_NUM, F_BOOL, F_ENUM, F_DT_RANK, F_RATIO } FieldType;

typedef struct {
    const char *key;
    FieldType type;
    size_t offset;
    double lo, hi;               /* range: [lo, hi] for integers, (0, hi] for F_NUM */
    const char *const *names;    /* enum values */
} Field;

#define OFF(f) offsetof(Config, f)
static const Field FIELDS[] = {
    {"architecture", F_ENUM, OFF(arch), 0, 0, ARCH_NAMES},
    {"hidden_size", F_INT, OFF(hidden_size), 1, 1 << 20, NULL},
    {"num_hidden_layers", F_INT, OFF(num_layers), 1, 4096, NULL},
    {"num_attention_heads", F_INT, OFF(num_heads), 1, 1 << 16, NULL},
    {"num_key_value_heads", F_INT, OFF(num_kv_heads), 1, 1 << 16, NULL},
    {"intermediate_size", F_INT, OFF(intermediate_size), 1, 1 << 22, NULL},
    {"vocab_size", F_INT, OFF(vocab_size), 2, 2147483647.0, NULL},
    {"max_position_embeddings", F_INT, OFF(max_seq_len), 1, 1 << 24, NULL},
    {"rms_norm_eps", F_NUM, OFF(norm_eps), 0, 1, NULL},
    {"use_rope", F_BOOL, OFF(use_rope), 0, 0, NULL},
    {"rope_theta", F_NUM, OFF(rope_theta), 0, 1e12, NULL},
    {"tie_word_embeddings", F_BOOL, OFF(tie_embeddings), 0, 0, NULL},
    {"initializer_range", F_NUM, OFF(init_std), 0, 10, NULL},
    {"mamba_d_state", F_INT, OFF(d_state), 1, 4096, NULL},
    {"mamba_expand", F_INT, OFF(expand), 1, 64, NULL},
    {"mamba_d_conv", F_INT, OFF(d_conv), 1, 64, NULL},
    {"mamba_dt_rank", F_DT_RANK, OFF(dt_rank), 1, 1 << 20, NULL},
    {"mamba2_d_state", F_INT, OFF(m2_d_state), 1, 4096, NULL},
    {"mamba2_headdim", F_INT, OFF(m2_headdim), 1, 1 << 16, NULL},
    {"mamba2_ngroups", F_INT, OFF(m2_ngroups), 1, 1 << 16, NULL},
    {"mamba2_chunk_size", F_INT, OFF(m2_chunk_size), 1, 1 << 16, NULL},
    {"mamba2_expand", F_INT, OFF(m2_expand), 1, 64, NULL},
    {"split_strategy", F_ENUM, OFF(split), 0, 0, SPLIT_NAMES},
    {"split_ratio", F_RATIO, OFF(split_ratio), 0, 1, NULL},
    {"split_multiple", F_INT, OFF(split_multiple), 1, 1 << 20, NULL},
    {"context", F_ENUM, OFF(context), 0, 0, CONTEXT_NAMES},
    {"attention_position", F_ENUM, OFF(attn_position), 0, 0, POSITION_NAMES},
    {"attn_layer_period", F_INT, OFF(attn_period), 1, 4096, NULL},
    {"attn_layer_offset", F_INT, OFF(attn_offset), 0, 4095, NULL},
};
#define N_FIELDS (int)(sizeof FIELDS / sizeof FIELDS[0])

const char *arch_name(Arch a) { return a >= 0 && a < ARCH_COUNT ? ARCH_NAMES[a] : "?"; }
const char *split_name(SplitStrategy s) { return s >= 0 && s < SPLIT_COUNT ? SPLIT_NAMES[s] : "?"; }
const char *context_name(ContextMode m) { return m == CONTEXT_PREFIX ? "prefix" : "isolated"; }

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    c->arch = ARCH_FLOWHN;
    c->hidden_size = 768;
    c->num_layers = 2;
    c->num_heads = 32;
    c->num_kv_heads = 8;
    c->intermediate_size = 2048;
    c->vocab_size = 65536;
    c->max_seq_len = 1024;
    c->norm_eps = 1e-6;
    c->use_rope = 0;
    c->rope_theta = 10000;
    c->tie_embeddings = 0;
    c->init_std = 0.02;
    c->d_state = 16;
    c->expand = 2;
    c->d_conv = 4;
    c->m2_d_state = 128;
    c->m2_headdim = 64;
    c->m2_ngroups = 1;
    c->m2_chunk_size = 64;
    c->m2_expand = 2;
    c->split = SPLIT_FAC;
    c->ratio_rule = RATIO_FLOPS;
    c->split_ratio = 0.5;
    c->split_multiple = 64;
    c->context = CONTEXT_ISOLATED;
    c->attn_position = ATTN_LAST;
    c->attn_period = 2;
    c->attn_offset = 1;
    c->head_dim = c->hidden_size / c->num_heads;
    c->dt_rank = (c->hidden_size + 15) / 16;   /* "auto", resolved */
}

static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b), prev[64], cur[64];
    if (n >= 63 || m >= 63) return 99;
    for (size_t j = 0; j <= m; j++) prev[j] = j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(size_t) * (m + 1));
    }
    return prev[m];
}

static void enum_list(const char *const *names, char *buf, size_t cap) {
    buf[0] = 0;
    for (int i = 0; names[i]; i++) {
        size_t u = strlen(buf);
        snprintf(buf + u, cap - u, "%s\"%s\"", i ? ", " : "", names[i]);
    }
}

/* What a JSON value is, for "expected X, got Y" messages. */
static const char *json_kind(const cJSON *v) {
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return isfinite(v->valuedouble) ? "a number" : "a non-finite number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

static int parse_field(Config *c, const Field *f, const cJSON *v, const char *origin) {
    char *base = (char *)c;
    switch (f->type) {
    case F_BOOL:
        if (!cJSON_IsBool(v))
            return fh_error("%s: field \"%s\": expected a boolean, got %s; allowed: true, false", origin, f->key,
                            json_kind(v));
        *(int *)(base + f->offset) = cJSON_IsTrue(v);
        return 0;
    case F_ENUM: {
        char allowed[256];
        enum_list(f->names, allowed, sizeof allowed);
        if (!cJSON_IsString(v))
            return fh_error("%s: field \"%s\": expected a string, got %s; allowed: %s", origin, f->key, json_kind(v),
                            allowed);
        for (int i = 0; f->names[i]; i++)
            if (!strcmp(v->valuestring, f->names[i])) { *(int *)(base + f->offset) = i; return 0; }
        return fh_error("%s: field \"%s\": unknown value \"%s\"; allowed: %s", origin, f->key, v->valuestring, allowed);
    }
    case F_RATIO: {
        const char *allowed = "\"flops\", \"measured\" or a number strictly between 0 and 1";
        if (cJSON_IsString(v)) {
            if (!strcmp(v->valuestring, "flops")) { c->ratio_rule = RATIO_FLOPS; return 0; }
            if (!strcmp(v->valuestring, "measured")) { c->ratio_rule = RATIO_MEASURED; return 0; }
            return fh_error("%s: field \"split_ratio\": unknown rule \"%s\"; allowed: %s", origin, v->valuestring,
                            allowed);
        }
        if (!cJSON_IsNumber(v))
            return fh_error("%s: field \"split_ratio\": expected a string or a number, got %s; allowed: %s", origin,
                            json_kind(v), allowed);
        double r = v->valuedouble;
        if (!isfinite(r) || r <= 0 || r >= 1)
            return fh_error("%s: field \"split_ratio\": %g is outside (0, 1); allowed: %s", origin, r, allowed);
        c->ratio_rule = RATIO_FIXED;
        c->split_ratio = r;
        return 0;
    }
    case F_DT_RANK:
        if (cJSON_IsString(v) && !strcmp(v->valuestring, "auto")) { c->dt_rank = 0; return 0; }
        __attribute__((fallthrough));   /* otherwise an integer */
    case F_INT: {
        const char *or_auto = f->type == F_DT_RANK ? "\"auto\" or " : "";
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return fh_error("%s: field \"%s\": expected an integer, got %s; allowed: %sintegers in [%.0f, %.0f]", origin,
                            f->key, json_kind(v), or_auto, f->lo, f->hi);
        if (v->valuedouble != floor(v->valuedouble))
            return fh_error("%s: field \"%s\": %g is not an integer; allowed: %sintegers in [%.0f, %.0f]", origin,
                            f->key, v->valuedouble, or_auto, f->lo, f->hi);
        if (v->valuedouble < f->lo || v->valuedouble > f->hi)
            return fh_error("%s: field \"%s\": %.0f is out of range; allowed: %sintegers in [%.0f, %.0f]", origin,
                            f->key, v->valuedouble, or_auto, f->lo, f->hi);
        *(int *)(base + f->offset) = (int)v->valuedouble;
        return 0;
    }
    case F_NUM:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
            return fh_error("%s: field \"%s\": expected a finite number, got %s; allowed: numbers in (0, %g]", origin,
                            f->key, json_kind(v), f->hi);
        if (v->valuedouble <= 0 || v->valuedouble > f->hi)
            return fh_error("%s: field \"%s\": %g is out of range; allowed: numbers in (0, %g]", origin, f->key,
                            v->valuedouble, f->hi);
        *(double *)(base + f->offset) = v->valuedouble;
        return 0;
    }
    return fh_error("%s: field \"%s\": internal error", origin, f->key);
}

/* The largest weight matrices, by the field that makes each one big: every
 * tensor is indexed with int in the ops, so none may exceed INT_MAX values. */
static int check_sizes(const Config *c, const char *origin) {
    long long H = c->hidden_size, E = (long long)c->expand * H, E2 = (long long)c->m2_expand * H;
    long long R = c->dt_rank, S = c->d_state, GN = (long long)c->m2_ngroups * c->m2_d_state;
    struct { const char *field, *what; long long n; } m[] = {
        {"vocab_size", "vocab_size * hidden_size (embedding)", (long long)c->vocab_size * H},
        {"intermediate_size", "intermediate_size * hidden_size (MLP)", (long long)c->intermediate_size * H},
        {"mamba_expand", "2 * mamba_expand * hidden_size^2 (Mamba in_proj)", 2 * E * H},
        {"mamba_d_state", "mamba_expand * hidden_size * (dt_rank + 2 * mamba_d_state) (x_proj)", E * (R + 2 * S)},
        {"mamba2_expand", "mamba2 in_proj rows * hidden_size",
         c->arch == ARCH_MAMBA2 ? (2 * E2 + 2 * GN + E2 / c->m2_headdim) * H : 0},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (m[i].n > INT_MAX)
            return fh_error("%s: field \"%s\": %s would hold %lld values, over the int limit; allowed: products up to "
                            "2^31 - 1", origin, m[i].field, m[i].what, m[i].n);
    return 0;
}

int config_validate(const Config *c, const char *origin) {
    if (c->hidden_size % c->num_heads)
        return fh_error("%s: field \"num_attention_heads\": %d does not divide hidden_size %d; allowed: a divisor of "
                        "hidden_size", origin, c->num_heads, c->hidden_size);
    if (c->num_heads % c->num_kv_heads)
        return fh_error("%s: field \"num_key_value_heads\": %d does not divide num_attention_heads %d; allowed: a "
                        "divisor of num_attention_heads", origin, c->num_kv_heads, c->num_heads);
    if (c->use_rope && (c->hidden_size / c->num_heads) % 2)
        return fh_error("%s: field \"use_rope\": RoPE needs an even head dimension, but hidden_size / "
                        "num_attention_heads = %d; allowed: false, or an even head dimension",
                        origin, c->hidden_size / c->num_heads);
    if (c->attn_offset >= c->attn_period)
        return fh_error("%s: field \"attn_layer_offset\": %d must be below attn_layer_period %d; allowed: [0, %d]",
                        origin, c->attn_offset, c->attn_period, c->attn_period - 1);
    /* only the mamba2 baseline has a Mamba-2 mixer; other architectures ignore these fields */
    long long E2 = (long long)c->m2_expand * c->hidden_size;
    if (c->arch == ARCH_MAMBA2) {
        if (E2 % c->m2_headdim)
            return fh_error("%s: field \"mamba2_headdim\": %d does not divide mamba2_expand * hidden_size = %lld; "
                            "allowed: a divisor of %lld", origin, c->m2_headdim, E2, E2);
        if ((E2 / c->m2_headdim) % c->m2_ngroups)
            return fh_error("%s: field \"mamba2_ngroups\": %d does not divide the %lld Mamba-2 heads; allowed: a "
                            "divisor of %lld", origin, c->m2_ngroups, E2 / c->m2_headdim, E2 / c->m2_headdim);
    }
    return check_sizes(c, origin);
}

static const Field *find_field(const char *key) {
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(FIELDS[i].key, key)) return &FIELDS[i];
    return NULL;
}

static int unknown_key(const char *key, const char *origin) {
    const char *best = NULL;
    size_t bd = 3;   /* suggest only within edit distance 2 */
    for (int i = 0; i < N_FIELDS; i++) {
        size_t d = edit_distance(key, FIELDS[i].key);
        if (d < bd) { bd = d; best = FIELDS[i].key; }
    }
    if (best) return fh_error("%s: field \"%s\": unknown key; did you mean \"%s\"?", origin, key, best);
    return fh_error("%s: field \"%s\": unknown key; allowed: the keys in docs/model-definition.md section 1", origin,
                    key);
}

int config_parse(Config *c, const char *json_text, const char *origin) {
    config_defaults(c);
    c->dt_rank = 0;   /* "auto" unless the file says otherwise: resolved from the file's hidden_size below */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root) {
        /* cJSON's error pointer is at (or just past) the offending character */
        const char *at = end ? end : cJSON_GetErrorPtr(), *line_start = json_text;
        int line = 1;
        for (const char *p = json_text; at && p < at && *p; p++)
            if (*p == '\n') { line++; line_start = p + 1; }
        int col = at ? (int)(at - line_start) + 1 : 1;
        /* a snippet of that line around the error */
        const char *from = at && at - line_start > 12 ? at - 12 : line_start;
        int len = 0;
        while (from[len] && from[len] != '\n' && from[len] != '\r' && len < 24) len++;
        return fh_error("%s: invalid JSON at line %d, column %d (near \"%.*s\"); check for a missing or extra comma, "
                        "quote or brace", origin, line, col, len, from);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fh_error("%s: expected a JSON object {\"key\": value, ...} at the top level", origin);
    }
    int rope_given = 0, rc = 0;
    for (cJSON *it = root->child; it && !rc; it = it->next) {
        const Field *f = find_field(it->string);
        if (!f) { rc = unknown_key(it->string, origin); break; }
        for (cJSON *prev = root->child; prev != it; prev = prev->next)
            if (!strcmp(prev->string, it->string))
                rc = fh_error("%s: field \"%s\": given twice; allowed: each key once", origin, it->string);
        if (!rc) rc = parse_field(c, f, it, origin);
        if (!strcmp(f->key, "use_rope")) rope_given = 1;
    }
    cJSON_Delete(root);
    if (rc) return rc;
    if (c->arch == ARCH_LLAMA && !rope_given) c->use_rope = 1;   /* LLaMA uses RoPE unless told otherwise */
    c->head_dim = c->hidden_size / c->num_heads;
    if (c->dt_rank == 0) c->dt_rank = (c->hidden_size + 15) / 16;
    return config_validate(c, origin);
}

int config_load(Config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return fh_error("%s: cannot open the config: %s", path, strerror(errno));
    /* read to the end rather than trusting a size: works for pipes, and a
     * directory (which fopen accepts) fails here with EISDIR */
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1 || ferror(f)) break;
        if (cap >= (1u << 24)) { free(buf); fclose(f); return fh_error("%s: over 16 MiB, not a config file", path); }
        char *grown = realloc(buf, cap * 2);
        if (!grown) { free(buf); buf = NULL; break; }
        buf = grown;
        cap *= 2;
    }
    if (!buf) { fclose(f); return fh_error("%s: out of memory reading the config", path); }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) { free(buf); return fh_error("%s: cannot read the config: %s", path, strerror(err)); }
    buf[n] = 0;
    if (strlen(buf) != n) { free(buf); return fh_error("%s: contains a NUL byte; not a JSON text file", path); }
    int rc = config_parse(c, buf, path);
    free(buf);
    return rc;
}

char *config_to_json(const Config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) { fh_error("out of memory"); return NULL; }
    const char *base = (const char *)c;
    for (int i = 0; i < N_FIELDS; i++) {
        const Field *f = &FIELDS[i];
        switch (f->type) {
        case F_INT:
        case F_DT_RANK: cJSON_AddNumberToObject(o, f->key, *(const int *)(base + f->offset)); break;
        case F_NUM: cJSON_AddNumberToObject(o, f->key, *(const double *)(base + f->offset)); break;
        case F_BOOL: cJSON_AddBoolToObject(o, f->key, *(const int *)(base + f->offset)); break;
        case F_ENUM: cJSON_AddStringToObject(o, f->key, f->names[*(const int *)(base + f->offset)]); break;
        case F_RATIO:
            if (c->ratio_rule == RATIO_FIXED) cJSON_AddNumberToObject(o, f->key, c->split_ratio);
            else cJSON_AddStringToObject(o, f->key, c->ratio_rule == RATIO_FLOPS ? "flops" : "measured");
            break;
        }
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) fh_error("out of memory");
    return s;
}
