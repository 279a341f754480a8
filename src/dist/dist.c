/* dist.c - rank discovery, the world of one, and dist_init (see dist.h). The
 * NCCL communicator lives in the CUDA build (src/ops/cuda/nccl_dist.cu); this
 * file reaches it through a weak reference, NULL in a CPU-only build, as the
 * backend registry reaches cuda_backend (src/ops/cpu/backend.c). */
#include "dist.h"
#include "rendezvous.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.h"

int dist_nccl_create(Dist *d, const char *rendezvous) __attribute__((weak));

/* A non-negative integer environment variable: 1 found, 0 unset, -1 malformed. */
static int env_int(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < 0 || v > 1 << 24) { fh_error("%s='%s' is not a non-negative integer", name, s); return -1; }
    *out = (int)v;
    return 1;
}

int dist_env_read(DistEnv *e) {
    /* our launcher first: it is explicit, and may run inside an allocation that set SLURM_* */
    static const struct { const char *source, *rank, *world, *local; } sets[] = {
        {"flowhn", "FLOWHN_RANK", "FLOWHN_WORLD_SIZE", "FLOWHN_LOCAL_RANK"},
        {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    };
    e->rank = 0; e->world = 1; e->local_rank = 0; e->source = "single";
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        int r = 0, w = 0, l = 0;
        int hr = env_int(sets[i].rank, &r), hw = env_int(sets[i].world, &w), hl = env_int(sets[i].local, &l);
        if (hr < 0 || hw < 0 || hl < 0) return -1;
        if (!hr && !hw) continue;
        if (!hr || !hw) return fh_error("%s and %s must be set together", sets[i].rank, sets[i].world);
        if (w < 1 || r >= w) return fh_error("%s=%d is outside the world of %s=%d", sets[i].rank, r, sets[i].world, w);
        e->rank = r; e->world = w; e->source = sets[i].source;
        /* without a local rank (one process per node), the node's first GPU */
        e->local_rank = hl ? l : 0;
        return 0;
    }
    return 0;
}

double dist_timeout_s(void) {
    const char *s = getenv("FLOWHN_NCCL_TIMEOUT");
    double t = s ? atof(s) : 0;
    return t > 0 ? t : 300;
}

int dist_default_rendezvous(char *buf, size_t cap, const char *out_dir) {
    const char *addr = getenv("MASTER_ADDR"), *port = getenv("MASTER_PORT");
    if (addr && *addr && port && *port) { snprintf(buf, cap, "tcp:%s:%s", addr, port); return 0; }
    /* started by Open MPI's mpirun: MPI itself hands the id over when it can be loaded */
    if (getenv("OMPI_COMM_WORLD_SIZE") && rendezvous_mpi_available()) { snprintf(buf, cap, "mpi"); return 0; }
    char job[200] = "";
    const char *sj = getenv("SLURM_JOB_ID"), *ss = getenv("SLURM_STEP_ID");
    const char *oj = getenv("OMPI_MCA_ess_base_jobid"), *px = getenv("PMIX_NAMESPACE");
    if (sj) snprintf(job, sizeof job, "slurm-%s.%s", sj, ss ? ss : "0");
    else if (oj) snprintf(job, sizeof job, "ompi-%s", oj);
    else if (px) snprintf(job, sizeof job, "pmix-%s", px);
    if (!job[0])
        return fh_error("no job id to name the rendezvous by: set FLOWHN_RENDEZVOUS=file:PATH (a path every rank "
                        "sees, new for each job) or tcp:HOST:PORT (rank 0's host)");
    for (char *c = job; *c; c++)
        if (*c == '/' || *c == ' ') *c = '_';
    snprintf(buf, cap, "file:%s/.rendezvous-%s", out_dir, job);
    return 0;
}

/* ---- the world of one: every collective is the identity ---- */

static int one_reduce_scatter(Dist *d, const real *send, real *recv, size_t count, const char *what) {
    return send == recv ? 0 : fh_error("%s: a world of one only reduces in place", what);
}
static int one_all_gather(Dist *d, const real *send, real *recv, size_t count, const char *what) {
    return send == recv ? 0 : fh_error("%s: a world of one only gathers in place", what);
}
static int one_all_reduce_host(Dist *d, double *x, int n, const char *what) { return 0; }
/* one rank's sum is its own gradient: nothing to queue */
static int one_reduce_async(Dist *d, real *buf, const DistPiece *p, int n, const char *what) {
    for (int i = 0; i < n; i++)
        if (p[i].root != 0) return fh_error("%s: root %d in a world of one", what, p[i].root);
    return 0;
}
static int one_wait_async(Dist *d, const char *what) { return 0; }
static void one_destroy(Dist *d) {}

int dist_init(Dist *d, const DistEnv *e, const char *device, const char *out_dir) {
    memset(d, 0, sizeof *d);
    d->rank = e->rank; d->world = e->world; d->local_rank = e->local_rank;
    d->timeout_s = dist_timeout_s();
    d->reduce_scatter = one_reduce_scatter;
    d->all_gather = one_all_gather;
    d->all_reduce_host = one_all_reduce_host;
    d->reduce_async = one_reduce_async;
    d->wait_async = one_wait_async;
    d->destroy = one_destroy;
    const char *single = getenv("FLOWHN_NCCL_SINGLE");
    int force = e->world == 1 && single && !strcmp(single, "1");
    if (e->world == 1 && !force) return 0;
    if (force && strcmp(device, "cuda")) return fh_error("FLOWHN_NCCL_SINGLE=1 needs --device cuda");
    if (strcmp(device, "cuda"))
        return fh_error("%d processes (from %s): multi-process training runs on GPUs over NCCL; use --device cuda",
                        e->world, e->source);
    if (!dist_nccl_create)
        return fh_error("this build has no NCCL: multi-GPU training needs the CUDA build (`make cuda`, build/flowhn-cuda)");
    char spec[1200];
    const char *rv = getenv("FLOWHN_RENDEZVOUS");
    if (force) {   /* one rank: the rendezvous only passes the id to itself */
        if (mkdir(out_dir, 0777) && errno != EEXIST)
            return fh_error("cannot create output directory %s: %s", out_dir, strerror(errno));
        snprintf(spec, sizeof spec, "file:%s/.rendezvous-single-%d", out_dir, (int)getpid());
    } else if (rv && *rv) snprintf(spec, sizeof spec, "%s", rv);
    else {
        if (mkdir(out_dir, 0777) && errno != EEXIST)
            return fh_error("cannot create output directory %s: %s", out_dir, strerror(errno));
        if (dist_default_rendezvous(spec, sizeof spec, out_dir)) return -1;
    }
    return dist_nccl_create(d, spec);
}

void dist_free(Dist *d) {
    if (d->destroy) d->destroy(d);
    d->destroy = NULL;
}
