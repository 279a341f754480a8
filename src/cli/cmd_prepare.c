/* cmd_prepare.c - `flowhn prepare`: text or JSON-lines files -> llm.c token
 * shards DIR/train_000000.bin ... and DIR/val_000000.bin ...
 *
 * Each plain-text file is one document; each line of a .jsonl file is one
 * (its --jsonl-field string). Every document is preceded by <|endoftext|>, as
 * llm.c does. The last --val-fraction of the documents go to validation; with
 * a single document, the last fraction of its text does, cut at a line
 * boundary (that part continues the document, so it gets no <|endoftext|>).
 *
 * Two passes: the first counts documents and rejects bad JSON lines (all of
 * them, with file:line) before any tokenising; the second encodes documents
 * in parallel batches and fills shards of --shard-tokens tokens in order, so
 * memory holds one shard plus one batch of text. */
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
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

/* ---- shard output: tokens of one split, written a full shard at a time ---- */

typedef struct {
    const char *dir, *split;
    int vocab;
    long per_shard;
    int *buf;
    long n, cap;          /* pending tokens (always < per_shard between calls) */
    int shards;
    long tokens;
} ShardOut;

static int out_flush(ShardOut *o) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s_%06d.bin", o->dir, o->split, o->shards);
    if (shard_write(path, o->buf, o->n, o->vocab)) return -1;
    printf("  wrote %s (%ld tokens)\n", path, o->n);
    fflush(stdout);
    o->shards++;
    o->tokens += o->n;
    o->n = 0;
    return 0;
}

static int out_push(ShardOut *o, const int *ids, long n) {
    while (n > 0) {
        long take = o->per_shard - o->n < n ? o->per_shard - o->n : n;
        if (o->n + take > o->cap) {
            long cap = o->cap ? o->cap : 1 << 16;
            while (cap < o->n + take) cap *= 2;
            if (cap > o->per_shard) cap = o->per_shard;
            int *p = realloc(o->buf, sizeof(int) * (size_t)cap);
            if (!p) return fh_error("out of memory holding %ld tokens for %s/%s_%06d.bin", cap, o->dir, o->split, o->shards);
            o->buf = p;
            o->cap = cap;
        }
        memcpy(o->buf + o->n, ids, sizeof(int) * (size_t)take);
        o->n += take;
        ids += take;
        n -= take;
        if (o->n == o->per_shard && out_flush(o)) return -1;
    }
    return 0;
}

/* Removes DIR/<split>_NNNNNN.bin left by an earlier, larger run, so the
 * glob DIR/<split>_*.bin sees exactly this run's shards. */
static int remove_stale(const ShardOut *o) {
    int removed = 0;
    for (int k = o->shards;; k++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s_%06d.bin", o->dir, o->split, k);
        if (unlink(path) != 0) break;
        removed++;
    }
    return removed;
}

/* ---- a batch of text pieces, encoded in parallel, pushed in order ---- */

typedef struct {
    char *text;           /* owned when the batch owns it (JSON lines), else points into a file buffer */
    size_t len;
    int doc_start;        /* a document begins here: <|endoftext|> goes first */
    ShardOut *out;
} Piece;

typedef struct {
    Piece *p;
    int n, cap, owned;
    size_t bytes;
    ShardOut *last;       /* where the previous piece went */
} Batch;

/* flush once a batch holds this much text or this many pieces */
#define BATCH_BYTES (8u << 20)
#define BATCH_PIECES 4096
/* plain text is cut into pieces of about this size for parallel encoding */
#define PIECE_BYTES (1u << 20)

static int batch_add(Batch *b, char *text, size_t len, int doc_start, ShardOut *out) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 256;
        Piece *p = realloc(b->p, sizeof(Piece) * (size_t)cap);
        if (!p) return fh_error("out of memory queueing documents");
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = (Piece){text, len, doc_start, out};
    b->bytes += len;
    return 0;
}

/* Frees the queued pieces without encoding them. */
static void batch_clear(Batch *b) {
    for (int i = 0; b->owned && i < b->n; i++) free(b->p[i].text);
    b->n = 0;
    b->bytes = 0;
}

