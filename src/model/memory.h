/* memory.h - how much memory a run will need, known before anything is
 * allocated, and whether the machine has it.
 *
 * The estimate is exact by construction: it runs the real code paths
 * (model_create, optimizer_create, model_forward, model_backward,
 * optimizer_step; generator_create, generator_prefill) once on a "dry-run" op table whose alloc only records the
 * size asked for (a few bytes of host bookkeeping, no tensor memory) and
 * whose compute ops do nothing. So an allocation added to model.c or the
 * optimizer shows up here without anyone updating a formula; test_memory
 * compares the figures with what a real CPU run allocates.
 *
 * Covered: every buffer the model and optimizer get from the backend's
 * alloc (weights, gradients, AdamW m and v, activations and their gradients,
 * token/position buffers), the generator's KV cache, SSM state and scratch
 * and its prompt's prefill (the model's activations for it),
 * and the trainer's host copies of m and v made when it checkpoints. Not
 * covered (docs/decisions.md): allocator overhead, the CUDA context, op-private
 * scratch of the CUDA backend (cuBLASLt workspace, bf16 operand copies,
 * attention-backward row sums) and the transient host copy a checkpoint load
 * makes of the file. The one backend-private buffer that grows with the model,
 * CUDA training's bf16 copy of the weights, is added by memory_add_backend. */
#ifndef FLOWHN_MEMORY_H
#define FLOWHN_MEMORY_H

#include <stddef.h>

#include "../ops/backend.h"
#include "config.h"

/* What the run does with the model. */
typedef enum {
    MEMORY_INFER = 0,     /* forward with loss at [B, T] (flowhn eval) */
    MEMORY_TRAIN = 1,     /* forward + backward + AdamW at [B, T] (flowhn train, bench) */
    MEMORY_GENERATE = 2,  /* decoding B sequences after a T-token prompt prefilled in one pass (T = 0: none;
                           * flowhn generate) */
} MemoryUse;

/* Bytes, by what holds them. backend = what the backend allocates (device
 * memory on CUDA); host = host buffers beside it at the peak. */
typedef struct {
    size_t params, grads, optimizer, activations;  /* backend */
    size_t weight_copy;   /* the backend's own copies (memory_add_backend; 0 from the estimate): of the weights, and
                           * CUDA bf16 training's kept bf16 roundings of the saved product inputs (kept_bf16) */
    size_t weights_bf16;  /* what a bf16 copy of the parameters laid out tensor by tensor, each tensor's start
                           * 256-byte aligned, takes: CUDA bf16 training's copy (memory_add_backend) */
    size_t kept_bf16;     /* MEMORY_TRAIN: 2 bytes per value of every product input the model keeps for the backward
                           * (Ops.keep_bf16): CUDA bf16 training's kept roundings (memory_add_backend) */
    size_t backend;       /* params + grads + optimizer + activations + weight_copy: the backend's peak */
    size_t host;          /* the trainer's checkpoint copies of m and v (MEMORY_TRAIN) */
    size_t total;         /* backend + host */
    int use;              /* the MemoryUse estimated (MEMORY_GENERATE: activations = KV caches, states, scratch) */
    /* activations are the fused attention_rope ops' (ops.h: no rotated q, k copies); where the backend
     * composes rope and attention instead (CUDA fp32, or a head size that is not a tile width),
     * memory_add_backend adds attn_rope_unfused (those copies and their gradients) as attn_rope_added */
    size_t attn_rope_unfused, attn_rope_added;
    int head_dim;
} MemoryEstimate;

/* Fills *e for config c at batch B and sequence length T (use is a
 * MemoryUse) without allocating tensor memory. A config whose FlowHN split
 * ratio is still "measured" gets the largest figure over the n_a candidates
 * model_measure_split tries. 0, or -1 with fh_last_error() (e.g. T beyond
 * max_position_embeddings, a config that does not build). */
int model_memory_estimate(const Config *c, int B, int T, int use, MemoryEstimate *e);
/* The same for one rank of `world` data-parallel ranks (B sequences per rank):
 * the optimizer moments are the rank's ZeRO-1 share. Training is estimated
 * as the trainer runs it (model_forward_backward: the fused classifier). */
int model_memory_estimate_ranks(const Config *c, int B, int T, int use, int world, MemoryEstimate *e);

/* Adds to *e what backend be keeps beside its allocations, which the dry run
 * (backend-independent) cannot see but which grows with the model: with bf16
 * products, CUDA training keeps a bf16 copy of the parameters, 2 bytes per
 * parameter plus the padding that aligns each tensor (weights_bf16;
 * src/ops/cuda/linear.cu, Ops.train_weights; none with FLOWHN_BF16_MASTER=0), and the kept bf16 roundings of the
 * saved product inputs (kept_bf16; Ops.keep_bf16; none with FLOWHN_BF16_KEEP=0). Into weight_copy, backend and total. Call it after
 * the estimate, with the precision set, before memory_check. */
void memory_add_backend(MemoryEstimate *e, const Backend *be);

/* Bytes this process may still take from the host: the smaller of
 * MemAvailable (/proc/meminfo) and the room under any cgroup memory limit
 * (v2 memory.max - memory.current up the hierarchy, or v1
 * memory.limit_in_bytes - memory.usage_in_bytes). `source` (n bytes) names
 * where the figure came from. 0, or -1 when nothing could be read. */
int memory_available_cpu(size_t *bytes, char *source, size_t n);

/* The figure the check compares with for backend be: the host's (above) for
 * the CPU backend, be->memory()'s device_total - device_used for a device.
 * FLOWHN_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix, powers of 1024)
 * replaces the detected figure. 0, or -1 when unknown (no figure: the check
 * passes) or when FLOWHN_MEMORY_LIMIT does not parse (fh_last_error()). */
int memory_available(const Backend *be, size_t *bytes, char *source, size_t n);

/* Refuses a run that does not fit: returns -1 with fh_error naming the
 * estimate by part (GiB), what is available and where that came from, and the
 * fix; 0 when it fits or nothing is known about what is available. On a
 * device backend the backend part is checked against the device and the host
 * part against the host. */
int memory_check(const MemoryEstimate *e, const Backend *be);

/* One line summing up an estimate: "56.3 GiB (params 3.72 GiB + grads ...)"; GiB,
 * or MiB/KiB for figures under one. */
void memory_describe(const MemoryEstimate *e, char *buf, size_t n);

#endif
