/* memory.c - the CPU backend's memory: plain host memory. */
#include <stdlib.h>
#include <string.h>

#include "../../core/error.h"
#include "cpu_ops.h"

void *cpu_alloc(size_t bytes) { return fh_calloc(1, bytes, "a CPU tensor"); }
void cpu_release(void *p) { free(p); }
void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }

/* the oracle: one memset a run (host memory holds the table) */
void cpu_zero_runs(real *base, size_t span, const size_t *runs, int n) {
    (void)span;
    for (int i = 0; i < n; i++) memset(base + runs[2 * i], 0, sizeof(real) * runs[2 * i + 1]);
}
void cpu_to_host(void *dst_host, const void *src, size_t bytes) { memcpy(dst_host, src, bytes); }
void cpu_from_host(void *dst, const void *src_host, size_t bytes) { memcpy(dst, src_host, bytes); }
