/* profile.h - where a step's time goes, op by op, on any backend.
 *
 * op_profile_create(backend) returns an op table that forwards every call to
 * the backend's table and brackets each compute op with two of the backend's
 * marks (CUDA events on the op stream; host clock on the CPU), so each op's
 * time is its own span on the device, not the host's launch time. The model
 * is created on that table (model_create(&m, &c, op_profile_ops(p))); after a
 * step, op_profile_collect() waits for the marks and adds the spans to the
 * totals of the op's kind (linear_fwd, attention_bwd, ...). `flowhn bench
 * --profile` prints the table.
 *
 * What it does not do: overlap (the spans of ops on two branch streams
 * overlap; bench --profile runs without them), graphs (the profiled table has
 * no graph_*: every op is launched and timed), and the marks' own cost (a few
 * microseconds of host time per op on CUDA: the profiled step is slower than
 * the real one; the table's shares are what it is for).
 *
 * FLOPs per op are the model's convention (spec section 5, as src/model/flops.c):
 * a product's backward counts 2x its forward; attention's is counted only
 * when its queries are its keys (causal self-attention: nq (nq + 1) / 2
 * visible keys per head), otherwise left out. One profile is active at a time
 * (the wrappers are plain functions). Library code: errors returned. */
#ifndef FLOWHN_OP_PROFILE_H
#define FLOWHN_OP_PROFILE_H

#include <stdio.h>

#include "backend.h"

typedef struct OpProfile OpProfile;

/* NULL with fh_last_error() if the backend has no marks, another profile is
 * active, or memory ran out. */
OpProfile *op_profile_create(const Backend *be);
void op_profile_free(OpProfile *p);
/* The profiled op table (valid until op_profile_free). */
const Ops *op_profile_ops(OpProfile *p);
/* Marks recorded from now on (on != 0) or not (the table only forwards; the
 * state after create). */
void op_profile_enable(OpProfile *p, int on);
/* Waits for the marks of the ops run since the last collect and adds their
 * spans to the totals; counts one step. 0, or -1 with fh_last_error(). */
int op_profile_collect(OpProfile *p);
/* Forgets the totals and steps (after warm-up); drops uncollected spans. */
void op_profile_reset(OpProfile *p);

typedef struct {
    const char *name;
    long calls;
    double ms, flops;   /* totals over the collected steps */
} OpProfileRow;
/* The kinds that ran, slowest first, into rows[0 .. cap); returns how many
 * kinds ran (may exceed cap); *steps the steps collected. */
int op_profile_rows(const OpProfile *p, OpProfileRow *rows, int cap, int *steps);
/* A markdown table per step: op, calls, ms, share of the ops' time, share of
 * step_ms (the unprofiled step, 0: left out), model TFLOP/s where counted. */
void op_profile_print(const OpProfile *p, FILE *f, double step_ms);

#endif
