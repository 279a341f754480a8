/* cmd_tokenizer.c - `flowhn tokenizer train|encode|decode|bench`: the
 * byte-level BPE tokenizer (src/data/tokenizer.h) from the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/error.h"
#include "../data/tokenizer.h"
#include "args.h"
#include "commands.h"

static void usage(void) {
    fprintf(stderr,
            "usage: flowhn tokenizer train  --input FILE... --vocab-size N --out tokenizer.json\n"
            "       flowhn tokenizer encode --tokenizer tokenizer.json [--input FILE] [--ids]\n"
            "       flowhn tokenizer decode --tokenizer tokenizer.json\n"
            "       flowhn tokenizer bench  --tokenizer tokenizer.json --input FILE [--repeat N]\n"
            "  train:  learns byte-level BPE merges (GPT-2 pre-tokenisation) from the files; the vocabulary is\n"
            "          256 byte tokens + merges + <|endoftext|>, which is also recognised in the input text.\n"
            "  encode: text from --input or standard input; prints one 'id<TAB>token' line per token, or with\n"
            "          --ids the ids alone, space-separated on one line.\n"
            "  decode: reads whitespace-separated ids on standard input, writes the text.\n"
            "  bench:  encode speed in MB/s on one thread (best of --repeat runs, default 3).\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* whole file (or stdin for NULL) into memory */
static char *slurp(const char *path, size_t *len) {
    FILE *f = path ? fopen(path, "rb") : stdin;
    if (!f) { fprintf(stderr, "flowhn tokenizer: cannot open '%s'\n", path); return NULL; }
    size_t cap = 1 << 20, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, (cap *= 2) + 1);
            if (!b) { free(buf); buf = NULL; }
            buf = b;
        }
    }
    int err = ferror(f);
    if (path) fclose(f);
    if (!buf || err) {
        fprintf(stderr, "flowhn tokenizer: cannot read '%s'\n", path ? path : "standard input");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int do_train(int argc, char **argv) {
    const char **inputs = calloc(argc, sizeof *inputs);
    const char *out = NULL;
    int n_in = 0, vocab = 0, rc = 2;
    if (!inputs) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); free(inputs); return 0; }
        if (!strcmp(a, "--input")) { /* takes every following argument up to the next option */
            if (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2)) {
                fprintf(stderr, "flowhn tokenizer train: --input needs at least one file\n");
                goto done;
            }
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) inputs[n_in++] = argv[++i];
            continue;
        }
        if (!(v = arg_value("tokenizer train", argc, argv, &i))) goto done;
        if (!strcmp(a, "--vocab-size")) { if (arg_int("tokenizer train", a, v, 257, 1 << 24, &vocab)) goto done; }
        else if (!strcmp(a, "--out")) out = v;
        else { fprintf(stderr, "flowhn tokenizer train: unknown option '%s'\n", a); usage(); goto done; }
    }
    if (!n_in || !vocab || !out) {
        fprintf(stderr, "flowhn tokenizer train: --input, --vocab-size and --out are required\n");
        usage();
        goto done;
    }
    char **texts = calloc(n_in, sizeof *texts);
    size_t *lens = calloc(n_in, sizeof *lens), total = 0;
    rc = texts && lens ? 0 : 1;
    for (int k = 0; k < n_in && !rc; k++) {
        if (!(texts[k] = slurp(inputs[k], &lens[k]))) rc = 1;
        else total += lens[k];
    }
    if (!rc) {
        double t0 = now_s();
        Tokenizer *t = tokenizer_train((const char *const *)texts, lens, n_in, vocab);
        if (!t || tokenizer_save(t, out)) {
            fprintf(stderr, "flowhn tokenizer train: %s\n", fh_last_error());
            rc = 1;
        } else {
            fprintf(stderr, "trained %d tokens on %.2f MB in %.2f s -> %s\n", tokenizer_vocab_size(t), total / 1e6,
                    now_s() - t0, out);
        }
        tokenizer_free(t);
    }
    for (int k = 0; texts && k < n_in; k++) free(texts[k]);
    free(texts);
    free(lens);
done:
    free(inputs);
    return rc;
}

