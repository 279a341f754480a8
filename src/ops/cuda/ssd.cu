/* ssd.cu - Mamba-2 SSD (scalar A per head) by chunks, contract in ops.h; the
 * same algorithm as the CPU oracle (src/ops/cpu/ssd.c), written as matrix
 * products over shared-memory tiles so that every (batch, head, chunk) is a block.
 *
 * Per chunk of l <= L tokens, with dt_j = softplus(dt_raw + dt_bias),
 * la_j = -dt_j e^{A_log} (log of the decay a_j), local positions i, j < l:
 *   M_ij   = exp(la_{j+1} + ... + la_i)       (j <= i; the decay from step j to i)
 *   ecum_i = exp(la_0 + ... + la_i)           (from the state entering the chunk)
 *   etail_j = M_{l-1, j}                      (from step j to the chunk's end)
 *   W_ij   = (C_i . B_j) M_ij dt_j
 *   y_i    = sum_{j<=i} W_ij x_j + ecum_i h0 C_i + D x_i     (h0 = states[c], [P, N])
 *   S_c    = sum_j etail_j dt_j x_j B_j^T,    states[c+1] = ecum_{l-1} states[c] + S_c
 * The exponents are sums of la added one by one in the CPU's order (never
 * differences of cumulative sums, which lose digits in fp32 over a chunk).
 *
 * Forward, four kernels:
 *   chunk_state (per b, h, c): S_c, a [P, N] = [P, l] x [l, N] product, into states[c+1]
 *   state_pass (per b, h, element of [P, N]): states[c+1] += a_c states[c], in order of c
 *   cb (per b, c, group): C B^T ([l, l], K = N), shared by the group's heads
 *   chunk_scan (per b, h, c): W from C B^T, then y = ecum (C h0^T) + W X + D x
 * Backward (dstates[c] = dL/dstates[c]; nothing flows into the final state):
 *   chunk_state again, for the chunk's own term of dstates[c]: sum_i ecum_i dy_i C_i^T
 *   state_pass backwards: G_c := dstates[c+1], dstates[c] = a_c G_c + own term
 *   (these two are one chained kernel by default, ssd_chunk_state_bwd_chain_kernel: each
 *   block takes G_c from chunk c+1's block as soon as it is published; FLOWHN_SSD_BWD=old
 *   runs the two kernels; at the bf16 precision with P <= 64, N <= 128 its bf16-tile variant
 *   ssd_chunk_state_bwd_chain_bf_kernel, own_c kept in registers across the wait: ssd-sbwd,
 *   FLOWHN_SSD_SBWD=old keeps the fp32-tile one; by default there the same floats with no chain,
 *   ssd_chunk_state_bwd_walk_bf_kernel: one block walks a (b, h, N tile)'s chunks, ssd-sbwd-lb;
 *   FLOWHN_SSD_SBWD=chain keeps the chained bf16-tile kernel)
 *   chunk_bwd (per b, h, c), everything else; with dW_ij = dy_i . x_j,
 *   dCB_ij = dW_ij M_ij dt_j and the decays differentiated through their exponents:
 *     dx_j = sum_i W_ij dy_i + etail_j dt_j G B_j + D dy_j
 *     dB_j = sum_i dCB_ij C_i + etail_j dt_j G^T x_j
 *     dC_i = sum_j dCB_ij B_j + ecum_i h0^T dy_i
 *     dt_j directly: sum_i dW_ij CB_ij M_ij + etail_j x_j.G B_j
 *     d la_k = sum_{j<k<=i} dW_ij W_ij + sum_{i>=k} dcum_i + sum_{j<k} dtail_j + dtotal
 *       (dcum_i = C_i . dC_i's state part, dtail_j = etail_j dt_j x_j.G B_j,
 *        dtotal = a_c sum(G * h0)), then ddt += -e^{A_log} d la, dA_log += la d la.
 *   B and C are shared by the heads of a group: their gradients are added with atomics.
 *   With P <= 64 (x and dy one tile each) chunk_bwd is ssd_chunk_bwd_p64_kernel: the
 *   same sums with x and dy resident and the products grouped by the tiles they
 *   share (11 tile loads in ~5 waits instead of 26 in 14; see ssd_kernels.cuh), after
 *   ssd_cb_kernel has computed C B^T once per (batch, chunk, group) for the group's heads.
 *   Its threads own the 64 x 64 outputs in the mma.sync fragment layout (Lay<2>, tensor-core build:
 *   the products accumulate in registers, no scratch tile) or the warp-local one (Lay<1>: a warp's
 *   elements are its own wmma strip; the exact build, and FLOWHN_SSD_CBWD=wl); FLOWHN_SSD_CBWD=old
 *   (read once) runs it in the first layout (two barriers a product).
 *
 * Tiles: 256 threads as 16 x 16, each owning a 4 x 4 register block of a 64 x 64
 * output (rows ty + 16a, columns tx + 16b); operands sit in shared memory
 * as they lie in memory, with row stride LD. Two builds of the kernels
 * (ssd_kernels.cuh, once per namespace): ssd_exact, the fp32 precision, with
 * fp32 CUDA-core products and LD 65 (both the [row][k] and the [k][row]
 * readings free of bank conflicts); ssd_tc, the tf32 and bf16 precisions,
 * with the products on tensor cores (wmma TF32 in, fp32 accumulate; LD 68 for
 * wmma's 16-byte strides) and one more tile as the fragments' way back into
 * the thread layout, so every other line of the kernels is shared.
 * Launch bounds: 4 blocks per SM where shared memory allows 4 (64
 * registers), 2 for the backward (its 83-104 KB of tiles allow 2; 128 registers).
 * Chunks longer than 64 tokens go to the plain recurrence (ssd_recurrent.cu). */
