/* nccl_dist.cu - the Dist collectives (src/dist/dist.h) on NCCL, for the CUDA
 * build. dist_init reaches dist_nccl_create through a weak reference, so the
 * CPU build links without NCCL.
 *
 * The communicator is non-blocking (ncclConfig_t.blocking = 0) so that no
 * NCCL call can block the host forever: every call is followed by a wait,
 * with a deadline, that polls ncclCommGetAsyncError, and every collective's
 * completion is waited for on an event with the same deadline. A rank that
 * died or hangs therefore turns into "rank R: collective X did not complete
 * within N s" (or NCCL's own error when it notices the broken connection
 * first), after which the communicator is aborted and d->failed is set. */
#include <nccl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.cuh"

extern "C" {
#include "../../dist/dist.h"
#include "../../dist/rendezvous.h"
}

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;   /* a blocking stream: ordered after the model's legacy-stream work and before what follows */
    cudaEvent_t done;
    double *dbuf;          /* device scratch for all_reduce_host */
    /* the overlapped gradient reduction (reduce_async): a non-blocking stream,
     * so that it neither waits for the backward's later kernels on the legacy
     * stream nor makes them wait (a blocking stream would serialise both ways);
     * it is ordered by events instead: `ready` recorded on the compute stream
     * and waited on here, `ov_done` polled by wait_async. Made on first use. */
    cudaStream_t ov;
    cudaEvent_t ready, ov_done;
    int ov_pending;
} Nccl;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void nap(void) {
    struct timespec ts = {0, 200000L};   /* 0.2 ms: short against a collective, idle enough for the CPU */
    nanosleep(&ts, NULL);
}

/* Aborts the communicator (this frees a kernel stuck waiting on a dead peer)
 * and records the failure. */
static int fail(Dist *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Dist *d, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Nccl *n = (Nccl *)d->impl;
    if (n && n->comm && !d->failed) ncclCommAbort(n->comm);
    if (n) n->comm = NULL;
    d->failed = 1;
    return fh_error("%s", msg);
}

/* After a call on the non-blocking communicator: waits until it has left the
 * ncclInProgress state. */
static int settle(Dist *d, ncclResult_t r, const char *what, double deadline) {
    Nccl *n = (Nccl *)d->impl;
    for (;;) {
        if (r == ncclSuccess) return 0;
        if (r != ncclInProgress)
            return fail(d, "rank %d: %s failed: %s (%s) (a rank died or hangs, or NCCL could not connect)", d->rank, what,
                        ncclGetErrorString(r), ncclGetLastError(n->comm));
        if (now_s() > deadline)
            return fail(d, "rank %d: collective %s did not complete within %g s (a rank died or hangs)", d->rank, what,
                        d->timeout_s);
        nap();
        if (ncclCommGetAsyncError(n->comm, &r) != ncclSuccess) r = ncclSystemError;
    }
}

/* Waits for the work queued on stream s (event ev), with the deadline. */
static int finish_on(Dist *d, cudaStream_t s, cudaEvent_t ev, const char *what, double deadline) {
    Nccl *n = (Nccl *)d->impl;
    CUDA_CALL(cudaEventRecord(ev, s));
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady)
            return fail(d, "rank %d: collective %s: CUDA error %s", d->rank, what, cudaGetErrorString(e));
        ncclResult_t r;
        if (ncclCommGetAsyncError(n->comm, &r) != ncclSuccess || (r != ncclSuccess && r != ncclInProgress))
            return fail(d, "rank %d: collective %s failed: %s (a rank died or hangs)", d->rank, what, ncclGetErrorString(r));
        if (now_s() > deadline)
            return fail(d, "rank %d: collective %s did not complete within %g s (a rank died or hangs)", d->rank, what,
                        d->timeout_s);
        nap();
    }
}

/* Waits for the work queued on the communicator's stream, with the deadline. */
static int finish(Dist *d, const char *what, double deadline) {
    Nccl *n = (Nccl *)d->impl;
    return finish_on(d, n->stream, n->done, what, deadline);
}

