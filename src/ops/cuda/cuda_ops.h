/* cuda_ops.h - the CUDA backend's op table (see ../ops.h for each op's contract).
 *
 * First version: fp32 (real = float; the CUDA build never uses the double
 * build), every kernel checked against the CPU oracle by tests/cuda/test_cuda.
 * All pointers, including token/position/index arrays, are device pointers.
 *
 * Errors: the ops return void, so a failing CUDA call or launch records its
 * message with fh_error() and raises a sticky flag; cuda_ops_check() waits for
 * the device and returns -1 (message in fh_last_error()) if anything failed. */
#ifndef FLOWHN_CUDA_OPS_H
#define FLOWHN_CUDA_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#include "../ops.h"

extern const Ops cuda_ops;

/* Synchronizes the device; 0 if every CUDA call since the last check
 * succeeded, else -1 with the first failure in fh_last_error(). */
int cuda_ops_check(void);

/* Matrix-product precision of linear_fwd/bwd: "fp32" (default), "tf32" or
 * "bf16" (linear.cu). 0, or -1 with fh_last_error() for an unknown mode. */
int cuda_set_matmul_precision(const char *mode);
const char *cuda_matmul_precision(void);

/* For tests: the trained weights' bf16 copy (Ops.train_weights): bytes held
 * (0: none), products it served and times it was made current, since the
 * last train_weights call. */
void cuda_weights_copy_stats(size_t *bytes, unsigned long *served, unsigned long *refreshes);
/* For tests: the copy's bits, laid out as the parameter buffer (n values,
 * without the padding), after making it current if `refresh`; *valid: whether
 * the backend holds it current. 0, or -1 (no copy). */
int cuda_weights_copy_to_host(uint16_t *dst, int refresh, int *valid);

/* For tests: the fused classifier's row kernel (classifier.cu) on n rows of
 * device logits [n, V]: loss[i], and the logit gradients scale * (softmax -
 * onehot) as bf16 into dl16 [n, V] (logits unchanged), or in place over the
 * logits when dl16 is NULL. No product runs. */
void cuda_classifier_rows(real *loss, real *logits, void *dl16, const int *targets, real scale, int n, int V);
/* the same for bf16 mode's row kernel: bf16 logits [n, V] in, the bf16 gradients written over them */
void cuda_classifier_rows16(real *loss, void *logits16, const int *targets, real scale, int n, int V);
/* FLOWHN_CLS_BF16=0 (or cuda_set_cls_bf16(0)): the fused classifier in bf16 mode
 * keeps its logits fp32 (the path before cls-bf16, for an A/B); on (default):
 * the head product writes bf16 logits and the row kernel its gradients over
 * them. Returns the previous setting; -1 leaves it. */
int cuda_set_cls_bf16(int on);
/* FLOWHN_CLS_SMEM (perf-notes, llamapass): the bf16 classifier's row kernel with the row staged in shared memory
 * (2 HBM passes instead of 3, the same bits). 0: the unstaged kernel; 1 (default): staged where two blocks fit an
 * SM; 2 ("big"): staged wherever one block fits. Returns the previous mode; -1 only reads it. */
int cuda_set_cls_smem(int mode);
/* FLOWHN_DW_FINISH=0 (or cuda_set_dw_finish_wide(0)): rmsnorm's dw finish with 8 lanes a column (the old one);
 * on (default): 32 lanes a column (perf-notes, llamapass; another fixed order of the same sum). Returns the
 * previous setting; -1 leaves it. */
int cuda_set_dw_finish_wide(int on);
/* FLOWHN_SWIGLU_V8=0 (or cuda_set_swiglu_v8(0)): swiglu_packed_fwd on the gate|up product's bf16 D with 8-byte
 * accesses (V 4, the old kernel); on (default): 16-byte ones (V 8, perf-notes llamapass; the same bits).
 * Returns the previous setting; -1 leaves it. */
int cuda_set_swiglu_v8(int on);

/* add_rmsnorm_fwd's kernel (rmsnorm.cu): 1 the fused one, 0 the add and
 * rmsnorm_fwd kernels one after the other (the same op, two passes more).
 * On by default (it passed on the H200 in session 6): FLOWHN_ADD_NORM=0 turns it off.
 * Returns the previous setting; -1 leaves it as it is (tests use both). */
int cuda_set_add_norm_fused(int on);