#include <cuda_bf16.h>
#include <mma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>

#include "common.cuh"
#include "cuda_ops.h"
extern "C" {
#include "../../model/flops.h"
}

#define TS 64   /* tile edge: chunk positions, and columns of P or N */
#define NT 256  /* threads per block */
#define TILE (TS * LD)

int ssd_recurrent_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                      const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L);
int ssd_recurrent_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy,
                      const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                      const real *D, int B, int n, int nh, int P, int G, int N, int L);

struct SsdDims {
    int B, n, nh, P, G, N, L, E, W, nch;  /* E = nh*P; W = E + 2*G*N (xbc row width) */
    int acc;  /* backward: add into dxbc's x columns and ddt_raw (1), or store them (0; ops.h acc) */
    int no_bc_atomics;  /* timing only (wrong dB/dC): FLOWHN_SSD_TIME_NO_BC_ATOMICS=1, see cuda_ssd_bwd */
};


/* The kernels twice: fp32 CUDA-core products with row stride 65 (exact, the
 * fp32 matmul precision), and TF32 tensor-core products with row stride 68
 * (the tf32 and bf16 precisions; see mm_tc). */
namespace ssd_exact {
constexpr int LD = 65;
constexpr bool TC = false;
#include "ssd_kernels.cuh"
}  // namespace ssd_exact
namespace ssd_tc {
constexpr int LD = 68;
constexpr bool TC = true;
#include "ssd_kernels.cuh"
}  // namespace ssd_tc

/* tensor cores for the chunk products whenever the matmuls may round (tf32, bf16) */
static bool ssd_use_tc(void) { return strcmp(cuda_matmul_precision(), "fp32") != 0; }

