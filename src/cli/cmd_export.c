/* cmd_export.c - `flowhn export`: checkpoint weights to safetensors + config.json. */
#include <stdio.h>
#include <string.h>

#include "../core/error.h"
#include "../train/checkpoint.h"
#include "../train/export.h"
#include "args.h"
#include "commands.h"

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            fprintf(stderr, "usage: flowhn export --checkpoint FILE --out DIR   (writes DIR/model.safetensors, DIR/config.json)\n");
            return 0;
        }
        if (!(v = arg_value("export", argc, argv, &i))) return 2;
        if (!strcmp(a, "--checkpoint")) ckpt = v;
        else if (!strcmp(a, "--out")) out = v;
        else { fprintf(stderr, "flowhn export: unknown option '%s'\n", a); return 2; }
    }
    if (!ckpt || !out) { fprintf(stderr, "usage: flowhn export --checkpoint FILE --out DIR\n"); return 2; }
    Model m;
    if (checkpoint_load_model(ckpt, &cpu_ops, &m)) {
        fprintf(stderr, "flowhn export: %s\n", fh_last_error());
        return 1;
    }
    if (export_safetensors(&m, out)) {
        fprintf(stderr, "flowhn export: %s\n", fh_last_error());
        model_free(&m);
        return 1;
    }
    printf("wrote %s/model.safetensors (%d tensors, %zu parameters) and %s/config.json\n", out, m.layout.n,
           m.layout.total, out);
    model_free(&m);
    return 0;
}
