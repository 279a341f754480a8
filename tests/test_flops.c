/* test_flops.c - the analytic FLOP model against the multiply-adds the CPU
 * forward actually performs (fh_macs, counted inside the ops), for every
 * architecture and FlowHN split/context; and the FLOP-aware split of the
 * paper's 135M FlowHN at T = 1024. */
#include <string.h>

#include "../src/core/error.h"
#include "../src/core/flopcount.h"
#include "../src/model/flops.h"
#include "../src/model/model.h"
#include "helpers/tiny.h"
#include "test.h"

static void count_matches_model(int si) {
    const TinySpec *s = &tiny_specs[si];
    Config c = tiny_config(s);
    /* odd lengths and a length that is not a multiple of the SSD chunk */
    int lengths[] = {1, 7, 13, 29};
    for (int li = 0; li < 4; li++) {
        int B = 2, T = lengths[li];
        Model m;
        CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
        model_init_params(&m, 1);
        int tok[2 * 29], tgt[2 * 29];
        tiny_batch(tok, tgt, B, T, c.vocab_size, 3);
        fh_macs = 0;
        CHECK(model_forward(&m, tok, tgt, B, T) == 0, "%s: %s", s->name, fh_last_error());
        uint64_t counted = fh_macs, predicted = (uint64_t)B * macs_model_forward(&c, T, NULL);
        CHECK(counted == predicted, "%s T=%d: ops performed %llu MACs, FLOP model says %llu", s->name, T,
              (unsigned long long)counted, (unsigned long long)predicted);
        model_free(&m);
    }
}

static void paper_135m_split(void) {
    Config c;
    config_defaults(&c);   /* the 135M FlowHN FAC_Split shape */
    CHECK(c.arch == ARCH_FLOWHN && c.hidden_size == 768 && c.intermediate_size == 2048 && c.num_heads == 32 &&
          c.num_kv_heads == 8 && c.d_state == 16 && c.expand == 2, "defaults are the 135M shape");
    int na = model_split_na(&c, 1024);
    double r = na / 1024.0;
    printf("    135M FlowHN FAC isolated, T=1024: n_a = %d (ratio %.4f)\n", na, r);
    CHECK(r >= 0.55 && r <= 0.60, "attention share %.4f outside the spec's 0.55-0.6", r);
    CHECK(na % 64 == 0, "n_a %d is a multiple of split_multiple 64", na);
    /* the chosen n_a balances the branches better than its neighbours */
    LayerMacs lm[2];
    macs_model_forward(&c, 1024, lm);
    double gap = fabs((double)lm[0].attn_branch - (double)lm[0].ssm_branch);
    CHECK(gap / lm[0].ssm_branch < 0.08, "branches within 8%%: attn %llu ssm %llu",
          (unsigned long long)lm[0].attn_branch, (unsigned long long)lm[0].ssm_branch);
    /* prefix context costs attention n_a x T keys, so it gets fewer tokens */
    c.context = CONTEXT_PREFIX;
    int na_prefix = model_split_na(&c, 1024);
    printf("    135M FlowHN FAC prefix,   T=1024: n_a = %d (ratio %.4f)\n", na_prefix, na_prefix / 1024.0);
    CHECK(na_prefix < na, "prefix n_a %d should be below isolated %d", na_prefix, na);
}

static void split_plans(void) {
    /* FAC, attention last, T = 6, n_a = 2: tokens 5-6, then 3-4, then 1-2 (paper Figure 2, 1-based) */
    Config c;
    config_defaults(&c);
    c.num_layers = 4;
    c.split = SPLIT_FAC;
    c.attn_position = ATTN_LAST;
    SplitPlan p;
    CHECK(split_plan_build(&p, &c, 6, 2) == 0, "%s", fh_last_error());
    int want[4][2] = {{4, 5}, {2, 3}, {0, 1}, {4, 5}};
    for (int l = 0; l < 4; l++)
        CHECK(p.layers[l].na == 2 && p.layers[l].pa[0] == want[l][0] && p.layers[l].pa[1] == want[l][1],
              "layer %d window", l);
    CHECK(p.layers[1].ns == 4 && p.layers[1].ps[0] == 0 && p.layers[1].ps[2] == 4, "ssm gets the rest in order");
    split_plan_free(&p);
    /* wrapping window: T = 7, n_a = 3, last: starts 4, 1, then 5 (5,6,0) */
    CHECK(split_plan_build(&p, &c, 7, 3) == 0, "%s", fh_last_error());
    CHECK(p.layers[2].na == 3 && p.layers[2].pa[0] == 0 && p.layers[2].pa[1] == 5 && p.layers[2].pa[2] == 6,
          "wrapped window sorted: %d %d %d", p.layers[2].pa[0], p.layers[2].pa[1], p.layers[2].pa[2]);
    split_plan_free(&p);
    /* AE: halves swap every layer */
    c.split = SPLIT_AE;
    c.attn_position = ATTN_FIRST;
    CHECK(split_plan_build(&p, &c, 8, 0) == 0, "%s", fh_last_error());
    CHECK(p.layers[0].pa[0] == 0 && p.layers[1].pa[0] == 4 && p.layers[2].pa[0] == 0, "AE alternates");
    split_plan_free(&p);
    /* ratio rounding */
    c.split_multiple = 64;
    CHECK(split_na_for_ratio(&c, 1024, 0.59) == 576, "0.59*1024 rounds to 576 (multiple of 64)");
    CHECK(split_na_for_ratio(&c, 100, 0.59) == 59, "short sequences round to 1");
    CHECK(split_na_for_ratio(&c, 1024, 0.999) == 960, "clamped to T - m");
}

static void measured_split(void) {
    Config c = tiny_config(&tiny_specs[12]);   /* flowhn-fac-isolated */
    c.ratio_rule = RATIO_MEASURED;
    c.split_multiple = 4;
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    model_init_params(&m, 1);
    int tok[24] = {0}, tgt[24] = {0};
    CHECK(model_forward(&m, tok, tgt, 1, 24) != 0 && strstr(fh_last_error(), "model_measure_split"),
          "an unmeasured ratio is refused: %s", fh_last_error());
    CHECK(model_measure_split(&m, 24, 1, NULL) == 0, "%s", fh_last_error());
    int na = split_na_for_ratio(&m.cfg, 24, m.cfg.split_ratio);
    CHECK(m.cfg.ratio_rule == RATIO_FIXED && na >= 4 && na <= 20 && na % 4 == 0 && fabs(m.cfg.split_ratio - na / 24.0) < 1e-12,
          "resolved to a fixed multiple of 4: ratio %g (n_a %d)", m.cfg.split_ratio, na);
    CHECK(model_forward(&m, tok, tgt, 1, 24) == 0, "forward after measuring: %s", fh_last_error());
    CHECK(m.plan.layers[0].na == na, "the plan uses the measured n_a (%d vs %d)", m.plan.layers[0].na, na);
    model_free(&m);
}

int main(void) {
    for (int i = 0; i < n_tiny_specs; i++) RUN_ARG(count_matches_model, i, tiny_specs[i].name);
    RUN(paper_135m_split);
    RUN(split_plans);
    RUN(measured_split);
    TEST_SUMMARY();
}
