/* cmd_eval.c - `flowhn eval`: zero-shot multiple choice and LAMBADA scores
 * of a checkpoint, printed as a table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../infer/eval.h"
#include "../model/memory.h"
#include "../train/checkpoint.h"
#include "../train/data_source.h"
#include <math.h>
#include "args.h"
#include "commands.h"

static void usage(void) {
    fprintf(stderr,
            "usage: flowhn eval --checkpoint FILE --tokenizer tokenizer.json [--choices FILE.jsonl]... "
            "[--lambada FILE.jsonl] [--data DIR [--batches N] [--by-position K]] [--limit N]\n"
            "  --data      validation loss and perplexity on DIR/val_*.bin (token shards from flowhn prepare)\n"
            "  --by-position K  with --data, also the mean loss in K equal buckets of the positions 0..T-1\n"
            "              (a table, and a line 'POSLOSS bucket=i from=a to=b loss=x' per bucket, b exclusive)\n"
            "  --choices   multiple choice JSON lines (Query, Choices, label): PIQA, BoolQ, WinoGrande, ...\n"
            "  --lambada   LAMBADA JSON lines (Query, label = target word)\n"
            "  --limit     score only the first N items of each file\n");
}

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *tokp = NULL, *lambada = NULL, *choices[16];
    const char *data = NULL;
    int n_choices = 0, limit = 0, batches = 20, by_position = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!(v = arg_value("eval", argc, argv, &i))) return 2;
        if (!strcmp(a, "--checkpoint")) ckpt = v;
        else if (!strcmp(a, "--tokenizer")) tokp = v;
        else if (!strcmp(a, "--lambada")) lambada = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--batches")) { if (arg_int("eval", a, v, 1, 1 << 20, &batches)) return 2; }
        else if (!strcmp(a, "--by-position")) { if (arg_int("eval", a, v, 1, 1 << 20, &by_position)) return 2; }
        else if (!strcmp(a, "--choices")) {
            if (n_choices == 16) { fprintf(stderr, "flowhn eval: at most 16 --choices files\n"); return 2; }
            choices[n_choices++] = v;
        } else if (!strcmp(a, "--limit")) { if (arg_int("eval", a, v, 1, 100000000, &limit)) return 2; }
        else { fprintf(stderr, "flowhn eval: unknown option '%s'\n", a); usage(); return 2; }
    }
    if (!ckpt || (!tokp && (n_choices || lambada)) || (!n_choices && !lambada && !data)) { usage(); return 2; }
    if (by_position && !data) { fprintf(stderr, "flowhn eval: --by-position needs --data DIR\n"); return 2; }
    /* refused before loading when it cannot fit: the largest forward is the
     * validation batch (4 x the window) with --data, else one window */
    Config cc;
    MemoryEstimate mem;
    if (checkpoint_read_config(ckpt, &cc) ||
        model_memory_estimate(&cc, data ? 4 : 1, cc.max_seq_len, MEMORY_INFER, &mem) ||
        memory_check(&mem, backend_find("cpu"))) {
        fprintf(stderr, "flowhn eval: %s\n", fh_last_error());
        return 1;
    }
    Model m;
    if (checkpoint_load_model(ckpt, &cpu_ops, &m)) {
        fprintf(stderr, "flowhn eval: %s\n", fh_last_error());
        return 1;
    }
    const Config c = m.cfg;
    if (data) {
        /* validation loss: the same windows the trainer's validation uses */
        ShardSource vs;
        double loss;
        int T = c.max_seq_len, B = 4;
        BatchSource bs;
        double *bsum = NULL;
        long *bcount = NULL;
        if (by_position && (!(bsum = malloc(sizeof(double) * by_position)) ||
                            !(bcount = malloc(sizeof(long) * by_position)))) {
            fprintf(stderr, "flowhn eval: out of memory\n");
            free(bsum); model_free(&m);
            return 1;
        }
        if (shard_source_open(&vs, data, "val", c.vocab_size, 0, 1) ||
            (bs = shard_batch_source(&vs),
             by_position ? eval_loss_by_position(&m, &bs, batches, B, T, by_position, bsum, bcount, &loss)
                         : evaluate_loss(&m, &bs, batches, B, T, &loss))) {
            fprintf(stderr, "flowhn eval: %s\n", fh_last_error());
            free(bsum); free(bcount); model_free(&m);
            return 1;
        }
        printf("validation on %s/val_*.bin: %d batches of %d x %d tokens: loss %.4f nats/token, perplexity %.2f\n", data,
               batches, B, T, loss, exp(loss));
        if (by_position) {
            printf("\n| positions | tokens | loss | perplexity |\n|---|---|---|---|\n");
            for (int k = 0; k < by_position; k++) {
                double lk = bcount[k] ? bsum[k] / bcount[k] : 0;
                printf("| %d-%d | %ld | %.4f | %.2f |\n", (int)((long)k * T / by_position),
                       (int)((long)(k + 1) * T / by_position) - 1, bcount[k], lk, exp(lk));
            }
            printf("\n");
            for (int k = 0; k < by_position; k++)
                printf("POSLOSS bucket=%d from=%d to=%d loss=%.6f\n", k, (int)((long)k * T / by_position),
                       (int)((long)(k + 1) * T / by_position), bcount[k] ? bsum[k] / bcount[k] : 0);
        }
        free(bsum); free(bcount);
        shard_source_close(&vs);
        if (!n_choices && !lambada) { model_free(&m); return 0; }
    }
    Tokenizer *tok = tokenizer_load(tokp);
    if (!tok) { fprintf(stderr, "flowhn eval: %s\n", fh_last_error()); model_free(&m); return 1; }
    if (tokenizer_vocab_size(tok) > c.vocab_size) {
        fprintf(stderr, "flowhn eval: tokenizer %s has %d tokens but the model's vocab_size is %d; use the "
                        "tokenizer the model was trained with\n", tokp, tokenizer_vocab_size(tok), c.vocab_size);
        return 1;
    }
    printf("| task | items | acc | acc_norm |\n|---|---|---|---|\n");
    int rc = 0;
    for (int k = 0; k < n_choices; k++) {
        ChoiceResult r;
        if (eval_choices(&m, tok, choices[k], limit, 1, &r)) { fprintf(stderr, "flowhn eval: %s\n", fh_last_error()); rc = 1; continue; }
        printf("| %s | %d | %.4f | %.4f |\n", choices[k], r.n, r.acc, r.acc_norm);
        fflush(stdout);
    }
    if (lambada) {
        LambadaResult r;
        if (eval_lambada(&m, tok, lambada, limit, 1, &r)) { fprintf(stderr, "flowhn eval: %s\n", fh_last_error()); rc = 1; }
        else printf("| %s (greedy match; target ppl %.1f) | %d | %.4f | - |\n", lambada, r.ppl, r.n, r.acc);
    }
    tokenizer_free(tok);
    model_free(&m);
    return rc;
}
