/* flopcount.h - multiply-adds the CPU ops really perform.
 *
 * Every CPU op that does matmul-like work adds the multiply-adds its loops
 * execute (for attention: per query, the keys it actually visits). The test
 * suite compares this against the analytic FLOP model (src/model/flops.c),
 * which counts FLOPs = 2 x multiply-adds. The counter is a plain global: ops
 * add once per call (or per query row under a reduction), so it costs
 * nothing measurable. Only forward passes are compared. */
#ifndef FLOWHN_FLOPCOUNT_H
#define FLOWHN_FLOPCOUNT_H

#include <stdint.h>

extern uint64_t fh_macs;   /* multiply-adds since the last reset */

static inline void fh_count_macs(uint64_t n) {
#pragma omp atomic
    fh_macs += n;
}

#endif
