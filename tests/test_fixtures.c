/* test_fixtures.c - the C model against the independent PyTorch reference
 * (reference/, fixtures in tests/fixtures: config, fp32 parameters, tokens,
 * targets, and float64 logits, loss, gradients and split plans).
 *
 * Built twice: as test_fixtures (fp32 model; bounds ~1e-5) and, through
 * grad_fixtures.c, against the fp64 build (bounds ~1e-12, so any formula that
 * differs from the reference, however slightly, fails). */
#include <dirent.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/data/safetensors.h"
#include "../src/model/model.h"
#include "helpers/gradcheck.h"
#include "test.h"

#ifdef FLOWHN_REAL_DOUBLE
#define LOGIT_BOUND 1e-13   /* seen: ~8e-16 */
#define GRAD_BOUND 1e-12    /* seen: ~1e-14 */
#else
#define LOGIT_BOUND 1e-6    /* seen: ~3e-7 */
#define GRAD_BOUND 1e-5     /* per tensor, relative L2; seen: ~3e-6 */
#endif

#define FIXTURE_DIR "tests/fixtures"

static real *as_real(const StTensor *t, size_t n) {
    real *r = malloc(sizeof(real) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        r[i] = t->dtype == ST_F64 ? (real)((const double *)t->data)[i] : (real)((const float *)t->data)[i];
    return r;
}

static size_t numel(const StTensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

static void check_fixture(const char *name) {
    char cfgp[8400], stp[8400];
    snprintf(cfgp, sizeof cfgp, FIXTURE_DIR "/%s.json", name);
    snprintf(stp, sizeof stp, FIXTURE_DIR "/%s.safetensors", name);
    Config c;
    StFile f;
    Model m;
    CHECK(config_load(&c, cfgp) == 0, "%s", fh_last_error());
    CHECK(st_load(&f, stp) == 0, "%s", fh_last_error());
    if (t_case_failed) return;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    /* parameters, by name, through the layout table */
    real *host = calloc(m.layout.total, sizeof(real));
    int missing = 0;
    for (int i = 0; i < m.layout.n; i++) {
        const ParamEntry *e = &m.layout.entries[i];
        char key[160];
        snprintf(key, sizeof key, "param.%s", e->name);
        const StTensor *t = st_find(&f, key);
        if (!t || numel(t) != e->numel) { missing++; printf("    %s: missing or wrong size\n", key); continue; }
        real *v = as_real(t, e->numel);
        memcpy(host + e->offset, v, sizeof(real) * e->numel);
        free(v);
    }
    CHECK(missing == 0, "%d parameters missing from the fixture", missing);
    m.ops->from_host(m.params, host, sizeof(real) * m.layout.total);
    const StTensor *tt = st_find(&f, "tokens"), *tg = st_find(&f, "targets");
    CHECK(tt && tg && tt->ndim == 2, "tokens/targets present");
    if (t_case_failed) { free(host); model_free(&m); st_free(&f); return; }
    int B = (int)tt->shape[0], T = (int)tt->shape[1], V = c.vocab_size;
    CHECK(model_forward(&m, (const int *)tt->data, (const int *)tg->data, B, T) == 0, "%s", fh_last_error());
    /* the split plan */
    for (int l = 0; c.arch == ARCH_FLOWHN && l < c.num_layers; l++) {
        char key[64];
        snprintf(key, sizeof key, "split.layer%d.attn", l);
        const StTensor *sp = st_find(&f, key);
        CHECK(sp != NULL, "%s missing", key);
        if (!sp) continue;
        int same = (int)numel(sp) == m.plan.layers[l].na;
        for (int i = 0; same && i < m.plan.layers[l].na; i++) same = ((const int *)sp->data)[i] == m.plan.layers[l].pa[i];
        CHECK(same, "layer %d attention positions differ from the reference", l);
    }
    real *want = as_real(st_find(&f, "logits"), (size_t)B * T * V);
    double e_logits = rel_l2(model_logits(&m), want, (size_t)B * T * V);
    double want_loss = ((const double *)st_find(&f, "loss")->data)[0];
    double e_loss = fabs(m.loss - want_loss) / fabs(want_loss);
    CHECK(e_logits < LOGIT_BOUND, "logits rel L2 %.3e", e_logits);
    CHECK(e_loss < LOGIT_BOUND, "loss %.9f vs %.9f", m.loss, want_loss);
    model_zero_grad(&m);
    CHECK(model_backward(&m) == 0, "%s", fh_last_error());
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.layout.n; i++) {
        const ParamEntry *e = &m.layout.entries[i];
        char key[160];
        snprintf(key, sizeof key, "grad.%s", e->name);
        const StTensor *t = st_find(&f, key);
        if (!t) { CHECK(0, "%s missing", key); continue; }
        real *g = as_real(t, e->numel);
        double err = rel_l2(m.grads + e->offset, g, e->numel);
        if (err > worst) { worst = err; worst_name = e->name; }
        CHECK(err < GRAD_BOUND, "%s rel L2 %.3e", e->name, err);
        free(g);
    }
    printf("    %-22s logits %.2e  loss %.2e  worst grad %.2e (%s)\n", name, e_logits, e_loss, worst, worst_name);
    free(want);
    free(host);
    model_free(&m);
    st_free(&f);
}

int main(void) {
    DIR *d = opendir(FIXTURE_DIR);
    if (!d) { printf("FAIL cannot open " FIXTURE_DIR " (run from the repository root)\n"); return 1; }
    char names[64][128];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 64) {
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".json")) {
            snprintf(names[n], sizeof names[n], "%.*s", (int)(len - 5), de->d_name);
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) RUN_ARG(check_fixture, names[i], names[i]);
    if (n < 14) { printf("FAIL expected 14 fixtures, found %d\n", n); t_cases_fail++; }
    TEST_SUMMARY();
}