static int batch_flush(Batch *b, const Tokenizer *t, int eot) {
    int **ids = calloc((size_t)b->n + 1, sizeof(int *));
    size_t *n = calloc((size_t)b->n + 1, sizeof(size_t));
    char err[512] = "";
    int rc = ids && n ? 0 : fh_error("out of memory encoding %d documents", b->n);
    if (!rc) {
        #pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < b->n; i++)
            if (tokenizer_encode(t, b->p[i].text, b->p[i].len, &ids[i], &n[i])) {
                /* fh_error's message is per thread: carry it out of the loop */
                #pragma omp critical
                if (!err[0]) snprintf(err, sizeof err, "%s", fh_last_error());
            }
        if (err[0]) rc = fh_error("%s", err);
    }
    for (int i = 0; i < b->n && !rc; i++) {
        Piece *p = &b->p[i];
        /* train's pieces all come before val's: finish train's last shard at the switch */
        if (b->last && p->out != b->last && b->last->n) rc = out_flush(b->last);
        b->last = p->out;
        if (!rc && p->doc_start) rc = out_push(p->out, &eot, 1);
        if (!rc) rc = out_push(p->out, ids[i], (long)n[i]);
    }
    for (int i = 0; ids && i < b->n; i++) free(ids[i]);
    free(ids);
    free(n);
    batch_clear(b);
    return rc;
}

static int printable(char c) { return c > ' ' && c < 127; }

/* A cut before text[i] that the GPT-2 pre-tokeniser cannot see: a lone
 * newline between printable ASCII characters is always a word of its own
 * (a run of whitespace at the end of a piece would be grouped differently),
 * so encoding the two sides apart equals encoding the whole. */
static int clean_cut(const char *text, size_t len, size_t i) {
    return i >= 2 && i < len && text[i - 1] == '\n' && printable(text[i - 2]) && printable(text[i]);
}

/* Queues text[0, len) as pieces of about PIECE_BYTES cut at clean_cut. */
static int add_text(Batch *b, char *text, size_t len, int doc_start, ShardOut *out) {
    size_t start = 0;
    while (len - start > PIECE_BYTES) {
        size_t cut = start + PIECE_BYTES;
        while (cut < len && !clean_cut(text, len, cut)) cut++;
        if (cut == len) break;
        if (batch_add(b, text + start, cut - start, doc_start, out)) return -1;
        doc_start = 0;
        start = cut;
    }
    return batch_add(b, text + start, len - start, doc_start, out);
}

/* ---- inputs ---- */

static int is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n > 6 && !strcmp(path + n - 6, ".jsonl");
}

/* One JSON line: 1 and a malloc'd *text for a document, 0 for a blank line,
 * -1 (fh_error naming path:line) for a bad one. */
static int jsonl_doc(const char *line, const char *field, const char *path, long lineno, char **text, size_t *len) {
    const char *c = line;
    while (isspace((unsigned char)*c)) c++;
    if (!*c) return 0;
    cJSON *o = cJSON_Parse(line);
    cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
    int rc = 1;
    if (!o) rc = fh_error("%s:%ld: not valid JSON", path, lineno);
    else if (!cJSON_IsObject(o)) rc = fh_error("%s:%ld: expected a JSON object, one per line", path, lineno);
    else if (!v) rc = fh_error("%s:%ld: no \"%s\" field (choose the text field with --jsonl-field)", path, lineno, field);
    else if (!cJSON_IsString(v)) rc = fh_error("%s:%ld: field \"%s\" is not a string", path, lineno, field);
    else if (!(*text = strdup(v->valuestring))) rc = fh_error("%s:%ld: out of memory", path, lineno);
    else *len = strlen(*text);
    cJSON_Delete(o);
    return rc;
}

/* Pass 1: counts documents; every bad JSON line is printed (the first 20),
 * then the pass fails. */
