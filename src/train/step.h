/* step.h - one whole training step (zero grads, forward, fused classifier,
 * backward, gradient norm and clipping, AdamW) recorded once as a backend
 * graph (a CUDA graph) and replayed, where the backend can.
 *
 * Per step the host only copies the batch and a few scalars in, launches,
 * and reads the loss and the gradient norm back: the hundreds of kernel
 * launches, cuBLASLt calls and the host syncs in between (the loss readback
 * before the backward, the norm readback before AdamW) go. A first step at a
 * shape runs eagerly (it allocates the activations and every op's scratch),
 * the second is recorded and launched, later ones replay. The recording is
 * made again when the batch shape or the number of scored tokens changes
 * (1/n_valid is baked in) or when a buffer it used was freed (graph_launch
 * says so). World 1 and no gradient accumulation only (trainer.c).
 *
 * Recording is opt-in for now (`--graph`, FLOWHN_GRAPH=1): the replay is
 * checked by tests/cuda/test_cuda_graph, which has not yet passed on a GPU
 * (docs/perf-notes.md). Without it the same step runs op by op, which
 * already drops the two host syncs inside the step. */
#ifndef FLOWHN_STEP_H
#define FLOWHN_STEP_H

#include "optimizer.h"

typedef struct {
    int graphs;          /* record and replay (the backend has graph_* and they were not turned off) */
    int state;           /* 0 the next step runs eagerly, 1 it is recorded, 2 replayed */
    void *graph;
    int B, T, n_valid;   /* what the recording was made for */
    StepScalars *dev;    /* backend memory */
    int replays, recordings;
} TrainStep;

/* Whether the backend has what the step needs (fused classifier, device sums, adamw_step). */
int train_step_supported(const Ops *ops);
/* The environment's say: FLOWHN_NO_GRAPH=1 -> -1 (no graphs, and the trainer's
 * original step); FLOWHN_GRAPH=1 -> 1 (record the step); else 0. */
int train_step_graph_env(void);
/* use_graphs: 0 runs the same step eagerly (every step), 1 records it where the
 * backend can. 0 or -1. */
int train_step_init(TrainStep *s, const Model *m, int use_graphs);
void train_step_free(TrainStep *s, const Model *m);
/* One step on tokens/targets [B, T] (host): *loss and *gnorm (norm before
 * clipping) as model_forward_backward + optimizer_step give them. -1 with
 * fh_last_error() when the loss or the gradient is not finite (no update was
 * made and o->step is unchanged, as optimizer_step) or on a backend error. */
int train_step_run(TrainStep *s, Model *m, Optimizer *o, const int *tokens, const int *targets, int B, int T,
                   double *loss, double *gnorm);

#endif