/* The row-per-warp norms, the float4 SwiGLU and the vectorised AdamW /
 * sum_squares kernels (perf-notes, elem-llama) against the first kernels:
 * FLOWHN_ELEM=old (read on first use) selects the first ones, for A/B runs in
 * one binary. Returns the previous setting (1: old); -1 leaves it (tests set both). */
int cuda_set_elem_old(int on);

/* AdamW over the optimizer's runs (Ops.adamw_runs, adamw.cu): 1 (default)
 * one launch (or a few) over the whole range, a persistent grid walking
 * items of 2048 elements; 0 (FLOWHN_ADAMW=old, read on first use) a launch per
 * run, the kernels before (perf-notes, adamw-mt). Returns the previous
 * setting; -1 leaves it. */
int cuda_set_adamw_mt(int on);
/* for tests: the launches the last adamw_runs call made (0: it took the old path) */
int cuda_adamw_runs_launches(void);

/* bf16 shadows (linear.cu): producers (rmsnorm_fwd, add_rmsnorm_fwd,
 * swiglu_fwd, swiglu_bwd) also write the bf16 rounding of their outputs, which
 * the next bf16 products read instead of rounding them again. On by default;
 * FLOWHN_BF16_SHADOW=0 turns it off (read on first use). Returns the previous
 * setting; -1 leaves it as it is (tests use both). */
int cuda_set_bf16_shadow(int on);

/* kept bf16 roundings (linear.cu, Ops.keep_bf16): the forward inputs the
 * model saves keep their bf16 rounding until the backward's weight-gradient
 * products. On by default; FLOWHN_BF16_KEEP=0 turns it off (read on first
 * use). Returns the previous setting; -1 leaves it. cuda_keep_stats: bytes
 * of kept buffers held and inputs holding one. Counters (for tests):
 * cuda_keep_served (products that read a kept rounding), cuda_keep_fills
 * (roundings made into a kept buffer by a product), cuda_keep_produced (kept
 * buffers written by their producer). */
int cuda_set_bf16_keep(int on);
void cuda_keep_stats(size_t *bytes, int *entries);
extern unsigned long cuda_keep_served, cuda_keep_fills, cuda_keep_produced;
/* FLOWHN_BF16_KEEP_VERIFY=1 (or cuda_set_bf16_keep_verify(1)): each served kept
 * rounding is compared on the GPU with a fresh rounding of its source;
 * cuda_keep_stale() (synchronising) is the number of values that differed
 * since the start: 0 unless something wrote a kept input undeclared */
int cuda_set_bf16_keep_verify(int on);
unsigned long cuda_keep_stale(void);

/* bf16-only outputs (linear.cu, Ops.bf16_only): a producer the model marked
 * writes only the bf16 rounding of its output (into the kept buffer, or a
 * shadow held until its one read), not the fp32 values. On by default;
 * FLOWHN_BF16_ONLY=0 writes fp32 as before (read on first use). Returns the
 * previous setting; -1 leaves it. Counters (tests): cuda_bf16_only_elided
 * (outputs written bf16 only), cuda_bf16_only_refused (products refused
 * because an elided fp32 input had no rounding to serve them: an error). */
int cuda_set_bf16_only(int on);
extern unsigned long cuda_bf16_only_elided, cuda_bf16_only_refused;
/* FLOWHN_BF16_GU (default on; needs FLOWHN_BF16_ONLY on): the gate|up product marked bf16_only once = 2
 * writes only its bf16 D and swiglu_packed_* read that (one more rounding: not the switch-off path's bits).
 * cuda_bf16_gu_written counts such products (tests). */
int cuda_set_bf16_gu(int on);
extern unsigned long cuda_bf16_gu_written;
/* FLOWHN_BF16_QKV (default on; needs FLOWHN_BF16_ONLY on): the packed q|k|v product marked bf16_only once = 3
 * writes only its bf16 D (into a branch scratch) and cuDNN's forward conversion reads that, rotating in fp32
 * registers (rope(bf16 x) rounded again: not the switch-off path's bits). Counters (tests):
 * cuda_bf16_qkv_written (such products), cuda_bf16_qkv_restored (D written back to fp32 because the attention
 * did not take the cuDNN path that reads it). */
