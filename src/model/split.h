/* split.h - FlowHN token split plans: which positions each branch gets in
 * each layer (docs/model-definition.md, section 4). */
#ifndef FLOWHN_SPLIT_H
#define FLOWHN_SPLIT_H

#include "config.h"

typedef struct {
    int na, ns;     /* tokens to attention / to the SSM */
    int *pa, *ps;   /* their positions, ascending (host memory) */
} LayerSplit;

typedef struct {
    int T, num_layers;
    int n_a;        /* the n_a rule's result (fa/fac); T/2 for ae; T for none */
    LayerSplit *layers;
} SplitPlan;

/* The rounding multiple actually used at length T (split_multiple, or 1 when
 * T < 2 * split_multiple). */
int split_multiple_at(const Config *c, int T);
/* n_a for a fixed ratio r at length T, rounded and clamped. */
int split_na_for_ratio(const Config *c, int T, double r);
/* Builds the plan for length T with attention getting n_a tokens (fa/fac;
 * ignored for none/ae). 0 or -1. */
int split_plan_build(SplitPlan *p, const Config *c, int T, int n_a);
/* Keeps only positions < T (a plan made for a longer window, used on a prefix:
 * generation and evaluation use the plan of the model's window so that a
 * token's branch never depends on how many tokens follow it). */
void split_plan_restrict(SplitPlan *p, int T);
void split_plan_free(SplitPlan *p);

#endif
