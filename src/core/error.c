#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[2048];

int fh_error(const char *fmt, ...) {
    /* format into a scratch buffer first: callers often wrap the previous
     * message, passing fh_last_error() as an argument */
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return -1;
}

const char *fh_last_error(void) { return last_error; }
void fh_clear_error(void) { last_error[0] = 0; }

void *fh_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fh_error("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *fh_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fh_error("out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
