/* cmd_init.c - `flowhn init`: a freshly initialised model from a config,
 * written as a (weights-only) checkpoint. */
#include <stdio.h>
#include <string.h>

#include "../core/error.h"
#include "../train/checkpoint.h"
#include "args.h"
#include "commands.h"

int cmd_init(int argc, char **argv) {
    const char *cfg = NULL, *out = NULL;
    int seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) {
            fprintf(stderr, "usage: flowhn init --config FILE --out checkpoint.bin [--seed S]\n");
            return 0;
        }
        if (!(v = arg_value("init", argc, argv, &i))) return 2;
        if (!strcmp(a, "--config")) cfg = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--seed")) { if (arg_int("init", a, v, 0, 2147483647, &seed)) return 2; }
        else { fprintf(stderr, "flowhn init: unknown option '%s'\n", a); return 2; }
    }
    if (!cfg || !out) { fprintf(stderr, "usage: flowhn init --config FILE --out checkpoint.bin [--seed S]\n"); return 2; }
    Config c;
    Model m;
    OptimizerView none = {NULL, NULL};
    if (config_load(&c, cfg) || model_create(&m, &c, &cpu_ops)) {
        fprintf(stderr, "flowhn init: %s\n", fh_last_error());
        return 1;
    }
    if (model_init_params(&m, (uint64_t)seed) || checkpoint_save(out, &m, none, NULL)) {
        fprintf(stderr, "flowhn init: %s\n", fh_last_error());
        model_free(&m);
        return 1;
    }
    printf("wrote %s: %s, %zu parameters, seed %d\n", out, arch_name(c.arch), m.layout.total, seed);
    model_free(&m);
    return 0;
}
