/* trainer.h - the training loop: micro-batches with gradient accumulation,
 * AdamW, validation every N steps, a live progress line, a JSON-lines log, a
 * loss-curve SVG and atomic checkpoints, resumable exactly. */
#ifndef FLOWHN_TRAINER_H
#define FLOWHN_TRAINER_H

#include "../dist/dist.h"
#include "../model/model.h"
#include "optimizer.h"

/* Where batches come from: fills tokens/targets [B, T]; its position is saved
 * in checkpoints as a JSON object (state) and restored on resume. */
typedef struct {
    int (*next)(void *ctx, int *tokens, int *targets, int B, int T);
    char *(*state)(void *ctx);                    /* malloc'd JSON object text */
    int (*restore)(void *ctx, const char *json);  /* 0 or -1 */
    void *ctx;
} BatchSource;

typedef enum { NAN_STOP, NAN_SKIP } NanPolicy;

typedef struct {
    int batch_size, seq_len, grad_accum;
    int steps;                /* total optimizer steps */
    int val_every, val_batches;
    int ckpt_every;           /* 0: only at the end */
    const char *out_dir;      /* checkpoint.bin, log.jsonl, loss.svg go here */
    const char *resume;       /* checkpoint to resume from, or NULL */
    NanPolicy nan_policy;
    int quiet;                /* no progress line (tests) */
    int stop_after;           /* stop (after checkpointing) once this many steps are done; 0 = run to `steps` */
    int graph;                /* 1: record the step as a graph and replay it (src/train/step.h; also FLOWHN_GRAPH=1);
                               * -1: the original step, no graphs (also FLOWHN_NO_GRAPH=1); 0: the recordable
                               * step op by op (the default on a backend with graphs) */
    double baseline_loss;     /* drawn on the plot when > 0 (e.g. the unigram entropy) */
    AdamWConfig opt;
    /* Data parallelism (NULL or a world of one: this process alone). Each rank
     * passes its own slice of the data in `train`/`val` and a micro-batch of
     * batch_size sequences, so the global batch is world * batch_size * grad_accum.
     * Gradients are reduce-scattered, each rank updates its ZeRO-1 shard, the
     * parameters are all-gathered; the loss reported is the mean over ranks.
     * Only rank 0 prints, logs and writes checkpoints (the single-process
     * format: it gathers the moments), so a run resumes on any world size.
     * By default the gradients go out in one reduce-scatter after the
     * backward (the path proven on 2 GPUs); overlap (or FLOWHN_OVERLAP=1)
     * cuts the reduction into buckets queued while the backward runs
     * (src/dist/bucket.h), the same sums; it becomes the default once it has
     * run on several GPUs. bucket_reals 0: FLOWHN_BUCKET_MB, default 25 MiB. */
    Dist *dist;
    int overlap;
    size_t bucket_reals;
} TrainOptions;

typedef struct {
    int steps_done;
    double last_loss, last_val_loss, tokens_per_s;
    double *losses;           /* per step, malloc'd, steps_done entries (this run only) */
} TrainResult;

int train_run(Model *m, const TrainOptions *o, BatchSource *train, BatchSource *val, TrainResult *res);
/* Mean loss over n batches of a source (no gradient). */
int evaluate_loss(Model *m, BatchSource *src, int n_batches, int B, int T, double *loss);

#endif
