/* flops.h - the analytic FLOP model and the FLOP-aware split solver.
 *
 * Counts the multiply-adds (MACs) of the forward pass exactly as the CPU ops
 * perform them (linear layers, attention scores and weighted sums over the
 * keys each query really sees, conv taps, scans); FLOPs = 2 x MACs, training
 * FLOPs = 3 x forward (spec section 5). Elementwise work (norms, softmax,
 * activations) is not counted. tests/test_flops.c proves the count equals the
 * ops' own counter (core/flopcount.h) for every architecture. */
#ifndef FLOWHN_FLOPS_H
#define FLOWHN_FLOPS_H

#include <stdint.h>

#include "config.h"

/* Per sequence of the given length. */
uint64_t macs_attn_mixer(const Config *c, int nq, const int *qpos, int nk, const int *kpos);
uint64_t macs_mamba1_mixer(const Config *c, int n);
uint64_t macs_mamba2_mixer(const Config *c, int n);
uint64_t macs_mlp(const Config *c, int n);
uint64_t macs_conv1d(int n, int C, int K);
/* the chunked SSD scan of one sequence (also used by the CUDA backend's counter) */
uint64_t macs_ssd_chunked(uint64_t n, uint64_t nh, uint64_t P, uint64_t G, uint64_t N, uint64_t L);

typedef struct {
    uint64_t attn_branch, ssm_branch, fusion;   /* FlowHN parts (0 elsewhere) */
    uint64_t total;                             /* the whole layer */
    int na, ns;                                 /* tokens to each branch (FlowHN) */
} LayerMacs;

/* Forward MACs of one sequence of length T through the whole model
 * (embedding lookups excluded, LM head included). If per_layer is not NULL it
 * receives num_layers entries. Returns 0 on an allocation failure. */
uint64_t macs_model_forward(const Config *c, int T, LayerMacs *per_layer);
/* Training FLOPs per token = 3 x 2 x forward MACs / T. */
double flops_train_per_token(const Config *c, int T);
/* FLOP-aware n_a (docs/model-definition.md section 4). */
int flops_solve_na(const Config *c, int T);

#endif
