#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int arg_int(const char *cmd, const char *flag, const char *text, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "flowhn %s: %s must be an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo, hi, text);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int arg_double(const char *cmd, const char *flag, const char *text, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "flowhn %s: %s must be a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

const char *arg_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "flowhn %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}