int cuda_set_bf16_qkv(int on);
extern unsigned long cuda_bf16_qkv_written, cuda_bf16_qkv_restored;
/* FLOWHN_BF16_ATT_O (default on; needs FLOWHN_BF16_ONLY on): the fused RoPE attention's out marked bf16_only
 * once = 4 is stored only as its bf16 rounding: cuDNN's forward writes O straight into out's kept buffer (no
 * from_bf16 pass, no fp32 out; the same bits). cuda_bf16_att_o_written counts such forwards (tests).
 * FLOWHN_BF16_ATT_DO (default on; needs FLOWHN_BF16_ONLY on): the attention's d out marked once = 5 (the o
 * product's dgrad) is written by that product as bf16 D only, which cuDNN's backward reads as dO (no dout
 * conversion). cuda_bf16_att_do_written counts such products, cuda_bf16_att_do_restored the D written back to
 * fp32 because the attention backward did not take the cuDNN path that reads it. */
/* FLOWHN_INPROJ_D16 (default on): Mamba-2's packed in_proj gradient (Ops.pack_bf16) gets its bf16 rounding
 * from its three window producers (gated_rmsnorm_bwd's dz, conv1d_silu_bwd's dx|B|C, copy_rows' ddt), and
 * the in_proj backward product reads that instead of rounding the fp32 matrix (the same bits). Counters
 * (tests): cuda_pack_windows (windows written with their rounding), cuda_pack_served (products served a
 * complete pack). cuda_pack_rounding: the current branch's pack buffer if (x, n) is its pack and complete. */
int cuda_set_inproj_d16(int on);
extern unsigned long cuda_pack_served, cuda_pack_windows;
/* FLOWHN_DZXD_FP32 (default off; "1" on): with a pack the model marked bf16-only (Ops.bf16_only once = 6:
 * Mamba-2's dzxd, read only by its product), the window producers store only their rounding, not the fp32
 * (needs FLOWHN_BF16_ONLY and FLOWHN_INPROJ_D16 on); on: fp32 written as well, as before. The same bits either
 * way. Counters (tests): cuda_pack_elided (windows written without fp32), cuda_pack_filled (column runs of an
 * elided pack rounded from fp32 at the product because their producer could not write the rounding). */
int cuda_set_dzxd_fp32(int on);
extern unsigned long cuda_pack_elided, cuda_pack_filled;
/* 1 when [x, x + n) overlaps fp32 a bf16-only producer never wrote (linear.cu; also in common.cuh) */
int cuda_bf16_absent(const float *x, size_t n);
const void *cuda_pack_rounding(const float *x, size_t n);
int cuda_set_bf16_att_o(int on);
int cuda_set_bf16_att_do(int on);
extern unsigned long cuda_bf16_att_o_written, cuda_bf16_att_do_written, cuda_bf16_att_do_restored;
/* FLOWHN_BF16_DACT (default on; needs FLOWHN_BF16_ONLY on): the MLP's d act marked once = 7 (the down
 * product's dgrad) is written by that product as bf16 D only, which swiglu_packed_bwd reads as its dout (not
 * the same bits: d act rounded once more). cuda_bf16_dact_written counts such products, cuda_bf16_dact_read
 * the swiglu_packed_bwd calls that read one (tests). */
int cuda_set_bf16_dact(int on);
extern unsigned long cuda_bf16_dact_written, cuda_bf16_dact_read;
/* FLOWHN_BF16_DNORM (default on; needs FLOWHN_BF16_ONLY on): the MLP norm's output gradient dv marked once = 8
 * (the gate|up product's dgrad) is written by that product as bf16 D only, which rmsnorm_bwd's row kernel reads
 * as its dout. Counters (tests): products, reads, and D written back to fp32 (rmsnorm_bwd's other path). */
int cuda_set_bf16_dnorm(int on);
extern unsigned long cuda_bf16_dnorm_written, cuda_bf16_dnorm_read, cuda_bf16_dnorm_restored;
/* FLOWHN_BF16_DNORM_ATT (default on; needs FLOWHN_BF16_ONLY on; independent of FLOWHN_BF16_DNORM): the
 * attention norm's input gradient du marked once = 9 (the packed q|k|v product's dgrad) likewise, read by the same
 * rmsnorm_bwd row kernel. Counters (tests) as above, for once = 9 only. */
int cuda_set_bf16_dnorm_att(int on);
extern unsigned long cuda_bf16_dnorm_att_written, cuda_bf16_dnorm_att_read, cuda_bf16_dnorm_att_restored;
/* FLOWHN_BF16_RESID (default on; needs FLOWHN_BF16_ONLY on): a residual branch's output marked once = 10 (the
 * o product's, the down product's; model.c) is written by that product as bf16 D only, which add_rmsnorm_fwd's
 * row kernel reads as its a or b (not the same bits: the branch rounded once more before the add). Counters
 * (tests): products, reads, and D written back to fp32 (the add's other paths). */