/* The launches of one namespace's kernels (K = ssd_exact or ssd_tc). */
#define SSD_FWD_LAUNCH(K)                                                                                          \
    do {                                                                                                           \
        static int attr;                                                                                           \
        if (!attr++) {                                                                                             \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_state_kernel<true>,                                        \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::STATE_SMEM));      \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,  \
                                           (int)K::SCAN_SMEM));                                                    \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_cb_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,          \
                                           (int)K::CB_SMEM));                                                      \
        }                                                                                                          \
        K::ssd_cb_kernel<<<dim3(d.nch, G, B), NT, K::CB_SMEM, cuda_stream()>>>(cbuf, xbc, d);                      \
        CUDA_LAUNCHED();                                                                                           \
        /* ssd-fwd2 (scan_bf): chunk_state and chunk_scan as their bf16-tile kernels (ssd_kernels.cuh), 16-byte \
         * loads where W, E, P, N are multiples of 4 and the arrays 16-byte aligned (vec), else scalar ones */   \
        const int vec = ((d.W | d.E | P | N) & 3) == 0 &&                                                          \
                        (((uintptr_t)y | (uintptr_t)states | (uintptr_t)xbc) & 15) == 0;                          \
        if (K::TC && scan_bf && fwd3 && fwd_walk) {                                                                \
            /* ssd-fwd-walk: chunk_state V 3 and the state pass as one walk per (b, h, N tile); only the prefix     \
             * states are stored (perf-notes ssd-fwd-walk) */                                                      \
            static int walk_attr[2];                                                                               \
            const void *kf = vec ? (const void *)K::ssd_chunk_state_fwd_walk_bf_kernel<true>                        \
                                 : (const void *)K::ssd_chunk_state_fwd_walk_bf_kernel<false>;                      \
            if (!walk_attr[vec]++)                                                                                 \
                CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize,                    \
                                               (int)K::STATE_WALK_SMEM));                                          \
            void *args[] = {&states, &xbc, &dt_raw, &dt_bias, &A_log, &d};                                         \
            CUDA_CALL(cudaLaunchKernel(kf, dim3((N + TS - 1) / TS, nh, B), dim3(NT), args, K::STATE_WALK_SMEM,     \
                                       cuda_stream()));                                                            \
            CUDA_LAUNCHED();                                                                                       \
        } else {                                                                                                   \
        if (K::TC && scan_bf) {                                                                                    \
            /* fwd3: the V 3 variants (mm_ldsm products; perf-notes ssd-fwd3), else ssd-fwd2's V 2 */               \
            static int st_attr[2][2];                                                                              \
            const void *kf = fwd3 ? (vec ? (const void *)K::ssd_chunk_state_bf_kernel<true, 3>                      \
                                         : (const void *)K::ssd_chunk_state_bf_kernel<false, 3>)                    \
                                  : (vec ? (const void *)K::ssd_chunk_state_bf_kernel<true, 2>                      \
                                         : (const void *)K::ssd_chunk_state_bf_kernel<false, 2>);                   \
            if (!st_attr[fwd3][vec]++)                                                                             \
                CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize,                    \
                                               (int)K::STATE_BF_SMEM));                                            \
            void *args[] = {&states, &achunk, &xbc, &dt_raw, &dt_bias, &A_log, &d};                               \
            CUDA_CALL(cudaLaunchKernel(kf, grid, dim3(NT), args, K::STATE_BF_SMEM, cuda_stream()));                \
        } else                                                                                                     \
            K::ssd_chunk_state_kernel<true><<<grid, NT, K::STATE_SMEM, cuda_stream()>>>(states, achunk, NULL, xbc, \
                                                                                        dt_raw, dt_bias, A_log, d); \
        CUDA_LAUNCHED();                                                                                           \
        K::ssd_state_pass_fwd<<<dim3(blocks_for((size_t)P * N, NT), nh, B), NT, 0, cuda_stream()>>>(states,       \
                                                                                                   achunk, d);    \
        CUDA_LAUNCHED();                                                                                           \
        }                                                                                                          \
        if (K::TC && scan_bf) {                                                                                    \
            static int bf_attr[2][2];                                                                              \
            const void *kf = fwd3 ? (vec ? (const void *)K::ssd_chunk_scan_bf_kernel<true, 3>                       \
                                         : (const void *)K::ssd_chunk_scan_bf_kernel<false, 3>)                     \
                                  : (vec ? (const void *)K::ssd_chunk_scan_bf_kernel<true, 2>                       \
                                         : (const void *)K::ssd_chunk_scan_bf_kernel<false, 2>);                    \
            if (!bf_attr[fwd3][vec]++) {                                                                           \
                CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize,                    \
                                               (int)K::SCAN_BF_SMEM));                                             \
                CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributePreferredSharedMemoryCarveout,                 \
                                               (int)cudaSharedmemCarveoutMaxShared));                              \
            }                                                                                                      \
            void *args[] = {&y, &states, &xbc, &dt_raw, &dt_bias, &A_log, &D, &cbuf, &d};                          \
            CUDA_CALL(cudaLaunchKernel(kf, grid, dim3(NT), args, K::SCAN_BF_SMEM, cuda_stream()));                 \
        } else                                                                                                     \
            K::ssd_chunk_scan_kernel<<<grid, NT, K::SCAN_SMEM, cuda_stream()>>>(y, states, xbc, dt_raw, dt_bias,   \
                                                                                A_log, D, cbuf, d);                \
        CUDA_LAUNCHED();                                                                                           \
    } while (0)