/* one token's bytes, with C escapes for anything not printable ASCII */
static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c >= 0x20 && c < 0x7F) putchar(c);
        else printf("\\x%02x", c);
    }
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(); return argc < 2 ? 2 : 0; }
    const char *sub = argv[1];
    if (!strcmp(sub, "train")) return do_train(argc - 1, argv + 1);
    if (strcmp(sub, "encode") && strcmp(sub, "decode") && strcmp(sub, "bench")) {
        fprintf(stderr, "flowhn tokenizer: unknown subcommand '%s'\n", sub);
        usage();
        return 2;
    }
    const char *tokp = NULL, *input = NULL;
    int ids_only = 0, repeat = 3;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--ids") && !strcmp(sub, "encode")) { ids_only = 1; continue; }
        if (!(v = arg_value("tokenizer", argc, argv, &i))) return 2;
        if (!strcmp(a, "--tokenizer")) tokp = v;
        else if (!strcmp(a, "--input") && strcmp(sub, "decode")) input = v;
        else if (!strcmp(a, "--repeat") && !strcmp(sub, "bench")) { if (arg_int("tokenizer", a, v, 1, 1000, &repeat)) return 2; }
        else { fprintf(stderr, "flowhn tokenizer %s: unknown option '%s'\n", sub, a); usage(); return 2; }
    }
    if (!tokp || (!strcmp(sub, "bench") && !input)) {
        fprintf(stderr, "flowhn tokenizer %s: %s required\n", sub,
                strcmp(sub, "bench") ? "--tokenizer is" : "--tokenizer and --input are");
        return 2;
    }
    Tokenizer *t = tokenizer_load(tokp);
    if (!t) { fprintf(stderr, "flowhn tokenizer: %s\n", fh_last_error()); return 1; }
    size_t len = 0;
    char *text = slurp(input, &len);
    int rc = text ? 0 : 1;
    if (!rc && !strcmp(sub, "decode")) {
        size_t n = 0, cap = 1024;
        int *ids = malloc(cap * sizeof *ids);
        char *p = text, *end;
        while (ids && !rc) {
            while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
            if (!*p) break;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || v > 2147483647L) {
                fprintf(stderr, "flowhn tokenizer decode: '%.*s' is not a token id\n", (int)strcspn(p, " \t\r\n,"), p);
                rc = 1;
                break;
            }
            p = end;
            if (n == cap) {
                int *b = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!b) { free(ids); ids = NULL; break; }
                ids = b;
            }
            ids[n++] = (int)v;
        }
        size_t olen;
        char *out = !ids ? (fh_error("out of memory"), NULL) : rc ? NULL : tokenizer_decode(t, ids, n, &olen);
        if (!out && !rc) { fprintf(stderr, "flowhn tokenizer decode: %s\n", fh_last_error()); rc = 1; }
        if (out) fwrite(out, 1, olen, stdout);
        free(out);
        free(ids);
    } else if (!rc && !strcmp(sub, "encode")) {
        int *ids;
        size_t n;
        if (tokenizer_encode(t, text, len, &ids, &n)) {
            fprintf(stderr, "flowhn tokenizer encode: %s\n", fh_last_error());
            rc = 1;
        } else {
            for (size_t i = 0; i < n; i++) {
                if (ids_only) { printf(i ? " %d" : "%d", ids[i]); continue; }
                size_t bl;
                char *piece = tokenizer_decode(t, &ids[i], 1, &bl);
                printf("%d\t", ids[i]);
                if (piece) print_escaped(piece, bl);
                putchar('\n');
                free(piece);
            }
            if (ids_only) putchar('\n');
            free(ids);
        }
    } else if (!rc) { /* bench */
        double best = 1e30;
        size_t n = 0;
        for (int r = 0; r < repeat && !rc; r++) {
            int *ids;
            double t0 = now_s();
            if (tokenizer_encode(t, text, len, &ids, &n)) {
                fprintf(stderr, "flowhn tokenizer bench: %s\n", fh_last_error());
                rc = 1;
                break;
            }
            double dt = now_s() - t0;
            if (dt < best) best = dt;
            free(ids);
        }
        if (!rc)
            printf("encode: %.2f MB, %zu tokens (%.2f bytes/token), best of %d: %.3f s = %.1f MB/s (1 thread)\n",
                   len / 1e6, n, n ? (double)len / n : 0.0, repeat, best, len / 1e6 / best);
    }
    free(text);
    tokenizer_free(t);
    return rc;
}
