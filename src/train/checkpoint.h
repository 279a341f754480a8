/* checkpoint.h - training checkpoints: model, optimizer moments and the
 * trainer's state (step, RNG, data position) in one file.
 *
 * File: "FLOWHNCK" | u32 version | u64 header bytes | header JSON
 *       {"config": {...}, "n_params": N, "has_optimizer": b, "state": {...}}
 *       | params f32[N] | (m f32[N] | v f32[N]) | u64 FNV-1a of all bytes before it | "FLOWHEND"
 * Written to a temporary file in the same directory, flushed, fsync'ed and
 * renamed over the target, so a crash or a full disk never leaves a torn
 * checkpoint under the real name: the previous one stays valid. Loading
 * verifies magic, sizes and the checksum, and refuses a config that differs
 * from the model's, naming the fields. */
#ifndef FLOWHN_CHECKPOINT_H
#define FLOWHN_CHECKPOINT_H

#include <stddef.h>

#include "../model/model.h"

/* host buffers of n reals, or NULL for a weights-only checkpoint */
typedef struct { const real *m, *v; } OptimizerView;

/* state_json: the trainer's own state as a JSON object text (may be NULL). */
int checkpoint_save(const char *path, const Model *model, OptimizerView opt, const char *state_json);

/* Loads into model (whose config must match the file's) and, if m/v are not
 * NULL and the file has them, the optimizer moments (host, n reals each).
 * *state_json receives a malloc'd copy of the state object (or NULL). */
int checkpoint_load(const char *path, Model *model, real *m, real *v, char **state_json);

/* Reads only the config stored in a checkpoint. */
int checkpoint_read_config(const char *path, Config *c);
/* Builds the model a checkpoint describes on `ops` and loads its weights. */
int checkpoint_load_model(const char *path, const Ops *ops, Model *m);

#endif
