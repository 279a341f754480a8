/* backend.h - choosing a backend by name at run time (flowhn bench --device).
 *
 * The CPU backend is always there. The CUDA entry is a weak reference that
 * only the CUDA build (src/ops/cuda/cuda.mk: build/flowhn-cuda) defines, so a
 * CPU-only build links and answers "not in this build". Besides the op table
 * a backend gives what measuring needs: a device-side timer (GPU work is
 * asynchronous, host clocks around launches would time the launches) and
 * memory figures. */
#ifndef FLOWHN_BACKEND_H
#define FLOWHN_BACKEND_H

#include <stddef.h>

#include "ops.h"

typedef struct {
    const char *name;     /* "cpu", "cuda" */
    const Ops *ops;
    /* a human-readable device description (e.g. the GPU's name) */
    const char *(*device)(void);
    /* waits for queued work; 0, or -1 with fh_last_error() if anything failed */
    int (*sync)(void);
    /* timer: start marks the stream, stop marks it again and waits; seconds between */
    void (*timer_start)(void);
    double (*timer_stop)(void);
    /* bytes the backend's allocator holds now / at most so far, and the
     * device's memory in use (all processes) and total; 0 where unknown */
    void (*memory)(size_t *alloc_live, size_t *alloc_peak, size_t *device_used, size_t *device_total);
    /* the precision of matrix products: "fp32" (every backend), and on CUDA
     * "tf32" or "bf16" (tensor cores; see src/ops/cuda/linear.cu). 0, or -1 with
     * fh_last_error() naming what this backend accepts */
    int (*set_matmul_precision)(const char *mode);
    const char *(*matmul_precision)(void);
    /* marks in the op stream, to time single ops (profile.h): a new mark (NULL
     * with fh_last_error() on failure), record it after the ops queued so far,
     * the milliseconds between two recorded marks (waits for `to`; -1 with
     * fh_last_error() on failure), free it */
    void *(*mark_new)(void);
    void (*mark_record)(void *mark);
    double (*mark_ms)(void *from, void *to);
    void (*mark_free)(void *mark);
} Backend;

/* The backend named `name` ("cpu" or "cuda"), or NULL with fh_last_error()
 * saying why (unknown name, or not compiled into this build and how to get it). */
const Backend *backend_find(const char *name);
/* Its op table, or NULL as above. */
const Ops *backend_by_name(const char *name);

#endif
