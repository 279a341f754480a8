/* error.h - library errors are returned, never exited on.
 *
 * A failing library function sets a message with fh_error() and returns a
 * nonzero status (or NULL). The CLI prints fh_last_error() and exits. The
 * message should name the file, the field and the fix. */
#ifndef FLOWHN_ERROR_H
#define FLOWHN_ERROR_H

#include <stddef.h>

/* Records a printf-style message; always returns -1 so callers can write
 * `return fh_error("...")`. */
int fh_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The most recent message ("" if none). Thread-local. */
const char *fh_last_error(void);
void fh_clear_error(void);

/* malloc/calloc that record an error naming what was being allocated. */
void *fh_malloc(size_t bytes, const char *what);
void *fh_calloc(size_t count, size_t size, const char *what);

#endif
