/* dist.h - data-parallel training across processes: who am I (rank, world,
 * the GPU on this node) and the collectives the trainer needs.
 *
 * One process per GPU. The rank and world come from the launcher's
 * environment (dist_env_read): mpirun (OMPI_COMM_WORLD_*), srun (SLURM_*) or
 * `flowhn train --gpus N` (FLOWHN_*). The collectives run on the backend's
 * memory; the CUDA build implements them with NCCL (src/ops/cuda/nccl_dist.cu),
 * whose unique id travels through a rendezvous (rendezvous.h). A world of one
 * needs no communicator at all: the trainer then never calls a collective.
 *
 * Every collective is waited for with a deadline (FLOWHN_NCCL_TIMEOUT
 * seconds): a rank that dies or hangs makes the others fail with a message
 * naming the collective, never hang. After such a failure d->failed is set,
 * the communicator is aborted, and the process should exit without further
 * device work. */
#ifndef FLOWHN_DIST_H
#define FLOWHN_DIST_H

#include <stddef.h>

#include "../core/real.h"

typedef struct {
    int rank, world, local_rank;
    const char *source;   /* "single", "mpirun", "srun", "flowhn" */
} DistEnv;

/* Reads the rank variables; world 1 (rank 0) when none are set. -1 with a
 * message for inconsistent values (rank outside the world, half a set). */
int dist_env_read(DistEnv *e);

/* A run [offset, offset + count) of a buffer summed over ranks onto rank
 * root's copy (src/dist/bucket.h cuts the gradient buckets into these). */
typedef struct { size_t offset, count; int root; } DistPiece;

typedef struct Dist Dist;
struct Dist {
    int rank, world, local_rank;
    double timeout_s;     /* per collective */
    int failed;           /* a collective failed or timed out; the communicator is aborted */
    /* sum over ranks: send holds world*count reals, recv (count reals) gets
     * this rank's part, i.e. the sums of send[rank*count, (rank+1)*count).
     * In place when recv == send + rank*count. */
    int (*reduce_scatter)(Dist *d, const real *send, real *recv, size_t count, const char *what);
    /* recv (world*count reals) gets every rank's send (count reals), in rank
     * order; in place when send == recv + rank*count */
    int (*all_gather)(Dist *d, const real *send, real *recv, size_t count, const char *what);
    /* The overlapped gradient reduction (src/dist/bucket.h). reduce_async:
     * each piece of buf summed over ranks onto its root's copy, in place (the
     * other ranks' copies are left as they were), after the compute work
     * queued so far and without waiting for it: on its own stream, which
     * waits on an event recorded on the compute stream. Every rank must queue
     * the same pieces in the same order. wait_async: waits, with the deadline,
     * for everything reduce_async queued; buf may be read after it. */
    int (*reduce_async)(Dist *d, real *buf, const DistPiece *pieces, int n, const char *what);
    int (*wait_async)(Dist *d, const char *what);
    /* x[0..n) (host doubles, n <= 16) summed over ranks, in place */
    int (*all_reduce_host)(Dist *d, double *x, int n, const char *what);
    void (*destroy)(Dist *d);
    void *impl;
};

/* Sets up the process's part of the world e describes on `device` ("cpu" or
 * "cuda"): for a world of one, a Dist whose collectives are identities
 * (impl NULL), unless FLOWHN_NCCL_SINGLE=1 asks for a real NCCL communicator
 * of one rank (device cuda; a test of the NCCL path on one GPU); else
 * selects GPU local_rank and joins the NCCL communicator through the
 * rendezvous FLOWHN_RENDEZVOUS (default: a file in out_dir named after the
 * job, see dist_default_rendezvous). */
int dist_init(Dist *d, const DistEnv *e, const char *device, const char *out_dir);
void dist_free(Dist *d);

/* "mpi" when Open MPI started the job and its library loads; else
 * "file:OUT_DIR/.rendezvous-JOB" for a job id the launcher exported
 * (SLURM_JOB_ID.SLURM_STEP_ID, OpenMPI's job id or PMIx namespace), or
 * "tcp:MASTER_ADDR:MASTER_PORT" when those are set; -1 when there is nothing
 * to name the job by (then set FLOWHN_RENDEZVOUS). */
int dist_default_rendezvous(char *buf, size_t cap, const char *out_dir);

/* Seconds a collective may take: FLOWHN_NCCL_TIMEOUT, default 300. */
double dist_timeout_s(void);

/* `flowhn train --gpus N`: starts N ranks of this same program (argv without
 * --gpus) with FLOWHN_RANK/FLOWHN_WORLD_SIZE/FLOWHN_LOCAL_RANK and a file
 * rendezvous in out_dir, waits for them, and if one dies, stops the others
 * and reports which rank died and how. Returns the exit status for the command. */
int dist_launch(int n, int argc, char **argv, const char *out_dir);

#endif