int cuda_set_bf16_resid(int on);
extern unsigned long cuda_bf16_resid_written, cuda_bf16_resid_read, cuda_bf16_resid_restored;
/* TEST HOOK (test_cuda's test_bf16_d16_rc only; linear.cu): installs the bf16 D record of mark once (7, 8, 9,
 * 10) over x [0, n) from the device bf16 values d16 [n], as that mark's product would (mark spent, switch and
 * one-record rules, x's fp32 poisoned and absent, written counter), without a cuBLASLt product, so racecheck can
 * follow the reading kernels. 1 installed, 0 declined (as the product would), -1 error. */
int cuda_test_d16_install(int once, const float *x, size_t n, const void *d16);

/* cuDNN's fused flash attention (attention_cudnn.cu) for bf16 causal
 * self-attention (qpos == kpos): FLOWHN_ATTN_CUDNN=0 turns it off (read on
 * first use); cuda_set_attn_cudnn returns the previous setting, -1 leaves it.
 * cuda_attn_cudnn_loaded: 1 if libcudnn loaded (dlopen, tried once).
 * cuda_attn_cudnn_runs: cuDNN executions so far (tests catch a silent
 * fallback with it). FLOWHN_ATTN_CUDNN_LOG=1 prints the version, each
 * graph's build steps and the plan chosen. */
int cuda_set_attn_cudnn(int on);
int cuda_attn_cudnn_loaded(void);
extern unsigned long cuda_attn_cudnn_runs;
/* Around cuDNN's attention: FLOWHN_CUDNN_KEEP (default 1) keeps the forward's
 * bf16 Q, K (rotated), V in the kept buffers of q, k, v (the model keeps them,
 * Ops.keep_bf16) and reads them and out's kept rounding in the backward
 * instead of converting again; 0 converts again (A/B). cuda_cudnn_kept_served
 * counts the backward inputs so read (tests). FLOWHN_CUDNN_CONV=old: the first
 * (scalar, one launch per tensor) conversion kernels; else the vectorised ones,
 * q, k, v in one launch and dq, dk, dv in one. Both return the previous
 * setting; -1 leaves it. */
int cuda_set_cudnn_keep(int on);
int cuda_set_cudnn_conv_old(int on);
extern unsigned long cuda_cudnn_kept_served;
/* FLOWHN_ROPE_CACHE (default 1): the cuDNN attention's RoPE (cos, sin) table is made again only when its
 * inputs may have changed (attention_cudnn.cu rope_table says why that is safe); 0 makes it every call.
 * cuda_rope_tables counts the tables made (tests). */
int cuda_set_rope_cache(int on);
extern unsigned long cuda_rope_tables;
/* FLOWHN_CUDNN_DV (default 1): when the attention backward stores only the bf16 rounding of the packed
 * dq | dk | dv (bf16-only dqkv, the q|k|v product's one read), cuDNN's backward writes dV straight into that
 * rounding's dv columns (row stride P) and the conversion handles dq, dk only; 0 copies dV as before.
 * cuda_cudnn_dv_direct counts such backwards; cuda_cudnn_dv_decline (tests) makes the strided plan count as
 * declined by cuDNN, so the dense one runs (the fallback). */
int cuda_set_cudnn_dv(int on);
extern unsigned long cuda_cudnn_dv_direct;
extern unsigned long cuda_cudnn_dv_planned;   /* backwards that had the strided plan and claimed early */
extern int cuda_cudnn_dv_decline;
/* FLOWHN_CUDNN_GRADVEC (default 1): the backward's gradient conversion (dq, dk, dv from cuDNN's bf16, RoPE's
 * inverse) by rows with 16-byte accesses (cudnn_grad_rows_kernel, where hd % 16 == 0); 0: the quad kernel
 * (cudnn_grad_vec_kernel). The same bits. cuda_cudnn_grad_rows counts the row kernel's launches (tests). */
