/* rendezvous_mpi.c - the `mpi` rendezvous: under mpirun, rank 0's blob goes to
 * every rank with MPI_Bcast over MPI_COMM_WORLD.
 *
 * MPI is loaded at run time (dlopen), not linked: the same binary runs on a
 * machine without MPI, and MPI is only touched when this rendezvous is asked
 * for. MPI has no binary standard, so the two families are told apart by a
 * symbol only Open MPI exports: Open MPI's handles are pointers to its
 * predefined objects (MPI_COMM_WORLD = &ompi_mpi_comm_world), MPICH's (and
 * its derivatives') are integers fixed by its mpi.h. FLOWHN_MPI_LIB names the
 * library when it is not one of the usual sonames. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "rendezvous.h"

#define MPICH_COMM_WORLD 0x44000000
#define MPICH_BYTE 0x4c00010d

typedef struct {
    void *lib;
    int openmpi;
    void *comm_world, *byte;  /* Open MPI handles */
    int (*initialized)(int *);
    int (*init)(int *, char ***);
    int (*finalize)(void);
    int (*comm_rank_p)(void *, int *);
    int (*comm_rank_i)(int, int *);
    int (*bcast_p)(void *, int, void *, int, void *);
    int (*bcast_i)(void *, int, int, int, int);
} Mpi;

static Mpi mpi;
static int we_initialized;

static void finalize_at_exit(void) {
    if (we_initialized && mpi.finalize) mpi.finalize();
}

static int mpi_load(void) {
    if (mpi.lib) return 0;
    const char *env = getenv("FLOWHN_MPI_LIB");
    const char *names[] = {env, "libmpi.so.40", "libmpi.so.12", "libmpi.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !mpi.lib; i++)
        if (names[i] && *names[i]) mpi.lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!mpi.lib)
        return fh_error("rendezvous 'mpi': no MPI library could be loaded (tried %s%slibmpi.so.40, libmpi.so.12, "
                        "libmpi.so): install Open MPI or MPICH, set FLOWHN_MPI_LIB to the library, or use "
                        "FLOWHN_RENDEZVOUS=file:PATH or tcp:HOST:PORT", env ? env : "", env ? ", " : "");
    mpi.comm_world = dlsym(mpi.lib, "ompi_mpi_comm_world");
    mpi.byte = dlsym(mpi.lib, "ompi_mpi_byte");
    mpi.openmpi = mpi.comm_world && mpi.byte;
    *(void **)&mpi.initialized = dlsym(mpi.lib, "MPI_Initialized");
    *(void **)&mpi.init = dlsym(mpi.lib, "MPI_Init");
    *(void **)&mpi.finalize = dlsym(mpi.lib, "MPI_Finalize");
    void *rank = dlsym(mpi.lib, "MPI_Comm_rank"), *bcast = dlsym(mpi.lib, "MPI_Bcast");
    if (!mpi.initialized || !mpi.init || !mpi.finalize || !rank || !bcast) {
        dlclose(mpi.lib);
        memset(&mpi, 0, sizeof mpi);
        return fh_error("rendezvous 'mpi': the loaded library lacks MPI_Init/MPI_Bcast/...: it is not an MPI library");
    }
    if (mpi.openmpi) { *(void **)&mpi.comm_rank_p = rank; *(void **)&mpi.bcast_p = bcast; }
    else { *(void **)&mpi.comm_rank_i = rank; *(void **)&mpi.bcast_i = bcast; }
    return 0;
}

int rendezvous_mpi_available(void) {
    return mpi_load() == 0;
}

int rendezvous_mpi(int rank, int world, void *blob, size_t len) {
    if (mpi_load()) return -1;
    int flag = 0, me = -1;
    mpi.initialized(&flag);
    if (!flag) {
        if (mpi.init(NULL, NULL) != 0) return fh_error("rendezvous 'mpi': MPI_Init failed (was this started by mpirun?)");
        we_initialized = 1;
        atexit(finalize_at_exit);
    }
    int rc = mpi.openmpi ? mpi.comm_rank_p(mpi.comm_world, &me) : mpi.comm_rank_i(MPICH_COMM_WORLD, &me);
    if (rc != 0 || me != rank)
        return fh_error("rendezvous 'mpi': MPI says this is rank %d, the environment says rank %d of %d: start "
                        "the job with mpirun (one process per GPU) or use a file/tcp rendezvous", me, rank, world);
    rc = mpi.openmpi ? mpi.bcast_p(blob, (int)len, mpi.byte, 0, mpi.comm_world)
                     : mpi.bcast_i(blob, (int)len, MPICH_BYTE, 0, MPICH_COMM_WORLD);
    return rc == 0 ? 0 : fh_error("rendezvous 'mpi': MPI_Bcast of the %zu-byte id failed (error %d)", len, rc);
}
