/* real.h - the scalar type of the CPU backend.
 *
 * The CPU backend is the oracle every other backend is checked against, so it
 * is written once over `real` and compiled twice:
 *   - float  (default): the library and the `flowhn` tool use it;
 *   - double (-DFLOWHN_REAL_DOUBLE): the gradient-check tests link this build,
 *     so finite differences are taken in double precision on the very same code.
 * Files on disk (checkpoints, fixtures, safetensors) always hold float32; the
 * loaders convert. */
#ifndef FLOWHN_REAL_H
#define FLOWHN_REAL_H

#ifdef FLOWHN_REAL_DOUBLE
typedef double real;
#define REAL_NAME "f64"
#define R_EXP exp
#define R_LOG log
#define R_SQRT sqrt
#define R_TANH tanh
#define R_LOG1P log1p
#define R_FABS fabs
#define R_COS cos
#define R_SIN sin
#define R_POW pow
#else
typedef float real;
#define REAL_NAME "f32"
#define R_EXP expf
#define R_LOG logf
#define R_SQRT sqrtf
#define R_TANH tanhf
#define R_LOG1P log1pf
#define R_FABS fabsf
#define R_COS cosf
#define R_SIN sinf
#define R_POW powf
#endif

#endif
