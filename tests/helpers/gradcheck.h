/* gradcheck.h - finite-difference gradient checks for the fp64 test build.
 *
 * Used by tests/grad_*.c, which link the double-precision build of the
 * library (see core/real.h), so central differences with eps ~1e-6 are
 * accurate to ~1e-9 and any error above ~1e-6 is a real bug. */
#ifndef FLOWHN_GRADCHECK_H
#define FLOWHN_GRADCHECK_H

#include <stddef.h>
#include "../../src/core/real.h"
#include "../../src/core/rng.h"

/* Scalar loss of the current contents of the perturbed buffer. */
typedef double (*loss_fn)(void *ctx);

/* When set, gradcheck() prints nothing. */
extern int gradcheck_quiet;

/* Compares grad[i] with the five-point central difference of L at step eps
 * (truncation error O(eps^4)) for up to
 * max_checks indices of x[0..n) (all of them when n <= max_checks, else an
 * even spread). Error per entry: |a - fd| / max(|a|, |fd|, floor), floor =
 * 1e-3 * max|grad| so entries that are ~0 are judged on the scale of the
 * whole gradient. Returns the largest error; prints the worst entry under `name`. */
double gradcheck(const char *name, loss_fn f, void *ctx, real *x, const real *grad, size_t n,
                 int max_checks, double eps);
/* The same with an absolute floor on the denominator: entries whose gradient
 * is below `abs_floor` are judged by |a - fd| / abs_floor. Whole-model checks
 * need it: a loss of ~3.5 computed through thousands of operations carries
 * ~1e-15 relative rounding, i.e. ~1e-11 of finite-difference noise at eps
 * 1e-4, which is the whole size of some tiny gradients (e.g. A_log ~1e-8). */
double gradcheck_floor(const char *name, loss_fn f, void *ctx, real *x, const real *grad, size_t n,
                       int max_checks, double eps, double abs_floor);

/* Fills x[n] with uniform values in [lo, hi). */
void fill_uniform(real *x, size_t n, Rng *r, double lo, double hi);
/* A new malloc'd buffer of n such values (room for one when n is 0, so that
 * an empty case still gets a pointer it may free). */
real *uniform_buffer(Rng *r, size_t n, double lo, double hi);
/* sum_i a[i] * b[i] in double */
double dot(const real *a, const real *b, size_t n);
/* ||a - b|| / max(||b||, tiny) */
double rel_l2(const real *a, const real *b, size_t n);
/* The same against a reference b computed in double. */
double rel_l2_d(const real *a, const double *b, size_t n);

#endif
