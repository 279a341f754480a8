#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int gradcheck_quiet = 0;

double gradcheck(const char *name, loss_fn f, void *ctx, real *x, const real *grad, size_t n,
                 int max_checks, double eps) {
    return gradcheck_floor(name, f, ctx, x, grad, n, max_checks, eps, 0);
}

double gradcheck_floor(const char *name, loss_fn f, void *ctx, real *x, const real *grad, size_t n,
                       int max_checks, double eps, double abs_floor) {
    double gmax = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)grad[i]));
    double floor_ = fmax(fmax(1e-3 * gmax, 1e-12), abs_floor);
    size_t checks = n <= (size_t)max_checks ? n : (size_t)max_checks;
    double worst = 0, worst_a = 0, worst_fd = 0;
    size_t worst_i = 0;
    for (size_t c = 0; c < checks; c++) {
        size_t i = checks == n ? c : (size_t)((double)c * (double)(n - 1) / (double)(checks - 1 ? checks - 1 : 1));
        /* five-point stencil: truncation error O(eps^4), so eps can be large
         * enough that rounding noise stays small */
        real saved = x[i];
        double v[4];
        const double steps[4] = {1, -1, 2, -2};
        for (int k = 0; k < 4; k++) {
            x[i] = saved + (real)(steps[k] * eps);
            v[k] = f(ctx);
        }
        x[i] = saved;
        double fd = (8 * (v[0] - v[1]) - (v[2] - v[3])) / (12 * eps);
        double a = grad[i];
        double err = fabs(a - fd) / fmax(fmax(fabs(a), fabs(fd)), floor_);
        if (err > worst || isnan(err)) { worst = isnan(err) ? INFINITY : err; worst_i = i; worst_a = a; worst_fd = fd; }
    }
    if (!gradcheck_quiet)
        printf("    gradcheck %-28s n=%-7zu checked=%-5zu max rel err %.2e (at %zu: analytic %.6e fd %.6e)\n",
           name, n, checks, worst, worst_i, worst_a, worst_fd);
    return worst;
}

void fill_uniform(real *x, size_t n, Rng *r, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(lo + (hi - lo) * rng_uniform(r));
}

real *uniform_buffer(Rng *r, size_t n, double lo, double hi) {
    real *p = malloc(sizeof(real) * (n ? n : 1));
    fill_uniform(p, n, r, lo, hi);
    return p;
}

double dot(const real *a, const real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

double rel_l2(const real *a, const real *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

double rel_l2_d(const real *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}
