/* rng.h - deterministic random numbers (PCG32) for initialisation, sampling
 * and data order. The whole state is one uint64 pair, so it checkpoints. */
#ifndef FLOWHN_RNG_H
#define FLOWHN_RNG_H

#include <stdint.h>

typedef struct { uint64_t state, inc; } Rng;

void rng_seed(Rng *r, uint64_t seed, uint64_t stream);
uint32_t rng_u32(Rng *r);
double rng_uniform(Rng *r);          /* [0, 1) */
double rng_normal(Rng *r);           /* N(0, 1), Box-Muller */

#endif
