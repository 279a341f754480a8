/* blas.h - the one place the CPU backend picks sgemm or dgemm for `real`. */
#ifndef FLOWHN_CPU_BLAS_H
#define FLOWHN_CPU_BLAS_H

#include <cblas.h>
#include "../../core/real.h"

#ifdef FLOWHN_REAL_DOUBLE
#define cblas_gemm cblas_dgemm
#else
#define cblas_gemm cblas_sgemm
#endif

#endif
