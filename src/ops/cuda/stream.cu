/* stream.cu - which CUDA stream the ops launch on (cuda_stream()).
 *
 * The two branches of a parallel block (FlowHN's attention and SSM branches,
 * Hymba's heads) are independent, so the model marks them (Ops.set_branch)
 * and their kernels go to two streams that the GPU may run side by side.
 * Branch 0, everything else, is the legacy default stream; branches 1 and 2
 * are ordinary (blocking) streams. The legacy stream's rules then give fork
 * and join for free: work put on a branch stream waits for all earlier
 * stream-0 work, and the next stream-0 work waits for both branches. A kernel
 * not yet converted to cuda_stream() launches on stream 0 and is simply a
 * barrier: correct, only less parallel. Op files that keep scratch buffers
 * keep one per branch (cuda_branch()), since both branches may run at once.
 * Off by default, FLOWHN_BRANCH_STREAMS=1 turns it on: measured on the H100
 * at B 8, T 1024 (bf16) each branch already fills the GPU and two streams were
 * 1-2% slower (flowhn-fac-135m 360K vs 368K tokens/s, flowhn-ae 357K vs 361K;
 * docs/perf-notes.md); smaller batches or decode may gain. */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

static cudaStream_t streams[CUDA_BRANCHES];  /* [0] = 0: the legacy default stream */
static int current, enabled = -1;

cudaStream_t cuda_stream(void) { return streams[current]; }
int cuda_branch(void) { return current; }

void cuda_set_branch(int b) {
    if (enabled < 0) {
        const char *e = getenv("FLOWHN_BRANCH_STREAMS");
        enabled = e && !strcmp(e, "1");
    }
    if (b < 0 || b >= CUDA_BRANCHES || !enabled) { current = 0; return; }
    if (b && !streams[b] && cudaStreamCreate(&streams[b]) != cudaSuccess) {
        cuda_record_error("cudaStreamCreate", "cannot create a branch stream", __FILE__, __LINE__);
        streams[b] = 0;
        b = 0;
    }
    current = b;
}