static int usable(Dist *d, const char *what) {
    if (!d->failed) return 0;
    return fh_error("rank %d: %s: the communicator was aborted by an earlier failure", d->rank, what);
}

static int nccl_reduce_scatter(Dist *d, const real *send, real *recv, size_t count, const char *what) {
    if (usable(d, what)) return -1;
    Nccl *n = (Nccl *)d->impl;
    double deadline = now_s() + d->timeout_s;
    cuda_weights_written(recv, sizeof(real) * count);
    if (settle(d, ncclReduceScatter(send, recv, count, ncclFloat, ncclSum, n->comm, n->stream), what, deadline)) return -1;
    return finish(d, what, deadline);
}

static int nccl_all_gather(Dist *d, const real *send, real *recv, size_t count, const char *what) {
    if (usable(d, what)) return -1;
    Nccl *n = (Nccl *)d->impl;
    double deadline = now_s() + d->timeout_s;
    /* the parameters' all-gather after ZeRO-1's update: AdamW wrote this rank's shard and its bf16 copy, the
     * others' shards arrive here, so the copy is made again before the next product (linear.cu) */
    cuda_weights_written(recv, sizeof(real) * count * (size_t)d->world);
    if (settle(d, ncclAllGather(send, recv, count, ncclFloat, n->comm, n->stream), what, deadline)) return -1;
    return finish(d, what, deadline);
}

static int nccl_reduce_async(Dist *d, real *buf, const DistPiece *p, int k, const char *what) {
    if (usable(d, what)) return -1;
    Nccl *n = (Nccl *)d->impl;
    if (!n->ov) {
        if (cudaStreamCreateWithFlags(&n->ov, cudaStreamNonBlocking) != cudaSuccess ||
            cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming) != cudaSuccess ||
            cudaEventCreateWithFlags(&n->ov_done, cudaEventDisableTiming) != cudaSuccess)
            return fh_error("rank %d: cannot create the overlapped communication stream", d->rank);
    }
    /* after the gradients queued so far on the compute (legacy) stream, which also waits for the branch
     * streams, those being blocking streams */
    CUDA_CALL(cudaEventRecord(n->ready, 0));
    CUDA_CALL(cudaStreamWaitEvent(n->ov, n->ready, 0));
    double deadline = now_s() + d->timeout_s;
    /* one group: the pieces of a bucket that straddles shards go out together */
    if (settle(d, ncclGroupStart(), what, deadline)) return -1;
    for (int i = 0; i < k; i++) {
        real *x = buf + p[i].offset;
        cuda_weights_written(x, sizeof(real) * p[i].count);
        ncclResult_t r = ncclReduce(x, x, p[i].count, ncclFloat, ncclSum, p[i].root, n->comm, n->ov);
        if (r != ncclSuccess && r != ncclInProgress) {
            ncclGroupEnd();
            return settle(d, r, what, deadline);
        }
    }
    if (settle(d, ncclGroupEnd(), what, deadline)) return -1;
    n->ov_pending = 1;
    /* the event calls' errors, without cuda_ops_check's device synchronization: that would wait for this
     * bucket's reduce and the backward queued so far (no overlap left, and no deadline on the wait) */
    return cuda_ops_failed();
}

static int nccl_wait_async(Dist *d, const char *what) {
    if (usable(d, what)) return -1;
    Nccl *n = (Nccl *)d->impl;
    if (!n->ov_pending) return 0;
    if (finish_on(d, n->ov, n->ov_done, what, now_s() + d->timeout_s)) return -1;
    n->ov_pending = 0;
    return 0;
}