#define SSD_BWD_LAUNCH(K)                                                                                          \
    do {                                                                                                           \
        static int attr, chain_attr;                                                                               \
        if (!attr++) {                                                                                             \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_state_kernel<false>,                                       \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::STATE_SMEM));      \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,   \
                                           (int)K::BWD_SMEM));                                                     \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_bwd_p64_kernel<2>,                                         \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::P64_MMA_SMEM));    \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_bwd_p64_kernel<1>,                                         \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::BWD_SMEM));        \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_bwd_p64_kernel<0>,                                         \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::BWD_SMEM));        \
            CUDA_CALL(cudaFuncSetAttribute(K::ssd_cb_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,          \
                                           (int)K::CB_SMEM));                                                      \
        }                                                                                                          \
        if (bsync && K::TC && sbwd_walk) { /* ssd-sbwd-lb: a block walks a (b, h, N tile)'s chunks, no chain */  \
            const int vec = ((d.E | d.W | P | N) & 3) == 0 &&                                                      \
                            (((uintptr_t)dy | (uintptr_t)xbc | (uintptr_t)gbuf) & 15) == 0;                        \
            static int sw_attr[2];                                                                                 \
            const void *kf = vec ? (const void *)K::ssd_chunk_state_bwd_walk_bf_kernel<true>                       \
                                 : (const void *)K::ssd_chunk_state_bwd_walk_bf_kernel<false>;                     \
            if (!sw_attr[vec]++)                                                                                   \
                CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize,                    \
                                               (int)K::STATE_WALK_SMEM));                                          \
            const dim3 wg((unsigned)((N + TS - 1) / TS), (unsigned)nh, (unsigned)B);                              \
            if (vec)                                                                                               \
                K::ssd_chunk_state_bwd_walk_bf_kernel<true><<<wg, NT, K::STATE_WALK_SMEM, cuda_stream()>>>(        \
                    gbuf, dy, xbc, dt_raw, dt_bias, A_log, d);                                                     \
            else                                                                                                   \
                K::ssd_chunk_state_bwd_walk_bf_kernel<false><<<wg, NT, K::STATE_WALK_SMEM, cuda_stream()>>>(       \
                    gbuf, dy, xbc, dt_raw, dt_bias, A_log, d);                                                     \
            CUDA_LAUNCHED();                                                                                       \
        } else if (bsync) { /* own terms and the state pass chained in one kernel (tickets, a flag per chunk) */  \
            if (!chain_attr++)                                                                                     \
                CUDA_CALL(cudaFuncSetAttribute(K::ssd_chunk_state_bwd_chain_kernel,                                \
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::STATE_SMEM));  \
            CUDA_CALL(cudaMemsetAsync(bsync, 0, sizeof(int) * (1 + (size_t)B * nh * d.nch), cuda_stream()));       \
            if (K::TC && sbwd_bf) { /* ssd-sbwd: bf16 tiles, own_c kept in the mma accumulators across the wait */ \
                const int vec = ((d.E | d.W | P | N) & 3) == 0 &&                                                  \
                                (((uintptr_t)dy | (uintptr_t)xbc | (uintptr_t)gbuf) & 15) == 0;                    \
                static int sb_attr[4];                                                                             \
                const int sv = 2 * vec + sbwd_b4;                                                                  \
                const void *kf = sv == 3   ? (const void *)K::ssd_chunk_state_bwd_chain_bf_kernel<true, 4>         \
                                 : sv == 2 ? (const void *)K::ssd_chunk_state_bwd_chain_bf_kernel<true, 3>         \
                                 : sv == 1 ? (const void *)K::ssd_chunk_state_bwd_chain_bf_kernel<false, 4>        \
                                           : (const void *)K::ssd_chunk_state_bwd_chain_bf_kernel<false, 3>;       \
                if (!sb_attr[sv]++)                                                                                \
                    CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize,                \
                                                   (int)K::STATE_BF_SMEM));                                        \
                const unsigned nb = (unsigned)(B * nh * d.nch);                                                    \
                if (sv == 3)                                                                                       \
                    K::ssd_chunk_state_bwd_chain_bf_kernel<true, 4><<<nb, NT, K::STATE_BF_SMEM, cuda_stream()>>>(  \
                        gbuf, bsync, dy, xbc, dt_raw, dt_bias, A_log, d);                                          \
                else if (sv == 2)                                                                                  \
                    K::ssd_chunk_state_bwd_chain_bf_kernel<true, 3><<<nb, NT, K::STATE_BF_SMEM, cuda_stream()>>>(  \
                        gbuf, bsync, dy, xbc, dt_raw, dt_bias, A_log, d);                                          \
                else if (sv == 1)                                                                                  \
                    K::ssd_chunk_state_bwd_chain_bf_kernel<false, 4><<<nb, NT, K::STATE_BF_SMEM, cuda_stream()>>>( \
                        gbuf, bsync, dy, xbc, dt_raw, dt_bias, A_log, d);                                          \
                else                                                                                               \
                    K::ssd_chunk_state_bwd_chain_bf_kernel<false, 3><<<nb, NT, K::STATE_BF_SMEM, cuda_stream()>>>( \
                        gbuf, bsync, dy, xbc, dt_raw, dt_bias, A_log, d);                                          \
            } else                                                                                                 \
                K::ssd_chunk_state_bwd_chain_kernel<<<B * nh * d.nch, NT, K::STATE_SMEM, cuda_stream()>>>(        \
                    gbuf, bsync, dy, xbc, dt_raw, dt_bias, A_log, d);                                              \
            CUDA_LAUNCHED();                                                                                       \
        } else {                                                                                                   \
            K::ssd_chunk_state_kernel<false><<<grid, NT, K::STATE_SMEM, cuda_stream()>>>(gbuf, achunk, dy, xbc,    \
                                                                                         dt_raw, dt_bias, A_log,   \
                                                                                         d);                       \
            CUDA_LAUNCHED();                                                                                       \
            K::ssd_state_pass_bwd<<<dim3(blocks_for((size_t)P * N, NT), nh, B), NT, 0, cuda_stream()>>>(gbuf,     \
                                                                                                       achunk, d); \
            CUDA_LAUNCHED();                                                                                       \
        }                                                                                                          \
        if (P <= TS) { /* x and dy one tile each: the kernel with fewer round trips, C B^T once per group */      \
            K::ssd_cb_kernel<<<dim3(d.nch, G, B), NT, K::CB_SMEM, cuda_stream()>>>(cbuf, xbc, d);                  \
            CUDA_LAUNCHED();                                                                                       \
            /* the layout (ssd_kernels.cuh Lay): FLOWHN_SSD_CBWD=old 0, =wl 1, =mma 2, else (bf) the bf16  \
             * variant in ssd_tc at the bf16 precision (2 at tf32), 1 in ssd_exact */                              \
            if (cbwd >= 3 && K::TC && bf) {                                                                        \
                /* =bf3 the ssd-cbwd3 kernel (V 3), else V 4 (ssd-cbwd4: its shared and global accesses), or  \
                 * V 5 (the same with scalar global accesses) where W, P or N is odd or dxbc not 8-byte aligned */ \
                /* =bf4 V 4 / 5; by default V 8 / 9 (ssd-ldsm: V 4 / 5 with ldmatrix fragment loads) */          \
                static int bf_attr[7];                                                                             \
                const int ev = ((d.W | P | N) & 1) == 0 && ((uintptr_t)dxbc & 7) == 0;                             \
                const int v = cbwd == 3 ? 3 : cbwd == 4 ? (ev ? 4 : 5) : (ev ? 8 : 9);                             \
                const void *kf = v == 4   ? (const void *)K::ssd_chunk_bwd_p64_bf_kernel<4>                        \
                                 : v == 5 ? (const void *)K::ssd_chunk_bwd_p64_bf_kernel<5>                        \
                                 : v == 8 ? (const void *)K::ssd_chunk_bwd_p64_bf_kernel<8>                        \
                                 : v == 9 ? (const void *)K::ssd_chunk_bwd_p64_bf_kernel<9>                        \
                                          : (const void *)K::ssd_chunk_bwd_p64_bf_kernel<3>;                       \
                const size_t sm = v == 3 ? K::P64_BF_SMEM : v >= 8 ? K::P64_BF8_SMEM : K::P64_BF4_SMEM;             \
                if (!bf_attr[v - 3]++) {                                                                           \
                    CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));     \
                    CUDA_CALL(cudaFuncSetAttribute(kf, cudaFuncAttributePreferredSharedMemoryCarveout,             \
                                                   (int)cudaSharedmemCarveoutMaxShared));                          \
                }                                                                                                  \
                if (v == 4)                                                                                        \
                    K::ssd_chunk_bwd_p64_bf_kernel<4><<<grid, NT, sm, cuda_stream()>>>(                            \
                        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf, \
                        d);                                                                                        \
                else if (v == 5)                                                                                   \
                    K::ssd_chunk_bwd_p64_bf_kernel<5><<<grid, NT, sm, cuda_stream()>>>(                            \
                        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf, \
                        d);                                                                                        \
                else if (v == 8)                                                                                   \
                    K::ssd_chunk_bwd_p64_bf_kernel<8><<<grid, NT, sm, cuda_stream()>>>(                            \
                        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf, \
                        d);                                                                                        \
                else if (v == 9)                                                                                   \
                    K::ssd_chunk_bwd_p64_bf_kernel<9><<<grid, NT, sm, cuda_stream()>>>(                            \
                        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf, \
                        d);                                                                                        \
                else                                                                                               \
                    K::ssd_chunk_bwd_p64_bf_kernel<3><<<grid, NT, sm, cuda_stream()>>>(                            \
                        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf, \
                        d);                                                                                        \
            } else if (cbwd == 0)                                                                                  \
                K::ssd_chunk_bwd_p64_kernel<0><<<grid, NT, K::BWD_SMEM, cuda_stream()>>>(                          \
                    dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf,   \
                    d);                                                                                            \
            else if (cbwd == 1 || !K::TC)                                                                          \
                K::ssd_chunk_bwd_p64_kernel<1><<<grid, NT, K::BWD_SMEM, cuda_stream()>>>(                          \
                    dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf,   \
                    d);                                                                                            \
            else                                                                                                   \
                K::ssd_chunk_bwd_p64_kernel<2><<<grid, NT, K::P64_MMA_SMEM, cuda_stream()>>>(                      \
                    dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, gbuf, xbc, dt_raw, dt_bias, A_log, D, cbuf,   \
                    d);                                                                                            \
        } else                                                                                                     \
            K::ssd_chunk_bwd_kernel<<<grid, NT, K::BWD_SMEM, cuda_stream()>>>(dxbc, ddt_raw, ddt_bias, dA_log, dD, \
                                                                              dy, states, gbuf, xbc, dt_raw,       \
                                                                              dt_bias, A_log, D, d);               \
        CUDA_LAUNCHED();                                                                                           \
    } while (0)

