/* split.c - FlowHN split plans. */
#include "split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"

int split_multiple_at(const Config *c, int T) {
    return T >= 2 * c->split_multiple ? c->split_multiple : 1;
}

int split_na_for_ratio(const Config *c, int T, double r) {
    int m = split_multiple_at(c, T);
    int na = m * (int)lround(r * T / m);
    if (na < m) na = m;
    if (na > T - m) na = T - m;
    if (na < 1) na = 1;   /* T == 1: nothing sensible to split; give attention the token */
    return na;
}


/* Fills ls from a membership mask of length T. */
static int fill(LayerSplit *ls, const char *in_attn, int T) {
    ls->na = ls->ns = 0;
    for (int t = 0; t < T; t++) {
        if (in_attn[t]) ls->na++;
        else ls->ns++;
    }
    ls->pa = malloc(sizeof(int) * (ls->na ? ls->na : 1));
    ls->ps = malloc(sizeof(int) * (ls->ns ? ls->ns : 1));
    if (!ls->pa || !ls->ps) return fh_error("out of memory building a split plan");
    int ia = 0, is = 0;
    for (int t = 0; t < T; t++) {
        if (in_attn[t]) ls->pa[ia++] = t;
        else ls->ps[is++] = t;
    }
    return 0;
}

int split_plan_build(SplitPlan *p, const Config *c, int T, int n_a) {
    memset(p, 0, sizeof *p);
    p->T = T;
    p->num_layers = c->num_layers;
    p->layers = calloc(c->num_layers, sizeof(LayerSplit));
    char *mask = malloc(T);
    if (!p->layers || !mask) { free(mask); return fh_error("out of memory building a split plan"); }
    int first = c->attn_position == ATTN_FIRST;
    if (c->split == SPLIT_NONE) n_a = T;
    else if (c->split == SPLIT_AE) n_a = T / 2;
    p->n_a = n_a;
    for (int l = 0; l < c->num_layers; l++) {
        LayerSplit *ls = &p->layers[l];
        if (c->split == SPLIT_NONE) {
            /* both branches see every token */
            ls->na = ls->ns = T;
            ls->pa = malloc(sizeof(int) * T);
            ls->ps = malloc(sizeof(int) * T);
            if (!ls->pa || !ls->ps) { free(mask); return fh_error("out of memory building a split plan"); }
            for (int t = 0; t < T; t++) ls->pa[t] = ls->ps[t] = t;
            continue;
        }
        memset(mask, 0, T);
        if (c->split == SPLIT_AE) {
            int attn_gets_first = (l % 2 == 0) == first;
            for (int t = 0; t < T; t++) mask[t] = attn_gets_first ? t < n_a : t >= n_a;
        } else if (c->split == SPLIT_FA) {
            for (int t = 0; t < T; t++) mask[t] = first ? t < n_a : t >= T - n_a;
        } else { /* FAC: a window of n_a positions that moves by n_a per layer, wrapping */
            long s = first ? (long)l * n_a : (long)T - n_a - (long)l * n_a;
            s %= T;
            if (s < 0) s += T;
            for (int j = 0; j < n_a; j++) mask[(s + j) % T] = 1;
        }
        if (fill(ls, mask, T)) { free(mask); return -1; }
    }
    free(mask);
    return 0;
}

static int keep_below(int *pos, int n, int T) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (pos[i] < T) pos[k++] = pos[i];
    return k;
}

void split_plan_restrict(SplitPlan *p, int T) {
    if (T >= p->T) return;
    for (int l = 0; l < p->num_layers; l++) {
        p->layers[l].na = keep_below(p->layers[l].pa, p->layers[l].na, T);
        p->layers[l].ns = keep_below(p->layers[l].ps, p->layers[l].ns, T);
    }
    p->T = T;
}

void split_plan_free(SplitPlan *p) {
    for (int l = 0; l < p->num_layers && p->layers; l++) {
        free(p->layers[l].pa);
        free(p->layers[l].ps);
    }
    free(p->layers);
    memset(p, 0, sizeof *p);
}
