/* fuzz_common.h - what the fuzz targets share.
 *
 * Each fuzz/fuzz_<name>.c defines `static int fuzz_<name>_one(data, size)`
 * (the whole test of one input) and, unless FUZZ_NO_MAIN is defined, the
 * libFuzzer entry point calling it. tests/test_fuzz_regressions.c defines
 * FUZZ_NO_MAIN and includes every target, so the normal build replays the
 * corpora through exactly the same code. Names are prefixed per target
 * because they all end up in that one translation unit. */
#ifndef FLOWHN_FUZZ_COMMON_H
#define FLOWHN_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_tmp_path[64];

static inline void fuzz_tmp_remove(void) {
    if (fuzz_tmp_path[0]) unlink(fuzz_tmp_path);
}

/* Writes the input to one temp file per process (in /dev/shm when it exists,
 * else /tmp; created once, rewritten per input) and returns its path, for
 * parsers that take a path. Aborts if the file cannot be written: that is a
 * broken harness, not a finding. */
static inline const char *fuzz_tmp_file(const uint8_t *data, size_t size) {
    if (!fuzz_tmp_path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_tmp_path, sizeof fuzz_tmp_path, "%s/flowhn-fuzz-XXXXXX", dir);
        int fd = mkstemp(fuzz_tmp_path);
        if (fd < 0) { perror("fuzz: mkstemp"); abort(); }
        close(fd);
        atexit(fuzz_tmp_remove);
    }
    FILE *f = fopen(fuzz_tmp_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) { perror("fuzz: temp file"); abort(); }
    return fuzz_tmp_path;
}

/* The input as a NUL-terminated string (malloc'd). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#endif
