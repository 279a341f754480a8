/* switches.cu - the CUDA backend's kernel switches (FLOWHN_ELEM=old, FLOWHN_PDL=0, ...),
 * read from the environment once, on first use, so a recorded step never reads one.
 * Each switch chooses between a kernel and its predecessor for a one-binary A/B on the
 * GPU; the tests set them directly to run both (cuda_ops.h lists them). */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

int cuda_env_switch(int *state, const char *name, const char *off, int dflt, int on) {
    if (*state < 0) {
        const char *e = getenv(name);
        *state = !e || !*e ? dflt : strcmp(e, off) != 0;
    }
    int was = *state;
    if (on >= 0) *state = on != 0;
    return was;
}