/* ---- host side ---- */

/* scratch grown on demand and kept (the same shapes recur every step); one
 * set per branch stream, since both branches of a parallel block may run at once */
static float *ssd_scratch(int slot, size_t n) {
    static BranchScratch s[4];
    return (float *)cuda_branch_scratch(&s[slot], sizeof(float) * n, "the SSD scratch");
}

static SsdDims ssd_dims(int B, int n, int nh, int P, int G, int N, int L) {
    SsdDims d = {B, n, nh, P, G, N, L, nh * P, nh * P + 2 * G * N, (n + L - 1) / L, 1, 0};
    return d;
}

void cuda_ssd_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                  const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L) {
    if (B <= 0 || n <= 0) return;
    fh_count_macs((uint64_t)B * macs_ssd_chunked(n, nh, P, G, N, L));  /* the model's count (ops.h) */
    if (L > TS) {
        ssd_recurrent_fwd(y, states, xbc, dt_raw, dt_bias, A_log, D, B, n, nh, P, G, N, L);
        return;
    }
    SsdDims d = ssd_dims(B, n, nh, P, G, N, L);
    float *achunk = ssd_scratch(0, (size_t)B * nh * d.nch);
    float *cbuf = ssd_scratch(2, (size_t)B * d.nch * G * TS * TS);  /* C B^T per (batch, chunk, group) */
    if (!achunk || !cbuf) return;
    dim3 grid(d.nch, nh, B);
    /* chunk_state and chunk_scan as ssd_chunk_state_bf_kernel and ssd_chunk_scan_bf_kernel (bf16 operand
     * tiles, read once up front, mma fragment layout; perf-notes ssd-fwd2) where the products may round to
     * bf16 and one tile holds P (<= 64) and two N (<= 128); FLOWHN_SSD_FWD_KERNEL=old
     * (cuda_set_ssd_fwd_kernel) keeps ssd_chunk_state_kernel<true> and ssd_chunk_scan_kernel */
    const bool scan_bf = cuda_set_ssd_fwd_kernel(-1) && strcmp(cuda_matmul_precision(), "bf16") == 0 &&
                         P <= TS && N <= 2 * TS;
    /* ssd-fwd3 (FLOWHN_SSD_FWD3=0 / cuda_set_ssd_fwd3(0): ssd-fwd2's V 2 kernels for an A/B) */
    const int fwd3 = cuda_set_ssd_fwd3(-1) ? 1 : 0;
    /* ssd-fwd-walk (FLOWHN_SSD_FWD_WALK=0 / cuda_set_ssd_fwd_walk(0): chunk_state V 3 and the state pass as two
     * kernels, for an A/B); the walk needs the V 3 kernels (its product is chunk_state V 3's) */
    const bool fwd_walk = cuda_set_ssd_fwd_walk(-1) != 0;
    if (ssd_use_tc()) SSD_FWD_LAUNCH(ssd_tc);
    else SSD_FWD_LAUNCH(ssd_exact);
}

