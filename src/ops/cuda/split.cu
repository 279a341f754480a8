/* split.cu - FlowHN token split (gather) and fusion (scatter) along the
 * sequence with a column window [col0, col0+C) of rows of width ldi/ldo.
 * One thread per selected element; each op's backward is the other, adding.
 * idx holds distinct positions, so the adds never collide. */
#include "common.cuh"

/* dir 0: sel[b,j,c] (op)= full[b, idx[j], col0+c];  dir 1: full[...] (op)= sel[...].
 * add: accumulate instead of overwrite. */
__global__ void gather_scatter_kernel(float *dst, const float *src, const int *idx, int B, int T, int n_sel,
                                      int C, int ld, int col0, int to_full, int add) {
    size_t total = (size_t)B * n_sel * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, bj = i / C;
        size_t b = bj / n_sel, j = bj % n_sel;
        size_t full = ((size_t)b * T + idx[j]) * ld + col0 + c;
        size_t d = to_full ? full : i, s = to_full ? i : full;
        if (add) dst[d] += src[s];
        else dst[d] = src[s];
    }
}

static void launch(float *dst, const float *src, const int *idx, int B, int T, int n_sel, int C, int ld,
                   int col0, int to_full, int add) {
    size_t n = (size_t)B * n_sel * C;
    if (!n || !dst) return;
    gather_scatter_kernel<<<grid_for(n, 256), 256, 0, cuda_stream()>>>(dst, src, idx, B, T, n_sel, C, ld, col0, to_full, add);
    CUDA_LAUNCHED();
}

void cuda_gather_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0) {
    launch(out, in, idx, B, T, n_sel, C, ldi, col0, 0, 0);
}
void cuda_gather_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0) {
    launch(din, dout, idx, B, T, n_sel, C, ldi, col0, 1, 1);
}
void cuda_scatter_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0) {
    launch(out, in, idx, B, T, n_sel, C, ldo, col0, 1, 0);
}
void cuda_scatter_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0,
                      int acc) {
    launch(din, dout, idx, B, T, n_sel, C, ldo, col0, 0, acc);   /* writes every element of din */
}
