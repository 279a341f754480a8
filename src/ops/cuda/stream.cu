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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

static cudaStream_t streams[CUDA_BRANCHES];  /* [0] = 0: the legacy default stream (or the capture stream) */
static int current, enabled = -1;
static cudaStream_t capture_stream;         /* the main sequence while a graph is recorded */
static cudaEvent_t ev_fork, ev_join[CUDA_BRANCHES];
static int capturing;
static unsigned long capture_gen;           /* cuda_free_gen when the recording began */
unsigned long cuda_free_gen;

int cuda_capturing(void) { return capturing; }

/* common.cuh cuda_launch: PDL in recorded graphs unless FLOWHN_PDL=0 (read once) */
static int pdl_on = -1;
int cuda_set_pdl(int on) { return cuda_env_switch(&pdl_on, "FLOWHN_PDL", "0", 1, on); }
int cuda_pdl_enabled(void) { return capturing && (pdl_on >= 0 ? pdl_on : cuda_set_pdl(-1)); }

/* the gemv products under PDL (linear.cu; for the A/B of which part helps:
 * docs/perf-notes.md "decode-pdl2"): FLOWHN_PDL_GEMV=1 their _pdl kernels
 * (first weight loads before the wait) for every product; 0 plain launches of
 * main's kernels while the other decode kernels keep PDL; 2 PDL launches of
 * main's code after a wait at the top (the early launch without the early
 * loads); unset or 3 ("auto") the _pdl kernels for products of at most
 * GEMV_PDL_AUTO_MAX weights and main's plainly above: session 8 call 1
 * measured the _pdl kernels 12% faster at llama-135m (launch-bound) and 15%
 * slower at llama-1b (bandwidth-bound, where their registers cost occupancy). */
static int pdl_gemv_on = -1;
int cuda_set_pdl_gemv(int on) {
    if (pdl_gemv_on < 0) {
        const char *e = getenv("FLOWHN_PDL_GEMV");
        pdl_gemv_on = !e ? 3 : !strcmp(e, "0") ? 0 : !strcmp(e, "1") ? 1 : !strcmp(e, "2") ? 2 : 3;
    }
    int was = pdl_gemv_on;
    if (on >= 0) pdl_gemv_on = on > 3 ? 3 : on;
    return was;
}
int cuda_pdl_gemv_enabled(void) {
    if (!cuda_pdl_enabled()) return 0;
    return pdl_gemv_on >= 0 ? pdl_gemv_on : cuda_set_pdl_gemv(-1);
}

/* the branch streams wait for the main sequence (entering a parallel block) */
static void fork_branches(void) {
    CUDA_CALL(cudaEventRecord(ev_fork, streams[0]));
    for (int b = 1; b < CUDA_BRANCHES; b++) CUDA_CALL(cudaStreamWaitEvent(streams[b], ev_fork, 0));
}
/* the main sequence waits for both branches (leaving it) */
static void join_branches(void) {
    for (int b = 1; b < CUDA_BRANCHES; b++) {
        CUDA_CALL(cudaEventRecord(ev_join[b], streams[b]));
        CUDA_CALL(cudaStreamWaitEvent(streams[0], ev_join[b], 0));
    }
}

/* the branch streams and the events, made outside any recording */
static int make_branch_streams(void) {
    for (int b = 1; b < CUDA_BRANCHES; b++)
        if (!streams[b] && cudaStreamCreate(&streams[b]) != cudaSuccess) {
            cuda_record_error("cudaStreamCreate", "cannot create a branch stream", __FILE__, __LINE__);
            streams[b] = 0;
            return -1;
        }
    if (!ev_fork) {
        CUDA_CALL(cudaEventCreateWithFlags(&ev_fork, cudaEventDisableTiming));
        for (int b = 1; b < CUDA_BRANCHES; b++) CUDA_CALL(cudaEventCreateWithFlags(&ev_join[b], cudaEventDisableTiming));
    }
    return 0;
}

cudaStream_t cuda_stream(void) { return streams[current]; }
int cuda_branch(void) { return current; }

void cuda_set_branch(int b) {
    if (enabled < 0) {
        const char *e = getenv("FLOWHN_BRANCH_STREAMS");
        enabled = e && !strcmp(e, "1");
    }
    if (b < 0 || b >= CUDA_BRANCHES || !enabled) { current = 0; return; }
    if (b && !streams[b] && (capturing || make_branch_streams())) b = 0;  /* none made while recording */
    /* while recording, the fork and join are explicit (outside, the legacy stream's rules give them) */
    if (capturing && streams[1] && streams[2]) {
        if (current == 0 && b != 0) fork_branches();
        else if (current != 0 && b == 0) join_branches();
    }
    current = b;
}

/* Opts `kernel` in to `bytes` of dynamic shared memory, once per kernel and
 * size: the attribute calls then happen in the first (eager) step only, not
 * while a graph is recorded, and cost no host time later. */
