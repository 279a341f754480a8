#include "gradcheck.h"

#include <math.h>
#include <stdio.h>

int gradcheck_quiet = 0;

double gradcheck(const char *name, loss_fn f, void *ctx, real *x, const real *grad, size_t n,
                 int max_checks, double eps) {
    double gmax = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)grad[i]));
    double floor_ = fmax(1e-3 * gmax, 1e-12);
    size_t checks = n <= (size_t)max_checks ? n : (size_t)max_checks;
    double worst = 0, worst_a = 0, worst_fd = 0;
    size_t worst_i = 0;
    for (size_t c = 0; c < checks; c++) {
        size_t i = checks == n ? c : (size_t)((double)c * (double)(n - 1) / (double)(checks - 1 ? checks - 1 : 1));
        real saved = x[i];
        x[i] = saved + (real)eps;
        double lp = f(ctx);
        x[i] = saved - (real)eps;
        double lm = f(ctx);
        x[i] = saved;
        double fd = (lp - lm) / (2 * eps);
        double a = grad[i];
        double err = fabs(a - fd) / fmax(fmax(fabs(a), fabs(fd)), floor_);
        if (err > worst) { worst = err; worst_i = i; worst_a = a; worst_fd = fd; }
    }
    if (!gradcheck_quiet)
        printf("    gradcheck %-28s n=%-7zu checked=%-5zu max rel err %.2e (at %zu: analytic %.6e fd %.6e)\n",
           name, n, checks, worst, worst_i, worst_a, worst_fd);
    return worst;
}

void fill_uniform(real *x, size_t n, Rng *r, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(lo + (hi - lo) * rng_uniform(r));
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
