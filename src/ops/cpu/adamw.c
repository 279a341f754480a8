/* adamw.c - the optimizer step and the gradient norm. */
#include <math.h>

#include "cpu_ops.h"

/* The update both entry points share; bc1, bc2 = 1 - beta^step. */
static void adamw_update(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2,
                         real eps, real wd, real grad_scale, double bc1, double bc2) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        real gi = g[i] * grad_scale;
        m[i] = beta1 * m[i] + (1 - beta1) * gi;
        v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
        real mhat = (real)(m[i] / bc1), vhat = (real)(v[i] / bc2);
        p[i] -= lr * (mhat / (R_SQRT(vhat) + eps) + wd * p[i]);
    }
}

void cpu_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2, real eps,
               real wd, real grad_scale, int step) {
    adamw_update(p, g, m, v, n, lr, beta1, beta2, eps, wd, grad_scale, 1.0 - pow(beta1, step), 1.0 - pow(beta2, step));
}

double cpu_sum_squares(const real *x, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) if (n > 65536)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* ---- the step without host round trips (ops.h): on the CPU "backend memory"
 * is host memory, so these are plain functions of the same arithmetic ---- */
void cpu_sum_into(double *out, const real *x, size_t n, int squares) {
    if (squares) { *out = cpu_sum_squares(x, n); return; }
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    *out = s;
}

void cpu_step_scale(StepScalars *s) {
    s->ok = isfinite(s->loss_sum) && isfinite(s->sumsq);
    double norm = sqrt(s->sumsq) * s->grad_scale, scale = s->grad_scale;
    if (s->clip > 0 && norm > s->clip) scale *= s->clip / norm;
    s->scale = (float)scale;
}

void cpu_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1, real beta2,
                    real eps, real wd) {
    if (!s->ok || n == 0) return;
    adamw_update(p, g, m, v, n, s->lr, beta1, beta2, eps, wd, s->scale, s->bc1, s->bc2);
}
