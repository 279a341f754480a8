/* tmpdir.h - a scratch directory per test binary: /tmp/flowhn-test-<tag>-<pid>,
 * so that binaries run at the same time (or twice at once) do not collide. */
#ifndef FLOWHN_TMPDIR_H
#define FLOWHN_TMPDIR_H

#include <stddef.h>

/* Writes the name into dir (dir_size bytes) and makes the directory. */
void test_dir_make(char *dir, size_t dir_size, const char *tag);
/* Removes dir and everything in it (best effort: a test's result does not depend on it). */
void test_dir_remove(const char *dir);

#endif
