/* bucket.h - the gradient reduction overlapped with the backward pass.
 *
 * The backward finishes the flat gradient buffer from its end to its start
 * (Model.grads_ready reports each point: model_grad_frontiers). The buffer is
 * cut at those points into buckets of about FLOWHN_BUCKET_MB (default 25)
 * MiB, and each bucket's reduction is queued on the communication stream as
 * soon as the backward has finished it, so it runs while the backward of the
 * earlier layers goes on; the optimizer waits for the last one.
 *
 * ZeRO-1 shards stay what they are without overlap (src/dist/shard.h: rank r
 * owns one contiguous range of the flat buffer, so the optimizer, the
 * parameter all-gather and checkpoints are unchanged): a bucket is cut at the
 * shard boundaries it straddles into pieces, and each piece is summed onto the
 * rank that owns it (an NCCL reduce to that root; the pieces of one bucket go
 * in one NCCL group). Every element is then summed onto its owner exactly as
 * the single reduce-scatter does, so the update is the same; docs/decisions.md
 * says why this and not per-bucket shards, and what it costs. */
#ifndef FLOWHN_BUCKET_H
#define FLOWHN_BUCKET_H

#include <stddef.h>

#include "../model/model.h"
#include "dist.h"

typedef struct {
    size_t lo, hi;          /* [lo, hi) of the flat buffer */
    int first, n;           /* its pieces: pieces[first .. first + n) */
} Bucket;

typedef struct {
    Bucket *buckets;        /* in launch order: from the end of the buffer to its start */
    int n_buckets;
    DistPiece *pieces;      /* each within one rank's shard, root = that rank */
    int n_pieces;
    size_t total;
    int world;
} BucketPlan;

/* Cuts [0, total) into buckets whose low ends are frontiers (decreasing, the
 * last 0, each at most total; equal neighbours are allowed): walking down
 * from total, a bucket closes at the first frontier that makes it at least
 * bucket_reals long, and at 0. Then cuts each bucket at the ZeRO-1 shard
 * boundaries of `world` ranks. 0 or -1 with a message. */
int bucket_plan_build(BucketPlan *p, const size_t *frontiers, int n_frontiers, size_t total, int world,
                      size_t bucket_reals);
void bucket_plan_free(BucketPlan *p);

/* FLOWHN_BUCKET_MB as reals (default 25 MiB). */
size_t bucket_reals_from_env(void);

typedef struct {
    BucketPlan plan;
    Dist *dist;
    real *grads;
    int next;               /* the next bucket to launch in this step */
} GradReducer;

/* The plan for model m's layout (model_grad_frontiers) over d's world. */
int grad_reducer_create(GradReducer *g, const Model *m, Dist *d, size_t bucket_reals);
void grad_reducer_free(GradReducer *g);
/* A new step: no bucket launched yet; grads is the buffer to reduce. */
void grad_reducer_begin(GradReducer *g, real *grads);
/* The Model.grads_ready hook (ctx = the GradReducer): launches, in order,
 * every bucket not yet launched that lies within [off, total). Install it
 * for the last micro-batch of a step only: the earlier ones only accumulate. */
int grad_reducer_ready(void *ctx, size_t off);
/* After the backward: launches the buckets not yet launched (all of them on
 * a rank whose backward did not run, e.g. after a non-finite loss, so that
 * every rank queues the same reductions), then waits for them all. */
int grad_reducer_finish(GradReducer *g);

#endif
