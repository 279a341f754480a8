/* cmd_prepare.c - `flowhn prepare`: text or JSON-lines files -> llm.c token
 * shards (DIR/train_000000.bin ..., DIR/val_000000.bin ...) with the given
 * tokenizer; each document is preceded by <|endoftext|>, as llm.c does. */
#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/error.h"
#include "../data/shards.h"
#include "../data/tokenizer.h"
#include "args.h"
#include "commands.h"

typedef struct { int *ids; size_t n, cap; } Ids;

static int push(Ids *v, const int *ids, size_t n) {
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 1 << 20;
        while (cap < v->n + n) cap *= 2;
        int *p = realloc(v->ids, sizeof(int) * cap);
        if (!p) return fh_error("out of memory holding %zu tokens", v->n + n);
        v->ids = p;
        v->cap = cap;
    }
    memcpy(v->ids + v->n, ids, sizeof(int) * n);
    v->n += n;
    return 0;
}

/* A document: <|endoftext|> then its tokens. */
static int add_doc(Ids *v, const Tokenizer *t, const char *text, size_t len) {
    int eot = tokenizer_eot(t), *ids = NULL;
    size_t n = 0;
    if (eot >= 0 && push(v, &eot, 1)) return -1;
    if (tokenizer_encode(t, text, len, &ids, &n)) return -1;
    int rc = push(v, ids, n);
    free(ids);
    return rc;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fh_error("cannot open %s: %s", path, strerror(errno)); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); fh_error("cannot read %s", path); return NULL; }
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Writes tokens as DIR/<split>_NNNNNN.bin shards of at most per_shard tokens. */
static int write_shards(const char *dir, const char *split, const int *ids, size_t n, size_t per_shard, int vocab,
                        int *n_shards) {
    *n_shards = 0;
    for (size_t start = 0; start < n; start += per_shard) {
        size_t cnt = n - start < per_shard ? n - start : per_shard;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s_%06d.bin", dir, split, *n_shards);
        if (shard_write(path, ids + start, (long)cnt, vocab)) return -1;
        (*n_shards)++;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: flowhn prepare --tokenizer tokenizer.json --input FILE [FILE...] --out DIR\n"
                    "                      [--val-fraction 0.05] [--shard-tokens 100000000] [--jsonl-field text]\n"
                    "  .jsonl files: one JSON object per line, the document in --jsonl-field; other files are plain text\n"
                    "  (one document each). The last --val-fraction of the tokens (at a document boundary when there are\n"
                    "  several documents) go to DIR/val_*.bin, the rest to DIR/train_*.bin.\n");
}

int cmd_prepare(int argc, char **argv) {
    const char *tokp = NULL, *out = NULL, *field = "text", *inputs[256];
    int n_in = 0, per_shard = 100000000;
    double val_frac = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--input")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) && n_in < 256) inputs[n_in++] = argv[++i];
            continue;
        }
        if (!(v = arg_value("prepare", argc, argv, &i))) return 2;
        if (!strcmp(a, "--tokenizer")) tokp = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--jsonl-field")) field = v;
        else if (!strcmp(a, "--val-fraction")) { if (arg_double("prepare", a, v, 0, 0.9, &val_frac)) return 2; }
        else if (!strcmp(a, "--shard-tokens")) { if (arg_int("prepare", a, v, 1024, 2000000000, &per_shard)) return 2; }
        else { fprintf(stderr, "flowhn prepare: unknown option '%s'\n", a); usage(); return 2; }
    }
    if (!tokp || !out || !n_in) { usage(); return 2; }
    Tokenizer *t = tokenizer_load(tokp);
    if (!t) { fprintf(stderr, "flowhn prepare: %s\n", fh_last_error()); return 1; }
    if (mkdir(out, 0777) && errno != EEXIST) { fprintf(stderr, "flowhn prepare: cannot create %s: %s\n", out, strerror(errno)); return 1; }
    Ids all = {0};
    size_t *doc_start = NULL, n_docs = 0, cap_docs = 0, bytes = 0;
    clock_t t0 = clock();
    int rc = 0;
    for (int k = 0; k < n_in && !rc; k++) {
        size_t len;
        char *buf = read_file(inputs[k], &len);
        if (!buf) { rc = -1; break; }
        bytes += len;
        size_t ni = strlen(inputs[k]);
        int jsonl = ni > 6 && !strcmp(inputs[k] + ni - 6, ".jsonl");
        char *line = buf, *end = buf + len;
        long lineno = 0;
        while (!rc && line < end) {
            char *nl = jsonl ? memchr(line, '\n', (size_t)(end - line)) : NULL;
            char *stop = jsonl ? (nl ? nl : end) : end;
            lineno++;
            if (n_docs == cap_docs) {
                cap_docs = cap_docs ? 2 * cap_docs : 1024;
                size_t *p = realloc(doc_start, sizeof(size_t) * cap_docs);
                if (!p) { rc = fh_error("out of memory"); break; }
                doc_start = p;
            }
            if (jsonl) {
                *stop = 0;
                if (stop > line) {
                    cJSON *o = cJSON_Parse(line);
                    cJSON *txt = o ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
                    if (!cJSON_IsString(txt))
                        rc = fh_error("%s:%ld: expected a JSON object with a string field \"%s\" (--jsonl-field)", inputs[k], lineno, field);
                    else {
                        doc_start[n_docs++] = all.n;
                        rc = add_doc(&all, t, txt->valuestring, strlen(txt->valuestring));
                    }
                    cJSON_Delete(o);
                }
            } else {
                doc_start[n_docs++] = all.n;
                rc = add_doc(&all, t, line, (size_t)(stop - line));
            }
            line = stop + 1;
        }
        free(buf);
    }
    if (!rc) {
        /* validation: the last fraction, cut at a document boundary when there are several */
        size_t n_val = (size_t)(val_frac * all.n), cut = all.n - n_val;
        if (n_docs > 1 && n_val > 0) {
            size_t best = cut;
            for (size_t d = 1; d < n_docs; d++)
                if (doc_start[d] <= cut) best = doc_start[d];
            if (best > 0 && best < all.n) cut = best;
        }
        int ns_train = 0, ns_val = 0;
        int vocab = tokenizer_vocab_size(t);
        rc = write_shards(out, "train", all.ids, cut, (size_t)per_shard, vocab, &ns_train);
        if (!rc && cut < all.n) rc = write_shards(out, "val", all.ids + cut, all.n - cut, (size_t)per_shard, vocab, &ns_val);
        double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
        if (!rc)
            printf("prepared %zu documents, %.2f MB -> %zu tokens (%zu train in %d shard(s), %zu validation in %d) in "
                   "%.1f s (%.0f tokens/s) -> %s\n", n_docs, bytes / 1e6, all.n, cut, ns_train, all.n - cut, ns_val, s,
                   all.n / (s > 0 ? s : 1e-9), out);
    }
    if (rc) fprintf(stderr, "flowhn prepare: %s\n", fh_last_error());
    free(all.ids);
    free(doc_start);
    tokenizer_free(t);
    return rc ? 1 : 0;
}
