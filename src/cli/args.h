/* args.h - small, strict parsing of command-line values: every bad value is
 * reported with the flag, what was given and what is allowed. */
#ifndef FLOWHN_ARGS_H
#define FLOWHN_ARGS_H

/* Each returns 0, or prints "flowhn <cmd>: --flag ..." to stderr and returns -1. */
int arg_int(const char *cmd, const char *flag, const char *text, long lo, long hi, int *out);
int arg_double(const char *cmd, const char *flag, const char *text, double lo, double hi, double *out);
/* i must point at the flag; returns its value and advances i, or NULL after printing an error */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);

#endif
