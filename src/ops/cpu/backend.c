/* backend.c - the backend registry (see ../backend.h). Lives with the CPU
 * sources so every build has it; the CUDA entry comes from cuda_registry.cu
 * when the CUDA objects are linked in, else the weak reference is NULL. */
#include "../backend.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../core/error.h"

extern const Backend cuda_backend __attribute__((weak));

/* one clock for the timer and the profiler's marks: monotonic, milliseconds */
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
static double cpu_t0;
static const char *cpu_device(void) { return "host CPU (OpenMP)"; }
static int cpu_sync(void) { return 0; }
static void cpu_timer_start(void) { cpu_t0 = now_ms(); }
static double cpu_timer_stop(void) { return (now_ms() - cpu_t0) * 1e-3; }
static void cpu_memory(size_t *live, size_t *peak, size_t *used, size_t *total) {
    *live = *peak = *used = *total = 0;  /* not tracked for host memory */
}

static int cpu_set_matmul_precision(const char *mode) {
    if (!strcmp(mode, "fp32")) return 0;
    return fh_error("--precision %s: the CPU backend computes in fp32 only (tf32 and bf16 are CUDA modes)", mode);
}
static const char *cpu_matmul_precision(void) { return "fp32"; }

/* the CPU's ops finish before they return: a mark is the host's monotonic clock */
static void *cpu_mark_new(void) {
    double *m = calloc(1, sizeof *m);
    if (!m) fh_error("out of memory");
    return m;
}
static void cpu_mark_record(void *m) { *(double *)m = now_ms(); }
static double cpu_mark_ms(void *from, void *to) { return *(double *)to - *(double *)from; }

static const Backend cpu_backend = {"cpu", &cpu_ops, cpu_device, cpu_sync, cpu_timer_start, cpu_timer_stop,
                                    cpu_memory, cpu_set_matmul_precision, cpu_matmul_precision,
                                    cpu_mark_new, cpu_mark_record, cpu_mark_ms, free};

const Backend *backend_find(const char *name) {
    if (!strcmp(name, "cpu")) return &cpu_backend;
    if (!strcmp(name, "cuda")) {
        if (&cuda_backend) return &cuda_backend;
        fh_error("this build has no CUDA backend: build the CUDA-enabled tool with `make cuda` (needs nvcc; "
                 "see src/ops/cuda/cuda.mk) and run build/flowhn-cuda");
        return NULL;
    }
    fh_error("unknown device '%s': use cpu or cuda", name);
    return NULL;
}

const Ops *backend_by_name(const char *name) {
    const Backend *b = backend_find(name);
    return b ? b->ops : NULL;
}