int cuda_set_cudnn_gradvec(int on);
extern unsigned long cuda_cudnn_grad_rows;
/* FLOWHN_CUDNN_VKEEP (default 1; perf-notes "vkeep"): the packed q|k|v product marked bf16_only once = 3 writes
 * its bf16 D straight into qkv's kept buffer (not a branch scratch); cuDNN's forward rotates Q and K in place
 * there and both cuDNN graphs bind Q, K, V with row stride P, so V is never copied. 0: D into the scratch, the
 * forward's conversion copies V (today's path). Counters (tests): cuda_bf16_qkv_in_keep (products that wrote D
 * into the keep), cuda_cudnn_vkeep_runs (forwards on the strided layout), cuda_cudnn_vkeep_served (backwards
 * reading it). cuda_cudnn_vkeep_decline (tests): the strided plans count as declined by cuDNN (the fallback: D
 * written back to fp32, the keep given back, today's path). cuda_cudnn_kept_qkv (tests): the attention's owned
 * keep of the packed q | k | v (B n P bf16 values) for these parameters, NULL if none; *strided 1 when it is
 * the strided layout (the product's [rows, P], Q and K rotated), 0 when dense (Q, K, V one after the other). */
int cuda_set_cudnn_vkeep(int on);
extern unsigned long cuda_bf16_qkv_in_keep, cuda_cudnn_vkeep_runs, cuda_cudnn_vkeep_served;
extern int cuda_cudnn_vkeep_decline;
const void *cuda_cudnn_kept_qkv(const float *q, const int *pos, int B, int n, int nh, int nkv, int hd, float theta,
                                int *strided);

/* cuBLASLt algorithm tuning (linear.cu lt_tune): 1 a new plan times the
 * heuristic's first 8 algorithms on its first product and keeps the fastest
 * (default), 0 it takes the heuristic's first (FLOWHN_LT_TUNE=0; read on
 * first use). Applies to plans made from then on. Returns the previous
 * setting; -1 leaves it as it is. */
int cuda_set_lt_tune(int on);
/* drops every cached cuBLASLt plan: the next products plan (and tune) again.
 * For tests; recorded graphs keep the algorithms they recorded. */
void cuda_lt_forget_plans(void);

/* conv1d (conv1d.cu) and gated RMSNorm (gated_rmsnorm.cu) kernels: 1 the
 * segment-walking conv and register-resident gated norm (default), 0 the
 * first ones (for A/B timing; FLOWHN_M2_KERNELS=old). The fused conv1d_silu
 * op always takes the new conv kernels (up to 4 taps). Returns the previous
 * setting; -1 leaves it as it is. */
int cuda_set_m2_kernels(int on);
/* within the register gated-norm kernels: 1 (default) the forward writing its
 * output's bf16 rounding, the backward with the next row in flight and the
 * parallel dw sum; 0 (FLOWHN_GNORM=old) those kernels as before (A/B). Returns
 * the previous setting; -1 leaves it as it is. */
int cuda_set_gnorm_new(int on);
/* within the segment conv kernels: 1 (default) L2 prefetches ahead of the
 * walks and dx's bf16 rounding written by the backward (a shadow); 0
 * (FLOWHN_CONV=old) those kernels as before (A/B). Returns the previous
 * setting; -1 leaves it as it is. */
int cuda_set_conv_new(int on);
/* within the new segment conv kernels (cuda_set_conv_new on): 1 (default) the
 * ring kernels, each thread's rows streamed through shared memory with
 * cp.async (same bits); 0 (FLOWHN_CONV_RING=0) the prefetching segment
 * kernels (A/B). Returns the previous setting; -1 leaves it as it is. */
int cuda_set_conv_ring(int on);

/* Mamba-1 selective scan kernels (selective_scan.cu): 1 the register-resident
 * ones (a thread per (b, e) holding its <= 16 states; default), 0 the
 * thread-per-state ones (FLOWHN_SCAN1=old, read on first use; also taken for
 * d_state > 16 and, in the backward, chunks over 32 steps). Returns the
 * previous setting; -1 leaves it as it is (tests use both). */
int cuda_set_scan1_kernels(int on);
/* the register backward (FLOWHN_SCAN1_BWD, read on first use): 5 the pair kernel with its
 * per-(t, e) work done once an element by all lanes (default, branch scan1b), 3 the session-10
 * pair kernel (=pair: two lanes a channel, 8 states a lane, 14 warps/SM), 4 that at 12 warps/SM and no spills
 * (=pair12), 2 the V2 kernel (=v2: fewer instructions a step,
 * L2-only tile copies), 1 the session-8 30 KB one (=low), 0 the 63.7 KB layout (=nosplit);
 * returns the previous; -1 only reads */
int cuda_set_scan1_bwd(int mode);

