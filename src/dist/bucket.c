/* bucket.c - the bucket plan and the overlapped gradient reduction (see bucket.h). */
#include "bucket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "shard.h"

/* Bucket [lo, hi) of plan p cut at the shard boundaries (S reals per rank):
 * appends its pieces, lowest rank first, if `out` is non-NULL; returns their number. */
static int cut_pieces(size_t lo, size_t hi, size_t S, DistPiece *out) {
    int n = 0;
    for (size_t r = lo / S; r * S < hi; r++, n++) {
        size_t a = r * S > lo ? r * S : lo, e = (r + 1) * S < hi ? (r + 1) * S : hi;
        if (out) out[n] = (DistPiece){a, e - a, (int)r};
    }
    return n;
}

int bucket_plan_build(BucketPlan *p, const size_t *f, int nf, size_t total, int world, size_t bucket_reals) {
    memset(p, 0, sizeof *p);
    p->total = total;
    p->world = world;
    if (world < 1) return fh_error("bucket plan: world %d", world);
    if (total == 0) return 0;
    if (nf < 1 || f[nf - 1] != 0) return fh_error("bucket plan: the frontiers must end at 0");
    for (int i = 0; i < nf; i++)
        if (f[i] > total || (i && f[i] > f[i - 1]))
            return fh_error("bucket plan: frontier %d (%zu) is not in decreasing order within [0, %zu]", i, f[i], total);
    if (bucket_reals < 1) bucket_reals = 1;
    size_t S = shard_per_rank(total, world);
    /* two passes over the same walk: count, then fill */
    for (int pass = 0; pass < 2; pass++) {
        int nb = 0, np = 0;
        size_t hi = total;
        for (int i = 0; i < nf; i++) {
            size_t lo = f[i];
            if (hi == lo || (hi - lo < bucket_reals && lo != 0)) continue;
            if (pass) p->buckets[nb] = (Bucket){lo, hi, np, 0};
            int k = cut_pieces(lo, hi, S, pass ? p->pieces + np : NULL);
            if (pass) p->buckets[nb].n = k;
            np += k;
            nb++;
            hi = lo;
        }
        if (!pass) {
            p->buckets = malloc(sizeof(Bucket) * (nb ? nb : 1));
            p->pieces = malloc(sizeof(DistPiece) * (np ? np : 1));
            if (!p->buckets || !p->pieces) { bucket_plan_free(p); return fh_error("out of memory"); }
        }
        p->n_buckets = nb;
        p->n_pieces = np;
    }
    return 0;
}

void bucket_plan_free(BucketPlan *p) {
    free(p->buckets);
    free(p->pieces);
    p->buckets = NULL;
    p->pieces = NULL;
    p->n_buckets = p->n_pieces = 0;
}

size_t bucket_reals_from_env(void) {
    const char *s = getenv("FLOWHN_BUCKET_MB");
    double mb = s ? atof(s) : 0;
    /* 25 MiB: a few layers of a small model, one layer of a large one; big enough that the per-collective
     * launch cost (~10-20 us) is small against its transfer, small enough that the first bucket starts early */
    if (!(mb > 0)) mb = 25;
    size_t n = (size_t)(mb * 1048576.0 / sizeof(real));
    return n ? n : 1;
}

int grad_reducer_create(GradReducer *g, const Model *m, Dist *d, size_t bucket_reals) {
    memset(g, 0, sizeof *g);
    g->dist = d;
    int nf = model_grad_frontiers(m, NULL, 0);
    size_t *f = malloc(sizeof(size_t) * nf);
    if (!f) return fh_error("out of memory");
    model_grad_frontiers(m, f, nf);
    int rc = bucket_plan_build(&g->plan, f, nf, m->layout.total, d->world, bucket_reals);
    free(f);
    return rc;
}

void grad_reducer_free(GradReducer *g) { bucket_plan_free(&g->plan); }

void grad_reducer_begin(GradReducer *g, real *grads) {
    g->grads = grads;
    g->next = 0;
}

static int launch(GradReducer *g) {
    const Bucket *b = &g->plan.buckets[g->next];
    char what[96];
    snprintf(what, sizeof what, "reduce of gradient bucket %d of %d", g->next + 1, g->plan.n_buckets);
    g->next++;
    return g->dist->reduce_async(g->dist, g->grads, g->plan.pieces + b->first, b->n, what);
}

int grad_reducer_ready(void *ctx, size_t off) {
    GradReducer *g = ctx;
    while (g->next < g->plan.n_buckets && g->plan.buckets[g->next].lo >= off)
        if (launch(g)) return -1;
    return 0;
}

int grad_reducer_finish(GradReducer *g) {
    while (g->next < g->plan.n_buckets)
        if (launch(g)) return -1;
    return g->dist->wait_async(g->dist, "wait for the gradient buckets");
}
