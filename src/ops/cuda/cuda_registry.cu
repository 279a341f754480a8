/* cuda_registry.cu - the CUDA entry of the backend registry (../backend.h):
 * the op table plus CUDA-event timing and memory figures. Linked only into
 * CUDA builds; its definition overrides the CPU build's weak reference. */
#include <stdio.h>

#include "common.cuh"

extern "C" {
#include "../backend.h"
}

static cudaEvent_t ev_start, ev_stop;
static char device_name[320];

static const char *cuda_device(void) {
    cudaDeviceProp p;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return "CUDA device (unknown)";
    snprintf(device_name, sizeof device_name, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
             p.multiProcessorCount, p.totalGlobalMem / 1073741824.0);
    return device_name;
}

static void cuda_timer_start(void) {
    if (!ev_start) {
        CUDA_CALL(cudaEventCreate(&ev_start));
        CUDA_CALL(cudaEventCreate(&ev_stop));
    }
    CUDA_CALL(cudaEventRecord(ev_start));
}

static double cuda_timer_stop(void) {
    float ms = 0;
    CUDA_CALL(cudaEventRecord(ev_stop));
    CUDA_CALL(cudaEventSynchronize(ev_stop));
    CUDA_CALL(cudaEventElapsedTime(&ms, ev_start, ev_stop));
    return ms * 1e-3;
}

static void cuda_memory(size_t *live, size_t *peak, size_t *used, size_t *total) {
    size_t free_b = 0, total_b = 0;
    cuda_memory_stats(live, peak);
    CUDA_CALL(cudaMemGetInfo(&free_b, &total_b));
    *used = total_b - free_b;
    *total = total_b;
}

/* profile.h's marks: events recorded on the stream the ops launch on */
static void *cuda_mark_new(void) {
    cudaEvent_t e = NULL;
    cudaError_t rc = cudaEventCreate(&e);
    if (rc != cudaSuccess) {
        fh_error("cudaEventCreate: %s", cudaGetErrorString(rc));
        return NULL;
    }
    return (void *)e;
}
/* Not through CUDA_CALL: recording an event writes no device memory, so it
 * leaves cuda_epoch alone. Counted as a CUDA call (as it was), the mark
 * between every two ops retired every bf16 rounding (linear.cu slots and
 * shadows): the profiled step rounded q, k, v's shared input three times,
 * gate and up's twice, and read no producer's shadow, unlike the real step. */
static void cuda_mark_record(void *m) {
    cudaError_t e = cudaEventRecord((cudaEvent_t)m, cuda_stream());
    if (e != cudaSuccess) cuda_record_error("cudaEventRecord", cudaGetErrorString(e), __FILE__, __LINE__);
}
static double cuda_mark_ms(void *from, void *to) {
    float ms = 0;
    cudaError_t rc = cudaEventSynchronize((cudaEvent_t)to);
    if (rc == cudaSuccess) rc = cudaEventElapsedTime(&ms, (cudaEvent_t)from, (cudaEvent_t)to);
    if (rc != cudaSuccess) {
        fh_error("timing an op between two events: %s", cudaGetErrorString(rc));
        return -1;
    }
    return ms;
}
static void cuda_mark_free(void *m) { cudaEventDestroy((cudaEvent_t)m); }

extern "C" const Backend cuda_backend = {"cuda", &cuda_ops, cuda_device, cuda_ops_check, cuda_timer_start,
                                         cuda_timer_stop, cuda_memory, cuda_set_matmul_precision,
                                         cuda_matmul_precision, cuda_mark_new, cuda_mark_record, cuda_mark_ms,
                                         cuda_mark_free};