/* The Mamba-2 SSD chunk backward for P <= 64 (ssd.cu, FLOWHN_SSD_CBWD, read on first use): 0 its
 * first thread layout (=old), 1 the warp-local one (=wl), 2 the mma fragment layout (=mma), 3 the bf16
 * variant at the bf16 matmul precision as ssd-cbwd3 left it (=bf3: bf16 operand tiles, 3 blocks per SM),
 * 4 (=bf4) the same with ssd-cbwd4's conflict-free shared tiles and float2 global accesses, 5 (default) that with
 * four of its products' fragments loaded by ldmatrix (ssd-ldsm; 3, 4, 5: the mma layout at tf32). The fp32
 * precision runs the warp-local layout for 2 to 5. Returns the previous setting;
 * -1 leaves it as it is (tests run each). */
int cuda_set_ssd_cbwd(int v);
/* The Mamba-2 SSD forward's chunk_state and chunk_scan at the bf16 matmul precision with P <= 64, N <= 128
 * (ssd.cu, FLOWHN_SSD_FWD_KERNEL, read on first use): 1 (default) ssd_chunk_state_bf_kernel and
 * ssd_chunk_scan_bf_kernel (bf16 operand tiles read once up front, mma fragment layout; perf-notes
 * ssd-fwd2), 0 (=old) ssd_chunk_state_kernel<true> and ssd_chunk_scan_kernel. Returns the
 * previous setting; -1 leaves it as it is (tests run both). */
int cuda_set_ssd_fwd_kernel(int on);
/* The bf16 forward kernels' variant where cuda_set_ssd_fwd_kernel is on (ssd.cu, FLOWHN_SSD_FWD3, read on first
 * use): 1 (default) ssd-fwd3's (ldmatrix + bf16 m16n8k16 products, chunk_scan at 4 blocks/SM), 0 ssd-fwd2's.
 * Same -1 / 0 / 1 convention. */
int cuda_set_ssd_fwd3(int on);
/* Where the V 3 bf16 forward runs (cuda_set_ssd_fwd3 on, P <= 64, N <= 128): 1 (default) chunk_state and the
 * state pass as one walk per (b, h, 64-wide N tile) writing only the prefix states (ssd.cu, FLOWHN_SSD_FWD_WALK, read
 * on first use; perf-notes ssd-fwd-walk), 0 the two kernels. Same -1 / 0 / 1 convention. */
int cuda_set_ssd_fwd_walk(int on);
/* The Mamba-2 SSD backward's chained own terms + state pass at the bf16 matmul precision with P <= 64,
 * N <= 128 (ssd.cu, FLOWHN_SSD_SBWD, read on first use; FLOWHN_SSD_BWD=old, the two separate kernels, comes
 * first): 2 (default) ssd_chunk_state_bwd_walk_bf_kernel (no chain between blocks: one block walks the chunks of
 * a (b, h, N tile); perf-notes ssd-sbwd-lb), 1 (=chain) ssd_chunk_state_bwd_chain_bf_kernel (bf16 operand tiles,
 * own_c kept in the mma accumulators across the chain's wait; perf-notes ssd-sbwd; the same floats as 2), 0 (=old)
 * ssd_chunk_state_bwd_chain_kernel. Returns the previous setting; -1 leaves it as it is (tests run all). */
int cuda_set_ssd_sbwd(int on);
/* That kernel's launch bounds (FLOWHN_SSD_SBWD_BLOCKS, read on first use): 1 (default) 4 blocks per SM (64
 * registers, a 64-byte spill), 0 (=3) 3 blocks per SM (80 registers, no spill). Returns the previous setting;
 * -1 leaves it as it is (tests run both). */
int cuda_set_ssd_sbwd_blocks(int on);

/* Programmatic Dependent Launch of the decode kernels in recorded graphs
 * (common.cuh cuda_launch): on by default, FLOWHN_PDL=0 turns it off (read on
 * first use). It applies to graphs recorded after the call. Returns the
 * previous setting; -1 leaves it as it is (tests use both). */
int cuda_set_pdl(int on);
/* the same for the gemv products alone, while cuda_set_pdl is on (stream.cu):
 * 1 (default) PDL with the _pdl kernels (weight loads before the wait), 0
 * (FLOWHN_PDL_GEMV=0) plain launches of main's kernels while the other decode
 * kernels keep PDL, 2 (FLOWHN_PDL_GEMV=2) PDL launches of main's code after a
 * wait at the top. Returns the previous setting; -1 leaves it. */
int cuda_set_pdl_gemv(int on);

#ifdef __cplusplus
}
#endif

#endif