/* -1: not read yet (cuda_ops.h cuda_set_ssd_fwd_kernel) */
static int ssd_fwd_kernel = -1;
int cuda_set_ssd_fwd_kernel(int on) { return cuda_env_switch(&ssd_fwd_kernel, "FLOWHN_SSD_FWD_KERNEL", "old", 1, on); }
/* -1: not read yet (cuda_ops.h cuda_set_ssd_fwd3) */
static int ssd_fwd3 = -1;
int cuda_set_ssd_fwd3(int on) { return cuda_env_switch(&ssd_fwd3, "FLOWHN_SSD_FWD3", "0", 1, on); }
/* -1: not read yet (cuda_ops.h cuda_set_ssd_fwd_walk) */
static int ssd_fwd_walk = -1;
int cuda_set_ssd_fwd_walk(int on) { return cuda_env_switch(&ssd_fwd_walk, "FLOWHN_SSD_FWD_WALK", "0", 1, on); }

/* -1: not read yet (cuda_ops.h cuda_set_ssd_sbwd) */
static int ssd_sbwd = -1;
int cuda_set_ssd_sbwd(int on) {
    if (ssd_sbwd < 0) {  /* =old 0, =chain 1 (ssd-sbwd's chained bf16-tile kernel), else the walk (2, ssd-sbwd-lb) */
        const char *e = getenv("FLOWHN_SSD_SBWD");
        ssd_sbwd = e && strcmp(e, "old") == 0 ? 0 : e && strcmp(e, "chain") == 0 ? 1 : 2;
    }
    int was = ssd_sbwd;
    if (on >= 0 && on <= 2) ssd_sbwd = on;
    return was;
}
/* -1: not read yet (cuda_ops.h cuda_set_ssd_sbwd_blocks) */
static int ssd_sbwd_blocks = -1;
int cuda_set_ssd_sbwd_blocks(int on) {
    return cuda_env_switch(&ssd_sbwd_blocks, "FLOWHN_SSD_SBWD_BLOCKS", "3", 1, on);
}

