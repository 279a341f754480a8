/* matmul.cuh - linear.cu's cuBLASLt products for other op files (the fused
 * classifier). Operands are fp32 in fp32/tf32 mode and bf16 in bf16 mode
 * (cuda_matmul_bf16()); C is fp32 (bf16: cuda_matmul_c16). Column-major, as cuBLASLt. */
#ifndef FLOWHN_CUDA_MATMUL_CUH
#define FLOWHN_CUDA_MATMUL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>

/* C[m,n] = op(A) op(B) + beta C on the current branch's stream; 0 or -1 */
int cuda_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                const void *B, int ldb, float *C, int ldc, float beta);
/* the same with C bf16 (beta 0: C is overwritten), accumulated in fp32 and
 * rounded once on the store; bf16 mode only (else -1, nothing written) */
int cuda_matmul_c16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                    const void *B, int ldb, __nv_bfloat16 *C, int ldc);
/* whether the matmul operands must be bf16 (--precision bf16) */
int cuda_matmul_bf16(void);
/* dst = bf16 rounding of src (n elements) on the current stream */
void cuda_round_bf16(__nv_bfloat16 *dst, const float *src, size_t n);
/* in bf16 mode, a weight's kept bf16 copy (the generator's frozen one or
 * training's, made current if needed) where it can stand for a fresh rounding
 * into cudaMalloc'd scratch (same values, same 256-byte alignment); NULL:
 * round it */
const void *cuda_weight_bf16(const float *w, size_t n);
/* in bf16 mode, the bf16 shadow of exactly [x, x + n) that its producer wrote
 * (common.cuh cuda_shadow_claim) if it is current on this branch, else NULL;
 * like a rounding into scratch, its contents stay as they are until a later
 * producer on this branch claims the buffer */
const void *cuda_shadow_bf16(const float *x, size_t n);
/* Where the AdamW kernels write the new parameters' bf16 rounding (linear.cu,
 * Ops.train_weights): the copy is laid out tensor by tensor, each tensor t
 * starting at copy offset tab[nseg + 1 + t] (256-byte aligned), its
 * parameters at [tab[t], tab[t + 1]) of the buffer. An update of the
 * buffer's [a, a + n) meets tensors t0..t1; `longest` is its longest piece
 * of one tensor. */
typedef struct {
    __nv_bfloat16 *bf;   /* the copy */
    const size_t *tab;   /* device */
    int nseg, t0, t1;
    size_t a, longest;
} WeightsCopy;
/* 1 and *w filled: the update of [p, p + n) writes the copy too; 0: it does
 * not (no copy, or p not in the trained buffer, or the copy stale: it stays so) */
int cuda_weights_adamw(const float *p, size_t n, WeightsCopy *w);
/* the copy's host tables (after cuda_weights_adamw returned 1): *poff the
 * nseg + 1 tensor starts in the buffer (then its length), *coff the nseg
 * tensors' places in the copy; returns nseg */
int cuda_weights_host_tab(const size_t **poff, const size_t **coff);
/* The grid of a kernel writing the copy tensor by tensor (the copy's rounding
 * pass, the copy-writing AdamW): one row of blocks per tensor, as many blocks
 * as the longest piece needs up to 4096 (grid-stride beyond). Needs
 * common.cuh's grid_for. */
#define WEIGHTS_COPY_BLOCKS_X 4096u
static inline dim3 weights_copy_grid(size_t longest, int tensors, int threads) {
    unsigned int bx = grid_for(longest, threads);
    return dim3(bx < WEIGHTS_COPY_BLOCKS_X ? bx : WEIGHTS_COPY_BLOCKS_X, tensors);
}

#endif