void cuda_func_smem(const void *kernel, size_t bytes) {
    static struct { const void *k; size_t bytes; } done[64];
    static int n_done;
    for (int i = 0; i < n_done; i++)
        if (done[i].k == kernel) {
            if (done[i].bytes >= bytes) return;
            CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
            done[i].bytes = bytes;
            return;
        }
    CUDA_CALL(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (n_done < 64) { done[n_done].k = kernel; done[n_done].bytes = bytes; n_done++; }
}

/* ---- graph capture (ops.h graph_*) ---- */
typedef struct {
    cudaGraphExec_t exec;
    unsigned long gen;   /* cuda_free_gen at recording: buffers it uses were live then */
    int stales;          /* it writes trained weights without their bf16 copy (cuda_weights_before_replay) */
} Graph;

int cuda_graph_begin(void) {
    if (capturing) return fh_error("a CUDA graph is already being recorded");
    if (!capture_stream && cudaStreamCreateWithFlags(&capture_stream, cudaStreamNonBlocking) != cudaSuccess) {
        capture_stream = 0;
        return fh_error("cannot create the CUDA graph capture stream");
    }
    if (enabled > 0 && make_branch_streams()) return cuda_ops_check();
    cuda_weights_before_recording();   /* the trained weights' bf16 copy current: the recorded products read it */
    cuda_keep_before_recording();      /* no kept rounding from before is served inside */
    /* everything queued before runs first (the recording does not order itself after it) */
    if (cuda_ops_check()) return -1;
    current = 0;
    streams[0] = capture_stream;
    /* thread-local mode: an unsafe call from this thread (a synchronous copy,
     * an allocation) fails the recording instead of silently syncing */
    /* a value computed before from device data (the cuDNN attention's RoPE table) is computed again inside:
     * the graph then contains its kernel and a replay recomputes it from whatever the inputs hold then */
    cuda_host_writes++;
    cudaError_t e = cudaStreamBeginCapture(capture_stream, cudaStreamCaptureModeThreadLocal);
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);  /* no bf16 rounding from before is reused inside */
    if (e != cudaSuccess) {
        streams[0] = 0;
        return fh_error("cudaStreamBeginCapture failed: %s", cudaGetErrorString(e));
    }
    capturing = 1;
    capture_gen = cuda_free_gen;
    return 0;
}

void *cuda_graph_end(void) {
    if (!capturing) { fh_error("cuda_graph_end without cuda_graph_begin"); return NULL; }
    /* the recorded ops did not run: nothing computed inside the recording may be reused after it (the cuDNN
     * attention's RoPE table, attention_cudnn.cu) */
    cuda_host_writes++;
    if (current != 0) cuda_set_branch(0);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(capture_stream, &graph);
    capturing = 0;
    streams[0] = 0;
    current = 0;
    /* the recorded ops did not run: roundings the recording "made" are not in the scratch */
    __atomic_add_fetch(&cuda_epoch, 1, __ATOMIC_RELAXED);
    /* an op that failed while recording (e.g. an allocation) set the sticky error: the recording
     * is abandoned, nothing ran, so the error is taken back and reported here instead */
    int op_failed = cuda_ops_check();
    char why[512];
    snprintf(why, sizeof why, "%s", op_failed ? fh_last_error() : "");
    cudaGetLastError();  /* clear the runtime's last error too */
    Graph *g = NULL;
    if (e == cudaSuccess && !op_failed && capture_gen == cuda_free_gen) {
        g = (Graph *)calloc(1, sizeof(Graph));
        if (g && cudaGraphInstantiate(&g->exec, graph, 0) != cudaSuccess) {
            cudaGetLastError();
            free(g);
            g = NULL;
            snprintf(why, sizeof why, "cudaGraphInstantiate failed");
        }
        if (g) {
            g->gen = capture_gen;
            g->stales = cuda_weights_recording_stales();
        }
    } else if (e != cudaSuccess && !op_failed) {
        snprintf(why, sizeof why, "cudaStreamEndCapture: %s", cudaGetErrorString(e));
    } else if (!op_failed) {
        snprintf(why, sizeof why, "backend memory was freed while recording");
    }
    if (graph) cudaGraphDestroy(graph);
    if (!g) fh_error("recording the step as a CUDA graph failed (%s)", why);
    return g;
}

int cuda_graph_launch(void *graph) {
    Graph *g = (Graph *)graph;
    if (!g) return fh_error("no CUDA graph to launch");
    if (g->gen != cuda_free_gen) return 1;  /* a buffer it uses may be gone: record again */
    cuda_host_writes++;   /* the replay rewrote the recorded ops' outputs (tables cached by eager calls) */
    cuda_weights_before_replay(g->stales);  /* parameters uploaded since: their bf16 copy made again first */
    CUDA_CALL(cudaGraphLaunch(g->exec, 0));
    return 0;
}

void cuda_graph_free(void *graph) {
    Graph *g = (Graph *)graph;
    if (!g) return;
    CUDA_CALL(cudaGraphExecDestroy(g->exec));
    free(g);
}