/* -1: not read yet (cuda_ops.h cuda_set_ssd_cbwd) */
static int ssd_cbwd = -1;
int cuda_set_ssd_cbwd(int v) {
    if (ssd_cbwd < 0) {
        const char *e = getenv("FLOWHN_SSD_CBWD");
        ssd_cbwd = e && strcmp(e, "old") == 0   ? 0
                   : e && strcmp(e, "wl") == 0  ? 1
                   : e && strcmp(e, "mma") == 0 ? 2
                   : e && strcmp(e, "bf3") == 0 ? 3
                   : e && strcmp(e, "bf4") == 0 ? 4
                                                : 5;
    }
    int was = ssd_cbwd;
    if (v >= 0 && v <= 5) ssd_cbwd = v;
    return was;
}

void cuda_ssd_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy,
                  const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                  const real *D, int B, int n, int nh, int P, int G, int N, int L, int acc) {
    if (B <= 0 || n <= 0) return;
    if (L > TS) {
        /* the recurrent kernel adds into dxbc and ddt_raw (B/C columns and
         * ddt_raw by atomics): to overwrite (ops.h acc), zero them first */
        if (!acc) {
            if (dxbc) cuda_zero(dxbc, sizeof(float) * B * n * (nh * P + 2 * G * N));
            if (ddt_raw) cuda_zero(ddt_raw, sizeof(float) * B * n * nh);
        }
        ssd_recurrent_bwd(dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, xbc, dt_raw, dt_bias, A_log, D, B, n,
                          nh, P, G, N, L);
        return;
    }
    SsdDims d = ssd_dims(B, n, nh, P, G, N, L);
    float *achunk = ssd_scratch(0, (size_t)B * nh * d.nch);
    float *gbuf = ssd_scratch(1, (size_t)B * d.nch * nh * P * N);
    /* C B^T per (batch, chunk, group) for the P <= 64 kernel: 16 KB each (2 MB at gpt2small) */
    float *cbuf = P <= TS ? ssd_scratch(2, (size_t)B * d.nch * G * TS * TS) : NULL;
    if (!achunk || !gbuf || (P <= TS && !cbuf)) return;
    /* FLOWHN_SSD_BWD=old: chunk_state<false> then ssd_state_pass_bwd (main's two kernels, for A/B
     * timing); by default the chained kernel (ssd_chunk_state_bwd_chain_kernel, the same values) */
    static int bwd_old = -1;
    if (bwd_old < 0) {
        const char *e = getenv("FLOWHN_SSD_BWD");
        bwd_old = e && strcmp(e, "old") == 0;
    }
    int *bsync = NULL;  /* the chained kernel's ticket counter and a flag per (chunk, b, h) */
    if (!bwd_old) {
        bsync = (int *)ssd_scratch(3, 1 + (size_t)B * nh * d.nch);
        if (!bsync) return;
    }
    /* The chunk kernel's block (chunk, head) alone writes its rows' x columns
     * of that head and their ddt_raw: to overwrite it stores them. The B and C
     * columns are summed over the group's heads by atomics: an overwrite zeroes
     * those 2GN columns of each row first (a strided memset). */
    d.acc = acc;
    /* A measurement switch, not a mode: FLOWHN_SSD_TIME_NO_BC_ATOMICS=1 drops the P <= 64
     * kernel's dB/dC atomics (16K per block, from every head of a group onto the same
     * addresses), so that one bench says what they cost (perf-notes, ssd-dbdc). The B/C
     * gradients are then WRONG: never for training or tests. */
    static int no_bc = -1;
    if (no_bc < 0) {
        const char *e = getenv("FLOWHN_SSD_TIME_NO_BC_ATOMICS");
        no_bc = e && e[0] == '1';
        if (no_bc) fprintf(stderr, "warning: FLOWHN_SSD_TIME_NO_BC_ATOMICS=1: SSD dB/dC not computed (timing only)\n");
    }
    d.no_bc_atomics = no_bc;
    /* FLOWHN_SSD_CBWD (read once; cuda_set_ssd_cbwd): the P <= 64 chunk kernel's thread layout (perf-notes, ssd-cbwd and
     * ssd-cbwd2): =old the first one (every product's fragments back through the block with two
     * barriers), =wl the warp-local one (wmma through the warp's scratch strip), =mma the mma.sync
     * fragment layout ( accumulators in registers; the tensor-core build only: the exact build's
     * products are FMAs, it runs the warp-local layout then); =bf3 the bf16 variant of the mma layout
     * as ssd-cbwd3 left it; =bf4 the same with ssd-cbwd4's conflict-free shared tiles and float2 global
     * accesses (V 4); by default V 4 with four products' fragments by ldmatrix (V 8, ssd-ldsm) at the bf16
     * precision, the mma layout at tf32 */
    const int cbwd = cuda_set_ssd_cbwd(-1);
    /* the bf16 variant (ssd_chunk_bwd_p64_bf_kernel: bf16 operand tiles in the N loop, 3 blocks per SM;
     * perf-notes, ssd-cbwd3) only where the products may round to bf16: the tf32 precision keeps
     * TF32's 10-bit operands (the mma kernel) */
    const int bf = strcmp(cuda_matmul_precision(), "bf16") == 0;
    /* the chained own terms + state pass as ssd_chunk_state_bwd_chain_bf_kernel (bf16 operand tiles read once,
     * own_c in the mma accumulators across the wait, one float2 store of dstates; perf-notes ssd-sbwd) at the
     * bf16 precision with P <= 64, N <= 128; FLOWHN_SSD_SBWD=old (cuda_set_ssd_sbwd) keeps
     * ssd_chunk_state_bwd_chain_kernel */
    const bool sbwd_bf = cuda_set_ssd_sbwd(-1) && bf && P <= TS && N <= 2 * TS;
    /* by default (cuda_set_ssd_sbwd 2) ssd_chunk_state_bwd_walk_bf_kernel instead: the same floats with no chain
     * between blocks (one block walks the chunks of a (b, h, N tile); perf-notes ssd-sbwd-lb); FLOWHN_SSD_SBWD=chain
     * keeps the chained bf16-tile kernel */
    const bool sbwd_walk = sbwd_bf && cuda_set_ssd_sbwd(-1) == 2;
    /* its launch bounds: 4 blocks per SM (64 registers, a 64-byte spill) by default, FLOWHN_SSD_SBWD_BLOCKS=3 the
     * build at 3 (80 registers, no spill): an A/B for the GPU (read once, switches.cu) */
    const int sbwd_b4 = cuda_set_ssd_sbwd_blocks(-1);
    if (!acc && dxbc)
        CUDA_CALL(cudaMemset2DAsync(dxbc + d.E, sizeof(float) * d.W, 0, sizeof(float) * 2 * G * N, (size_t)B * n,
                                    cuda_stream()));
    dim3 grid(d.nch, nh, B);
    if (ssd_use_tc()) SSD_BWD_LAUNCH(ssd_tc);
    else SSD_BWD_LAUNCH(ssd_exact);
}