static int count_docs(char **inputs, int n_in, const char *field, long *n_docs, size_t *bytes) {
    long bad = 0;
    *n_docs = 0;
    *bytes = 0;
    for (int k = 0; k < n_in; k++) {
        FILE *f = fopen(inputs[k], "rb");
        if (!f) return fh_error("cannot open input %s: %s", inputs[k], strerror(errno));
        struct stat st;
        if (fstat(fileno(f), &st) == 0) *bytes += (size_t)st.st_size;
        if (!is_jsonl(inputs[k])) { (*n_docs)++; fclose(f); continue; }
        char *line = NULL, *text;
        size_t cap = 0, len;
        long lineno = 0;
        while (getline(&line, &cap, f) >= 0) {
            int r = jsonl_doc(line, field, inputs[k], ++lineno, &text, &len);
            if (r > 0) { (*n_docs)++; free(text); }
            if (r < 0 && ++bad <= 20) fprintf(stderr, "flowhn prepare: %s\n", fh_last_error());
        }
        free(line);
        fclose(f);
    }
    if (bad) return fh_error("%ld bad JSON line(s)%s; fix or remove them and run again", bad, bad > 20 ? " (first 20 above)" : " (above)");
    if (*n_docs == 0) return fh_error("no documents in the input files (only blank .jsonl lines?)");
    return 0;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fh_error("cannot open input %s: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    size_t n = fstat(fileno(f), &st) == 0 ? (size_t)st.st_size : 0;
    char *buf = malloc(n + 1);
    if (!buf || fread(buf, 1, n, f) != n) {
        fh_error("cannot read %s (%zu bytes): %s", path, n, buf ? strerror(errno) : "out of memory");
        free(buf);
        buf = NULL;
    } else {
        buf[n] = 0;
        *len = n;
    }
    fclose(f);
    return buf;
}

/* Where a single document's text is split for validation: the first line
 * boundary at or past (1 - frac) of it, a clean_cut one if there is one,
 * else the last one before; len when there is no line boundary at all. */
static size_t split_point(const char *text, size_t len, double frac) {
    size_t want = (size_t)((1 - frac) * (double)len), cut;
    for (cut = want; cut < len; cut++)
        if (clean_cut(text, len, cut)) return cut;
    for (cut = want > 0 ? want : 1; cut < len; cut++)
        if (text[cut - 1] == '\n') return cut;
    for (cut = want < len ? want : len; cut > 0; cut--)
        if (text[cut - 1] == '\n' && cut < len) return cut;
    return len;
}

static void no_split_warning(const char *path) {
    fprintf(stderr, "flowhn prepare: warning: the one document (%s) has no line boundary to split at; it all goes to "
                    "train and there is no validation shard\n", path);
}

/* Pass 2: documents [0, n_train) to train, the rest to val. */
static int encode_all(char **inputs, int n_in, const char *field, const Tokenizer *t, int eot, long n_docs, long n_train,
                      double val_frac, ShardOut *train, ShardOut *val) {
    Batch b = {0};
    long doc = 0;
    int rc = 0;
    for (int k = 0; k < n_in && !rc; k++) {
        if (!is_jsonl(inputs[k])) {
            size_t len = 0;
            char *buf = read_all(inputs[k], &len);
            if (!buf) { rc = -1; break; }
            b.owned = 0;
            if (n_docs == 1 && val_frac > 0) {
                size_t cut = split_point(buf, len, val_frac);
                if (cut == len) no_split_warning(inputs[k]);
                rc = add_text(&b, buf, cut, 1, train);
                /* the validation part continues the same document: no <|endoftext|> */
                if (!rc && cut < len) rc = add_text(&b, buf + cut, len - cut, 0, val);
            } else {
                rc = add_text(&b, buf, len, 1, doc < n_train ? train : val);
            }
            doc++;
            if (!rc) rc = batch_flush(&b, t, eot);  /* before buf goes */
            free(buf);
            continue;
        }
        FILE *f = fopen(inputs[k], "rb");
        if (!f) { rc = fh_error("cannot open input %s: %s", inputs[k], strerror(errno)); break; }
        char *line = NULL, *text;
        size_t cap = 0, len;
        long lineno = 0;
        b.owned = 1;
        while (!rc && getline(&line, &cap, f) >= 0) {
            int r = jsonl_doc(line, field, inputs[k], ++lineno, &text, &len);
            if (r < 0) { rc = -1; break; }
            if (r == 0) continue;
            /* a single JSON document is split like a single text file */
            size_t cut = n_docs == 1 && val_frac > 0 ? split_point(text, len, val_frac) : len;
            char *rest = cut < len ? strdup(text + cut) : NULL;
            if (n_docs == 1 && val_frac > 0 && cut == len) no_split_warning(inputs[k]);
            if (cut < len && !rest) { free(text); rc = fh_error("out of memory"); }
            else if ((rc = batch_add(&b, text, cut, 1, doc < n_train ? train : val))) free(text);
            if (rest && (rc || batch_add(&b, rest, len - cut, 0, val))) { free(rest); rc = -1; }
            doc++;
            if (!rc && (b.n >= BATCH_PIECES || b.bytes >= BATCH_BYTES)) rc = batch_flush(&b, t, eot);
        }
        free(line);
        fclose(f);
        if (!rc) rc = batch_flush(&b, t, eot);
    }
    batch_clear(&b);
    free(b.p);
    return rc;
}

static void usage(void) {
    fprintf(stderr,
            "usage: flowhn prepare --tokenizer tokenizer.json --input FILE [FILE...] --out DIR\n"
            "                      [--val-fraction 0.05] [--shard-tokens 100000000] [--jsonl-field text]\n"
            "  Plain-text files are one document each; in .jsonl files each line is a JSON object whose\n"
            "  --jsonl-field string is a document. Each document is preceded by <|endoftext|>. The last\n"
            "  --val-fraction of the documents (of the text, cut at a line, for a single document) go to\n"
            "  DIR/val_*.bin, the rest to DIR/train_*.bin: llm.c shards of at most --shard-tokens tokens\n"
            "  (uint16 tokens; uint32 only for vocabularies over 65,536).\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_prepare(int argc, char **argv) {
    const char *tokp = NULL, *out = NULL, *field = "text";
    char **inputs = calloc((size_t)argc + 1, sizeof(char *));
    int n_in = 0, per_shard = 100000000;
    double val_frac = 0.05;
    if (!inputs) { fprintf(stderr, "flowhn prepare: out of memory\n"); return 1; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); free(inputs); return 0; }
        if (!strcmp(a, "--input")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) inputs[n_in++] = argv[++i];
            continue;
        }
        if (!(v = arg_value("prepare", argc, argv, &i))) { free(inputs); return 2; }
        if (!strcmp(a, "--tokenizer")) tokp = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--jsonl-field")) field = v;
        else if (!strcmp(a, "--val-fraction")) { if (arg_double("prepare", a, v, 0, 0.9, &val_frac)) { free(inputs); return 2; } }
        else if (!strcmp(a, "--shard-tokens")) { if (arg_int("prepare", a, v, 1, 2147483647, &per_shard)) { free(inputs); return 2; } }
        else { fprintf(stderr, "flowhn prepare: unknown option '%s'\n", a); usage(); free(inputs); return 2; }
    }
    if (!tokp || !out || !n_in) {
        fprintf(stderr, "flowhn prepare: %s is required\n", !tokp ? "--tokenizer" : !out ? "--out" : "--input FILE");
        usage();
        free(inputs);
        return 2;
    }
    double t0 = now_s();
    Tokenizer *t = tokenizer_load(tokp);
    int rc = t ? 0 : -1, eot = t ? tokenizer_eot(t) : -1;
    if (t && eot < 0)
        rc = fh_error("%s has no <|endoftext|> token to separate documents with; train one with `flowhn tokenizer "
                      "train`, which adds it", tokp);
    long n_docs = 0, n_train = 0;
    size_t bytes = 0;
    if (!rc) rc = count_docs(inputs, n_in, field, &n_docs, &bytes);
    if (!rc && mkdir(out, 0777) && errno != EEXIST) rc = fh_error("cannot create --out %s: %s", out, strerror(errno));
    ShardOut train = {out, "train", t ? tokenizer_vocab_size(t) : 0, per_shard, NULL, 0, 0, 0, 0};
    ShardOut val = train;
    val.split = "val";
    if (!rc) {
        /* the last fraction of documents, at least one when asked for any and one always left to train */
        long n_val = (long)(val_frac * (double)n_docs + 0.5);
        if (val_frac > 0 && n_val < 1) n_val = 1;
        if (n_val > n_docs - 1) n_val = n_docs - 1;
        n_train = n_docs - n_val;
        rc = encode_all(inputs, n_in, field, t, eot, n_docs, n_train, val_frac, &train, &val);
    }
    if (!rc && train.n) rc = out_flush(&train);
    if (!rc && val.n) rc = out_flush(&val);
    if (!rc) {
        int stale = remove_stale(&train) + remove_stale(&val);
        double s = now_s() - t0;
        long total = train.tokens + val.tokens;
        printf("prepared %ld document(s) (%ld train, %ld validation%s), %.2f MB from %d file(s) in %.1f s, %.0f tokens/s\n",
               n_docs, n_train, n_docs - n_train, n_docs == 1 && val.tokens ? ": the end of the one document" : "",
               bytes / 1e6, n_in, s, total / (s > 0 ? s : 1e-9));
        printf("  train: %ld tokens in %d shard(s) %s/train_*.bin\n", train.tokens, train.shards, out);
        printf("  val:   %ld tokens in %d shard(s) %s/val_*.bin (%.1f%% of %ld tokens)\n", val.tokens, val.shards, out,
               total ? 100.0 * val.tokens / total : 0.0, total);
        if (stale) printf("  removed %d older shard(s) beyond these from a previous run in %s\n", stale, out);
    }
    if (rc) fprintf(stderr, "flowhn prepare: %s\n", fh_last_error());
    free(train.buf);
    free(val.buf);
    free(inputs);
    tokenizer_free(t);
    return rc ? 1 : 0;
}
