/* cmd_info.c - `flowhn info`: parameters by group, FLOPs per token and the
 * FlowHN split chosen per layer, for a config at a sequence length. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../model/flops.h"
#include "../model/layout.h"
#include "../model/memory.h"
#include "../model/model.h"
#include "commands.h"

static const char *group_of(const ParamEntry *e) {
    const char *n = e->name;
    if (!strcmp(n, "embed.weight")) return "embedding";
    if (!strcmp(n, "lm_head.weight")) return "lm_head";
    if (strstr(n, "norm")) return "norms";
    if (strstr(n, ".q_proj.") || strstr(n, ".k_proj.") || strstr(n, ".v_proj.") || strstr(n, ".o_proj."))
        return "attention";
    if (strstr(n, ".mlp.")) return "mlp";
    if (strstr(n, ".fuse.weight")) return "fusion";
    /* the FlowHN/Hymba block's own projection: "layers.<l>.out_proj.weight" (a mixer's is deeper) */
    const char *p = strncmp(n, "layers.", 7) ? NULL : strchr(n + 7, '.');
    if (p && !strcmp(p, ".out_proj.weight")) return "fusion";
    return "ssm";
}

static void usage(void) {
    fprintf(stderr, "usage: flowhn info --config FILE [--seq-len T] [--batch B]\n"
                    "  prints parameters by group, FLOPs per token, the FlowHN split per layer and the\n"
                    "  memory a run needs (training at batch B, default 8, as flowhn train)\n");
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int T = 0, B = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) path = argv[++i];
        else if ((!strcmp(argv[i], "--seq-len") || !strcmp(argv[i], "--batch")) && i + 1 < argc) {
            char *end;
            const char *opt = argv[i];
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1 << 24) {
                fprintf(stderr, "flowhn info: %s must be an integer in [1, 16777216], got '%s'\n", opt, argv[i]);
                return 2;
            }
            if (!strcmp(opt, "--batch")) B = (int)v;
            else T = (int)v;
        } else if (!strcmp(argv[i], "--help")) { usage(); return 0; }
        else { fprintf(stderr, "flowhn info: unknown option '%s'\n", argv[i]); usage(); return 2; }
    }
    if (!path) { usage(); return 2; }
    Config c;
    if (config_load(&c, path)) { fprintf(stderr, "flowhn info: %s\n", fh_last_error()); return 1; }
    if (!T) T = c.max_seq_len;
    if (c.ratio_rule == RATIO_MEASURED) c.ratio_rule = RATIO_FLOPS;   /* info has no device to time */
    ParamLayout L;
    if (layout_build(&L, &c)) { fprintf(stderr, "flowhn info: %s\n", fh_last_error()); return 1; }

    printf("%s: %s, hidden %d, layers %d, heads %d/%d kv, mlp %d, vocab %d%s\n", path, arch_name(c.arch),
           c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.intermediate_size, c.vocab_size,
           c.tie_embeddings ? ", tied embeddings" : "");
    static const char *groups[] = {"embedding", "attention", "ssm", "mlp", "fusion", "norms", "lm_head"};
    size_t counts[7] = {0};
    for (int i = 0; i < L.n; i++)
        for (int g = 0; g < 7; g++)
            if (!strcmp(group_of(&L.entries[i]), groups[g])) counts[g] += L.entries[i].numel;
    printf("\nparameters            count   share\n");
    for (int g = 0; g < 7; g++)
        if (counts[g]) printf("  %-12s %14zu  %5.1f%%\n", groups[g], counts[g], 100.0 * counts[g] / L.total);
    printf("  %-12s %14zu  (%.1fM)\n", "total", L.total, L.total / 1e6);

    LayerMacs *lm = calloc(c.num_layers, sizeof(LayerMacs));
    uint64_t macs = macs_model_forward(&c, T, lm);
    double fwd = 2.0 * macs / T;
    printf("\nFLOPs per token at T = %d: forward %.4g, training (3x) %.4g  (%.2f GFLOP per training token)\n", T,
           fwd, 3 * fwd, 3 * fwd / 1e9);
    if (c.arch == ARCH_FLOWHN) {
        int na = model_split_na(&c, T);
        printf("\nsplit %s, context %s, attention %s, ratio rule %s: n_a = %d of %d (ratio %.4f)\n",
               split_name(c.split), context_name(c.context), c.attn_position == ATTN_FIRST ? "first" : "last",
               c.ratio_rule == RATIO_FIXED ? "fixed" : "flops", na, T, (double)na / T);
        printf("  layer   n_a   n_ssm   attn GFLOP   ssm GFLOP   attn/ssm   fusion GFLOP\n");
        for (int l = 0; l < c.num_layers; l++)
            printf("  %5d %5d %7d %12.4f %11.4f %10.3f %14.4f\n", l, lm[l].na, lm[l].ns, 2e-9 * lm[l].attn_branch,
                   2e-9 * lm[l].ssm_branch, lm[l].ssm_branch ? (double)lm[l].attn_branch / lm[l].ssm_branch : 0,
                   2e-9 * lm[l].fusion);
    }
    free(lm);
    layout_free(&L);

    /* what the backend will allocate (fp32), as flowhn train, eval and generate estimate it */
    const struct { const char *what; int use, B, T; } runs[] = {
        {"training", MEMORY_TRAIN, B, T}, {"eval (forward)", MEMORY_INFER, 1, T}, {"generate+prompt", MEMORY_GENERATE, 1, T}};
    printf("\nmemory (fp32 backend allocations; flowhn train/bench/eval/generate refuse a run that does not fit):\n");
    for (int r = 0; r < 3; r++) {
        MemoryEstimate e;
        char line[512];
        if (model_memory_estimate(&c, runs[r].B, runs[r].T, runs[r].use, &e)) {
            fprintf(stderr, "flowhn info: %s\n", fh_last_error());
            return 1;
        }
        memory_describe(&e, line, sizeof line);
        printf("  %-15s batch %d x %-5d %s\n", runs[r].what, runs[r].B, runs[r].T, line);
    }
    size_t avail;
    char src[256];
    if (memory_available_cpu(&avail, src, sizeof src) == 0)
        printf("  host memory available: %.3g GiB (%s)\n", avail / 1073741824.0, src);
    return 0;
}