static int nccl_all_reduce_host(Dist *d, double *x, int k, const char *what) {
    if (usable(d, what)) return -1;
    if (k < 1 || k > 16) return fh_error("%s: all_reduce_host takes 1 to 16 values, got %d", what, k);
    Nccl *n = (Nccl *)d->impl;
    double deadline = now_s() + d->timeout_s;
    CUDA_CALL(cudaMemcpyAsync(n->dbuf, x, sizeof(double) * k, cudaMemcpyHostToDevice, n->stream));
    if (settle(d, ncclAllReduce(n->dbuf, n->dbuf, k, ncclDouble, ncclSum, n->comm, n->stream), what, deadline)) return -1;
    if (finish(d, what, deadline)) return -1;
    CUDA_CALL(cudaMemcpy(x, n->dbuf, sizeof(double) * k, cudaMemcpyDeviceToHost));
    return cuda_ops_check();
}

static void nccl_destroy(Dist *d) {
    Nccl *n = (Nccl *)d->impl;
    if (!n) return;
    if (n->comm) {
        /* finalize flushes outstanding work; with a deadline like every other call */
        double deadline = now_s() + d->timeout_s;
        if (settle(d, ncclCommFinalize(n->comm), "finalize", deadline) == 0) ncclCommDestroy(n->comm);
    }
    if (!d->failed) {
        if (n->dbuf) cudaFree(n->dbuf);
        if (n->done) cudaEventDestroy(n->done);
        if (n->stream) cudaStreamDestroy(n->stream);
        if (n->ready) cudaEventDestroy(n->ready);
        if (n->ov_done) cudaEventDestroy(n->ov_done);
        if (n->ov) cudaStreamDestroy(n->ov);
    }
    free(n);
    d->impl = NULL;
}

extern "C" int dist_nccl_create(Dist *d, const char *rendezvous) {
    /* NVLink multicast (NVLS) stays off on these machines, whatever the environment says */
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    if (nvls && strcmp(nvls, "0"))
        fprintf(stderr, "flowhn: rank %d: NCCL_NVLS_ENABLE=%s overridden to 0 (NVLink multicast stays off)\n", d->rank, nvls);
    setenv("NCCL_NVLS_ENABLE", "0", 1);

    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1)
        return fh_error("rank %d: no CUDA device visible", d->rank);
    /* srun may give each task one GPU (CUDA_VISIBLE_DEVICES): then device 0 */
    int dev = d->local_rank % ndev;
    if (cudaSetDevice(dev) != cudaSuccess) return fh_error("rank %d: cannot select GPU %d", d->rank, dev);

    Nccl *n = (Nccl *)calloc(1, sizeof(Nccl));
    if (!n) return fh_error("out of memory");
    d->impl = n;
    d->reduce_scatter = nccl_reduce_scatter;
    d->all_gather = nccl_all_gather;
    d->all_reduce_host = nccl_all_reduce_host;
    d->reduce_async = nccl_reduce_async;
    d->wait_async = nccl_wait_async;
    d->destroy = nccl_destroy;
    if (cudaStreamCreate(&n->stream) != cudaSuccess || cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming) != cudaSuccess ||
        cudaMalloc(&n->dbuf, 16 * sizeof(double)) != cudaSuccess)
        return fh_error("rank %d: cannot create the communication stream on GPU %d", d->rank, dev);

    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (d->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) return fh_error("rank 0: ncclGetUniqueId failed: %s", ncclGetErrorString(r));
    }
    if (rendezvous_exchange(rendezvous, d->rank, d->world, &id, sizeof id, d->timeout_s)) return -1;

    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    double deadline = now_s() + d->timeout_s;
    ncclResult_t r = ncclCommInitRankConfig(&n->comm, d->world, id, d->rank, &cfg);
    if (!n->comm && r != ncclSuccess && r != ncclInProgress)
        return fh_error("rank %d: ncclCommInitRankConfig failed: %s", d->rank, ncclGetErrorString(r));
    if (settle(d, r, "communicator init", deadline)) return -1;
    /* every rank has joined, so every rank has read the id */
    rendezvous_cleanup(rendezvous, d->rank);
    return 0;
}
