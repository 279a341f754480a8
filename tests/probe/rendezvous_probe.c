/* rendezvous_probe.c - one rank of a rendezvous test (tests/py/test_dist_mpi.py):
 * reads its rank and world from the environment like `flowhn train` does,
 * rank 0 offers a 128-byte blob derived from a seed, every rank runs the
 * exchange named by argv[1] ("default": the one flowhn train would choose)
 * and prints what it holds afterwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/core/error.h"
#include "../../src/dist/dist.h"
#include "../../src/dist/rendezvous.h"

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: rendezvous_probe SPEC SEED\n"); return 2; }
    DistEnv e;
    if (dist_env_read(&e)) { fprintf(stderr, "probe: %s\n", fh_last_error()); return 1; }
    unsigned char blob[128] = {0};
    unsigned seed = (unsigned)strtoul(argv[2], NULL, 10);
    if (e.rank == 0)
        for (int i = 0; i < 128; i++) blob[i] = (unsigned char)((seed * 2654435761u >> (i % 24)) + i * 7);
    char spec[1200];
    snprintf(spec, sizeof spec, "%s", argv[1]);
    if (!strcmp(spec, "default")) {  /* what flowhn train would pick (the out dir: the current one) */
        if (dist_default_rendezvous(spec, sizeof spec, ".")) { fprintf(stderr, "probe: %s\n", fh_last_error()); return 1; }
        if (e.rank == 0) printf("spec %s\n", spec);
    }
    if (rendezvous_exchange(spec, e.rank, e.world, blob, sizeof blob, 20)) {
        fprintf(stderr, "probe rank %d: %s\n", e.rank, fh_last_error());
        return 1;
    }
    printf("rank %d of %d (%s):", e.rank, e.world, e.source);
    for (int i = 0; i < 128; i++) printf("%02x", blob[i]);
    printf("\n");
    return 0;
}
