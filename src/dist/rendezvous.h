/* rendezvous.h - rank 0 hands a small blob (NCCL's 128-byte unique id) to
 * every other rank before any communicator exists.
 *
 *   file:PATH       rank 0 writes PATH atomically (a temporary file renamed
 *                   into place); the others poll for it. Needs a filesystem
 *                   every rank sees (one node, or a shared one).
 *   tcp:HOST:PORT   rank 0 listens on PORT; the others connect to HOST:PORT
 *                   (retrying until rank 0 is up) and read the blob.
 *   mpi             under mpirun: MPI_Bcast over MPI_COMM_WORLD (MPI loaded at
 *                   run time, rendezvous_mpi.c); the default when Open MPI
 *                   started the job.
 *
 * Every wait is bounded by timeout_s: a missing rank 0 (or, for rank 0 over
 * TCP, a rank that never connects) is an error naming what was waited for. */
#ifndef FLOWHN_RENDEZVOUS_H
#define FLOWHN_RENDEZVOUS_H

#include <stddef.h>

/* rank 0: blob is sent; other ranks: blob receives len bytes. 0 or -1. */
int rendezvous_exchange(const char *spec, int rank, int world, void *blob, size_t len, double timeout_s);
/* the `mpi` exchange (rendezvous_mpi.c) */
int rendezvous_mpi(int rank, int world, void *blob, size_t len);
/* whether an MPI library can be loaded (nothing is initialized) */
int rendezvous_mpi_available(void);
/* Removes what the exchange left behind (rank 0's file); call once every rank has the blob. */
void rendezvous_cleanup(const char *spec, int rank);

#endif
