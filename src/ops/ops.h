/* ops.h - the op interface every backend implements.
 *
 * The model (src/model/model.c) is written once against this table; the CPU
 * backend (src/ops/cpu, the fp32/fp64 oracle) and the CUDA backend
 * (src/ops/cuda) fill it in. Pointers are in the backend's memory.
 *
 * Conventions, for every op:
 *   - Tensors are row-major and contiguous; activations are [B, n, C] with the
 *     channel dimension last. Linear weights are [out, in] (PyTorch layout).
 *   - Forward ops overwrite their outputs.
 *   - Backward ops ACCUMULATE (+=) into the parameter gradients they produce
 *     (one exception: linear_bwd's dw under FH_DW_OVERWRITE, below).
 *     Their input (activation) gradients are accumulated when the op's last
 *     argument `acc` is FH_ACC, and overwritten when it is FH_OVERWRITE (the
 *     buffer's first writer in the step: no zeroing pass before it, and no
 *     read of the old contents, which may be anything, NaN included).
 *     Overwriting gives the same values as accumulating into zeros (0 + x is
 *     x; the CPU backend's results are bit-identical, tests/test_zero_elim.c).
 *     A NULL gradient pointer means "not needed" and is skipped.
 *   - Ops that do matmul-like work add the multiply-adds their loops execute to
 *     fh_macs (core/flopcount.h); the formula is stated at each op and the
 *     analytic FLOP model (model/flops.c) must agree with it exactly.
 *   - Token positions (`pos` arrays) are the tokens' positions in the original
 *     sequence, ascending; the same for every sequence in the batch.
 */
#ifndef FLOWHN_OPS_H
#define FLOWHN_OPS_H

#include <stddef.h>
#include "../core/real.h"

/* The scalars of a training step that runs without host round trips (graph
 * capture, see Ops.step_scale): the host writes the inputs before the step,
 * the step's ops read them and write the outputs, the host reads those after.
 * Lives in backend memory. */
typedef struct {
    double loss_sum;            /* out: sum of the per-token losses (ignored tokens give 0) */
    double sumsq;               /* out: sum of the squared gradients */
    double bc1, bc2;            /* in: AdamW bias corrections 1 - beta1^t, 1 - beta2^t (beta as real) */
    double grad_scale, clip;    /* in: gradient multiplier before clipping; clip norm (<= 0: none) */
    float lr;                   /* in: learning rate */
    float scale;                /* out: grad_scale after clipping */
    int ok;                     /* out: loss and gradient finite, the update was applied */
    int pad_;
} StepScalars;

/* the `acc` argument of the backward ops (see the conventions above).
 * FH_DW_OVERWRITE, for linear_bwd and the classifier only, OR-ed into acc: dw
 * is overwritten (beta 0: not read, not zeroed first; the classifier's first
 * row chunk) instead of accumulated; db still accumulates. The model sets it
 * on a weight gradient's first writer of an accumulation (model.c lin_bwd,
 * dw_flag), which saves the per-step gradient memset of the product weights
 * and the head. Other ops never see it. */
enum { FH_OVERWRITE = 0, FH_ACC = 1, FH_DW_OVERWRITE = 2 };

typedef struct Ops {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);                 /* zero-filled; NULL + fh_error on failure */
    void (*release)(void *p);
    void (*zero)(void *p, size_t bytes);
    /* Optional (NULL: the caller loops over zero). Zeroes the n runs
     * [base + runs[2i], + runs[2i + 1]) (offsets and counts in reals; disjoint,
     * ascending, inside [base, base + span)) and nothing else. `runs` lives in
     * the backend's memory and is written by the caller once (from_host), so a
     * recorded step holds one launch with fixed pointers (model.c
     * model_zero_grad: the gradient buffer's non-product tensors). span: the
     * extent the backend may count as written (its bookkeeping, as for zero). */
    void (*zero_runs)(real *base, size_t span, const size_t *runs, int n);
    void (*to_host)(void *dst_host, const void *src, size_t bytes);
    void (*from_host)(void *dst, const void *src_host, size_t bytes);

    /* ---- elementwise ---- */
    /* out[i] = a[i] + b[i] */
    void (*add)(real *out, const real *a, const real *b, size_t n);
    /* dst[i] += alpha * src[i] */
    void (*accumulate)(real *dst, const real *src, real alpha, size_t n);

    /* ---- embedding: out[i,:] = wte[tok[i],:] ---- */
    void (*embedding_fwd)(real *out, const int *tok, const real *wte, int N, int C);
    void (*embedding_bwd)(real *dwte, const real *dout, const int *tok, int N, int C);

    /* ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w; saves rstd[N] ---- */
    void (*rmsnorm_fwd)(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps);
    void (*rmsnorm_bwd)(real *dx, real *dw, const real *dout, const real *x, const real *w,
                        const real *rstd, int N, int C, int acc);
    /* the residual add and the next sublayer's RMSNorm in one pass:
     * r = a + b, then out = rmsnorm(r) * w as rmsnorm_fwd (saves rstd[N]).
     * r may be a or b (in place). The same bits as add + rmsnorm_fwd. */
    void (*add_rmsnorm_fwd)(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N,
                            int C, real eps);

    /* ---- linear: out[N,OC] = in[N,IC] @ w[OC,IC]^T (+ b[OC]); b may be NULL.
     * MACs: N*IC*OC (forward); backward is not counted. ---- */
    void (*linear_fwd)(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC);
    void (*linear_bwd)(real *din, real *dw, real *db, const real *dout, const real *in,
                       const real *w, int N, int IC, int OC, int acc);   /* acc: din's */

    /* ---- SwiGLU: out = silu(gate) * up, all [n] ---- */
    void (*swiglu_fwd)(real *out, const real *gate, const real *up, size_t n);
    void (*swiglu_bwd)(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n,
                       int acc);
    /* the same on gate and up side by side (each may be NULL: the model then
     * runs the gate and up products apart, as before): gu [N, 2C], row r's
     * gate in columns [0, C) and its up in [C, 2C) (the output of ONE product
     * with the stacked weight [Wgate; Wup], adjacent in the parameter buffer);
     * out, dout [N, C]; dgu [N, 2C] in gu's layout (acc as swiglu_bwd). The
     * same per-element expressions as swiglu_fwd / _bwd: the same bits. */
    void (*swiglu_packed_fwd)(real *out, const real *gu, int N, int C);
    void (*swiglu_packed_bwd)(real *dgu, const real *dout, const real *gu, int N, int C, int acc);

    /* ---- SiLU: out = x * sigmoid(x) ---- */
    void (*silu_fwd)(real *out, const real *x, size_t n);
    void (*silu_bwd)(real *dx, const real *dout, const real *x, size_t n, int acc);

    /* ---- RoPE (rotate-half convention, as HF LLaMA): x [B, n, nh, hd],
     * position of token j of each sequence is pos[j]. out may not alias x. ---- */
    void (*rope_fwd)(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta);
    void (*rope_bwd)(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta, int acc);

    /* ---- causal grouped-query attention over token subsets ----
     * q [B, nq, nh, hd]; k, v [B, nk, nkv, hd]; qpos[nq], kpos[nk] ascending.
     * Query i may attend key j iff kpos[j] <= qpos[i] (a query with no visible key
     * outputs zeros). Head h uses kv head h / (nh / nkv). Scale 1/sqrt(hd).
     * out [B, nq, nh, hd]; lse [B, nh, nq] saved log-sum-exp.
     *   isolated context: kpos == qpos (the branch's own tokens);
     *   prefix context:   kpos = 0..T-1 (all tokens).
     * MACs: 2 * hd * (visible keys) per (batch, head, query).
     * Row strides: token (b, i) of q (and of dq) starts at q + (b*nq + i)*ldq, of k, v
     * (dk, dv) at k + (b*nk + j)*ldkv; ldq >= nh*hd, ldkv >= nkv*hd (dense: equal). So
     * q, k, v may be column windows of one packed [rows, qd + 2 kvd] buffer (the one
     * q/k/v product's output: model.c attn_fwd, perf-notes fuse-proj), dq, dk, dv
     * likewise; only their own columns are read or written. out, dout, lse are dense. */
    void (*attention_fwd)(real *out, real *lse, const real *q, const real *k, const real *v,
                          const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd,
                          int ldq, int ldkv);
    void (*attention_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *out,
                          const real *lse, const real *q, const real *k, const real *v,
                          const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd,
                          int acc,   /* acc: dq, dk, dv (overwritten: rows no query/key reaches get 0) */
                          int ldq, int ldkv);

    /* ---- causal depthwise conv1d: x, out [B, n, C]; w [C, K]; b [C] (may be NULL)
     * out[t,c] = b[c] + sum_{k=0}^{K-1} w[c,k] * x[t-(K-1)+k, c]   (x[<0] = 0)
     * MACs: C * (taps whose input index is >= 0), i.e. C*(n*K - K*(K-1)/2) per
     * sequence when n >= K. ---- */
    void (*conv1d_fwd)(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K);
    void (*conv1d_bwd)(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                       int B, int n, int C, int K, int acc);   /* acc: dx's */
    /* conv1d then SiLU in one op, Mamba's x -> silu(conv(x)) (optional: NULL
     * makes the model compose conv1d_fwd and silu_fwd as before):
     *   out = silu(conv1d(x, w, b)), MACs as conv1d_fwd.
     * The pre-activation is not stored: the backward recomputes it from x, w
     * and b (it reads x for dw anyway), which saves writing and reading one
     * [B, n, C] tensor per layer. dout is out's gradient; dx, dw, db are
     * conv1d_bwd's for the gradient dout * silu'(conv1d(x)). The same values
     * as the composition (CPU: the same bits).
     * Row stride ldx (>= C) of x and dx: token (b, t) of x starts at x + (b*n + t)*ldx,
     * so x may be a column window of a packed buffer (Mamba-2's x|B|C in the one in_proj
     * product's output [rows, E + CX + nh], dx in its gradient: model.c mamba2_fwd,
     * perf-notes fuse-inproj); only dx's own C columns are written. out, dout dense. ---- */
    void (*conv1d_silu_fwd)(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K,
                            int ldx);
    void (*conv1d_silu_bwd)(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w,
                            const real *b, int B, int n, int C, int K, int acc,   /* acc: dx's */
                            int ldx);

    /* ---- Mamba-1 selective scan, fused with softplus, D skip and SiLU(z) gate.
     * x, z, dt_raw [B, n, E]; Bm, Cm [B, n, S]; A_log [E, S]; D [E].
     *   dt = softplus(dt_raw); A = -exp(A_log)
     *   h_t = exp(dt_t*A) * h_{t-1} + dt_t * Bm_t * x_t   (h_{-1} = 0, per (e, s))
     *   y_t = (sum_s Cm_t[s] h_t[e,s] + D[e] x_t[e]) * silu(z_t[e])
     * hs [B, nchunks+1, E, S], nchunks = ceil(n/L) (L >= 1): the states at chunk
     * boundaries, saved by forward for backward (scratch owned by caller);
     * hs[:, c] is the state entering chunk c (steps [c*L, c*L+L)), hs[:, 0] = 0,
     * hs[:, nchunks] the final state. The backward recomputes the states inside
     * each chunk from hs, so the forward saves (n/L) times less than every h_t.
     * MACs: 3 * n * E * S per sequence (the backward's recomputation is not
     * counted, as no backward is). ---- */
    void (*selective_scan_fwd)(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log,
                               const real *Bm, const real *Cm, const real *D, const real *z,
                               int B, int n, int E, int S, int L);
    void (*selective_scan_bwd)(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD,
                               real *dz, const real *dy, const real *hs, const real *x, const real *dt_raw,
                               const real *A_log, const real *Bm, const real *Cm, const real *D,
                               const real *z, int B, int n, int E, int S, int L,
                               int acc);   /* acc: dx, ddt_raw, dBm, dCm, dz (dA_log, dD accumulate) */

    /* ---- Mamba-2 SSD (scalar A per head), computed by chunks of length L.
     * xbc [B, n, E + 2*G*N] (after conv + SiLU): x = channels [0, E) seen as
     *   [nh, P] (E = nh*P), Bm = [E, E+G*N) as [G, N], Cm = [E+G*N, E+2*G*N).
     * dt_raw [B, n, nh]; dt_bias, A_log, D [nh]. Head h uses group h / (nh/G).
     *   dt = softplus(dt_raw + dt_bias); a_t = exp(dt_t * -exp(A_log))
     *   h_t = a_t h_{t-1} + dt_t x_t Bm_t^T  ([P, N] per head);  y_t = h_t Cm_t + D x_t
     * y [B, n, E]. states [B, nchunks+1, nh, P, N] saved chunk-boundary states.
     * states[c] is the state entering chunk c; states[nchunks] the final state.
     * MACs: the chunked algorithm's, per sequence (nfull = n/L, r = n%L):
     *   (G*N + nh*P) * (nfull*L(L+1)/2 + r(r+1)/2) + nh*P*N*(2n + nchunks)
     * (src/ops/cpu/ssd.c; model/flops.c macs_ssd_chunked). ---- */
    void (*ssd_fwd)(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                    const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L);
    void (*ssd_bwd)(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy,
                    const real *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                    const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L,
                    int acc);   /* acc: dxbc, ddt_raw (ddt_bias, dA_log, dD accumulate) */

    /* ---- gated RMSNorm (Mamba-2, norm after gate):
     * out = rmsnorm(y * silu(z)) * w; y, z, out [N, C]; saves rstd[N].
     * Row stride ldz (>= C) of z and dz (row i at z + i*ldz): z may be the column window
     * [0, E) of Mamba-2's packed in_proj output, dz of its gradient (perf-notes
     * fuse-inproj); only dz's own C columns are written. y, dy, out, dout dense. ---- */
    void (*gated_rmsnorm_fwd)(real *out, real *rstd, const real *y, const real *z, const real *w,
                              int N, int C, real eps, int ldz);
    void (*gated_rmsnorm_bwd)(real *dy, real *dz, real *dw, const real *dout, const real *y,
                              const real *z, const real *w, const real *rstd, int N, int C,
                              int acc,   /* acc: dy, dz */
                              int ldz);

    /* ---- token split / fusion.
     * gather:  out[b, j, :] = in[b, idx[j], col0 : col0+C]   in rows have width ldi
     * scatter: out[b, idx[j], col0 : col0+C] = in[b, j, :]   out rows have width ldo
     * out is [B, n_sel, C] for gather, [B, T, ldo] for scatter (rows not named in
     * idx are left untouched). Backward: scatter-add / gather-add. ---- */
    void (*gather_fwd)(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
    void (*gather_bwd)(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
    void (*scatter_fwd)(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0);
    void (*scatter_bwd)(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0,
                        int acc);   /* acc: din's; din [B, n_sel, C] is written whole */
    /* the split's gather fused into the branch's first norm (optional: NULL makes
     * the model compose gather_fwd/_bwd and rmsnorm_fwd/_bwd as before).
     * rows: row (b, j) of the [B, n_sel, C] tensors is row (b, idx[j]) of the
     * [B, T, C] ones (x, dfull).
     *   fwd: xsel[b,j,:] = x[b, idx[j], :]; out, rstd = rmsnorm_fwd(xsel) (the
     *        same per-row arithmetic, the same bits).
     *   bwd: dfull[b, idx[j], :] += dres[b,j,:] + dx[b,j,:] (dres may be NULL: + 0
     *        is skipped), dx the input gradient rmsnorm_bwd gives from dout, xsel
     *        (x here), w, rstd; dw += as rmsnorm_bwd. The same additions in the same
     *        order as rmsnorm_bwd(FH_ACC) into dres and then gather_bwd into dfull.
     *        dres is read only. idx holds distinct positions. ---- */
    void (*rmsnorm_gather_fwd)(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w,
                               int B, int T, int n_sel, int C, real eps);
    void (*rmsnorm_gather_bwd)(real *dfull, real *dw, const real *dres, const real *dout, const real *x,
                               const real *w, const real *rstd, const int *idx, int B, int T, int n_sel, int C);

    /* ---- fused softmax + cross-entropy over logits [N, V]; target < 0 = ignored.
     * forward: loss[i] = lse_i - logits[i, target_i] (0 when ignored), saves lse[N].
     * backward: dlogits[i,:] += dloss[i] * (softmax(logits[i]) - onehot(target_i)). ---- */
    void (*xent_fwd)(real *loss, real *lse, const real *logits, const int *targets, int N, int V);
    void (*xent_bwd)(real *dlogits, const real *dloss, const real *logits, const real *lse,
                     const int *targets, int N, int V);

    /* ---- fused training classifier: the output head and the cross-entropy,
     * forward and backward at once, so the [N, V] logits are never stored whole
     * (they are made and consumed by chunks of rows):
     *   logits = x w^T; loss[i] as xent_fwd (0 when targets[i] < 0);
     *   dlogits[i,:] = scale * (softmax(logits_i) - onehot(t_i)) for counted rows, 0 otherwise;
     *   dx [N, H] += dlogits w;  dw [V, H] += dlogits^T x  (accumulate; dx may be NULL).
     * acc: dx as the other backward ops (FH_ACC adds, FH_OVERWRITE writes
     * every row: each row chunk its own rows); FH_DW_OVERWRITE OR-ed in:
     * dw = dlogits^T x instead (not read, not zeroed first: the first row
     * chunk overwrites, the rest add; the model's lazy head, model.c dw_flag).
     * For training only: it runs the head's backward inside the forward.
     * MACs: N*H*V (the forward product, as linear_fwd). ---- */
    void (*classifier)(real *loss, real *dx, real *dw, const real *x, const real *w, const int *targets, real scale,
                       int N, int H, int V, int acc);

    /* ---- single-token recurrent steps for generation (state updated in place) ----
     * Mamba-1: h [B, E, S]; x, z, dt_raw, y [B, E]; Bm, Cm [B, S]; same math as
     * selective_scan_fwd for one time step starting from state h.
     * Mamba-2: h [B, nh, P, N]; xbc [B, E + 2GN]; dt_raw [B, nh]; y [B, E]; same math
     * as ssd_fwd for one step (no chunking at n = 1). MACs as the scans (3 per state element). */
    void (*selective_scan_step)(real *y, real *h, const real *x, const real *dt_raw, const real *A_log,
                                const real *Bm, const real *Cm, const real *D, const real *z, int B, int E, int S);
    void (*ssd_step)(real *y, real *h, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                     const real *D, int B, int nh, int P, int G, int N);

    /* ---- optimizer ----
     * AdamW with decoupled weight decay, one tensor (or a run of tensors with
     * the same decay) at a time; g is multiplied by grad_scale first (gradient
     * clipping / accumulation averaging). m, v: fp32 moments.
     *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
     *   p -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * p)    (t = step, from 1) */
    void (*adamw)(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2, real eps,
                  real wd, real grad_scale, int step);
    /* sum of x[i]^2 in double (gradient norm); returns NaN/Inf if any x is not finite */
    double (*sum_squares)(const real *x, size_t n);

    /* ---- concurrency hint (may be NULL: the backend runs everything in order) ----
     * set_branch(1) / set_branch(2) mark the ops that follow as one of the two
     * independent branches of a parallel block; set_branch(0) returns to the
     * main sequence, after which everything waits for both branches. Ops of
     * the two branches must not write the same memory. (CUDA: two streams.) */
    void (*set_branch)(int branch);

    /* ---- decoding helpers (src/infer/generate.c): what the generator does
     * between the ops above, on the backend's memory ----
     * copy_rows: dst[r*ldd + c] = src[r*lds + c] for r < rows, c < cols
     *   (the KV-cache append: a [B, kvd] row block into [B, W, kvd] at row t;
     *   FlowHN's branch outputs side by side). dst and src do not overlap.
     * conv1d_step: the rolling window win [B, K, C] (the last K inputs, oldest
     *   first) drops its oldest row and takes x [B, C] as its newest, then
     *   out[b,c] = bias[c] + sum_k w[c,k] win[b,k,c] (bias may be NULL): conv1d_fwd
     *   at the window's last position. MACs: B*C*K.
     * attention_decode: one query per sequence over a KV cache, every cached key
     *   visible (they are all at or before the query's position). q, out [B, nh, hd];
     *   k, v [B, ld, nkv, hd] of which rows [0, nk) are used; head h uses kv head
     *   h / (nh / nkv); scale 1/sqrt(hd); nk = 0 gives zeros. Same values as
     *   attention_fwd with nq = 1. MACs: 2*hd*nk per (batch, head). */
    void (*copy_rows)(real *dst, int ldd, const real *src, int lds, int rows, int cols);
    void (*conv1d_step)(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K);
    void (*attention_decode)(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh,
                             int nkv, int hd);

    /* ---- read-only weights hint (may be NULL) ----
     * freeze_weights(p, n): the n values at p (the parameter buffer) will not
     * change until freeze_weights(NULL, 0), so the backend may keep a converted
     * copy of them (CUDA with bf16 products: every weight rounded to bf16 once,
     * instead of before each product). The generator freezes while it lives;
     * training never does (its optimizer writes the weights every step: see
     * train_weights).
     * Returns 0, or -1 if the copy could not be made (nothing is frozen then). */
    int (*freeze_weights)(const real *p, size_t n);

    /* The same two with the position read from backend memory, pos[0] = t (may
     * be NULL): a decode step recorded once as a graph then serves every
     * position (generate.c; the caches' row t, every cached key visible).
     * copy_rows_at: copy_rows(dst + pos[0] * cols, ldd, src, cols, rows, cols)
     * attention_decode_at: attention_decode with nk = pos[0] + 1. */
    void (*copy_rows_at)(real *dst, int ldd, const real *src, int rows, int cols, const int *pos);
    void (*attention_decode_at)(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                                int nh, int nkv, int hd);

    /* ---- a training step without host round trips (src/train/step.c) ----
     * The same arithmetic as model_forward_backward's loss and
     * optimizer_step's norm, clipping and AdamW, but every scalar stays in
     * backend memory (StepScalars s), so the whole step can be recorded once
     * and replayed.
     * sum_into: *out = sum of x[i] (squares: of x[i]^2) in double, in the
     *   order of sum_squares (so the norm is the same number).
     * step_scale: s->ok = loss_sum and sumsq finite; s->scale = grad_scale,
     *   times clip / norm when norm = sqrt(sumsq) * grad_scale exceeds clip
     *   (clip > 0); in double, as optimizer_apply does on the host.
     * adamw_step: adamw with lr, bias corrections and grad_scale taken from s
     *   (s->scale); does nothing when !s->ok (a NaN/Inf step changes nothing). */
    void (*sum_into)(double *out, const real *x, size_t n, int squares);
    void (*step_scale)(StepScalars *s);
    void (*adamw_step)(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1,
                       real beta2, real eps, real wd);
    /* adamw_runs (may be NULL: the optimizer calls adamw / adamw_step run by
     *   run): the update of [p, p + n) cut into nruns runs, run r being
     *   [bounds[r], bounds[r + 1]) (bounds[0] = 0, bounds[nruns] = n), with
     *   weight decay wd where decay[r], else 0. s NULL: as adamw (lr,
     *   grad_scale, step); else as adamw_step (from s; nothing when !s->ok).
     *   The same values, bit for bit, as those calls run by run, in fewer
     *   launches (a run per launch leaves small tensors' launches mostly idle). */
    void (*adamw_runs)(real *p, const real *g, real *m, real *v, size_t n, int nruns, const size_t *bounds,
                       const unsigned char *decay, const StepScalars *s, real lr, real beta1, real beta2, real eps,
                       real wd, real grad_scale, int step);

    /* ---- graph capture (may be NULL: the backend has none; CPU) ----
     * graph_begin: the ops that follow (on every branch) are recorded, not
     *   run, until graph_end, which returns the replayable graph (NULL with
     *   fh_last_error() if the recording failed: then nothing was run and the
     *   backend is as before graph_begin). No allocation, host copy or host
     *   read of device data may happen in between (warm up first).
     * graph_launch: runs the recorded ops again, on the same buffers with
     *   whatever they hold now; 1 (nothing run) when a buffer the graph
     *   used may have been freed since (scratch regrown, activations
     *   reallocated): record again; 0 launched, -1 error. */
    int (*graph_begin)(void);
    void *(*graph_end)(void);
    int (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);

    /* ---- trained weights hint (may be NULL) ----
     * train_weights(p, n, starts, count): the n values at p (the parameter
     * buffer) are being trained: the adamw / adamw_step ops will update them.
     * starts: the offsets at which its count tensors begin (ascending), so a
     * copy may be laid out tensor by tensor. The backend may keep a converted
     * copy that those ops write along with each new value (CUDA with bf16
     * products: every weight's bf16 rounding, which the products read instead
     * of rounding the weight before each of them). Every other write to
     * [p, p + n) must go through from_host, zero or copy_rows (or the backend's
     * collectives), which the backend watches so it can make the copy again; no
     * compute op writes parameters. One buffer at a time: a call replaces the
     * last. train_weights(p, 0, NULL, 0): training of p is over (NULL: any);
     * releasing the buffer also ends it. Results are the same with or without
     * the copy. Returns 0, or -1 if the copy could not be made (products then
     * convert as without it). */
    int (*train_weights)(const real *p, size_t n, const size_t *starts, int count);

    /* ---- saved-activation hint (may be NULL: CPU) ----
     * keep_bf16(x, n): the next op writes x[0, n) (it is that op's output), and
     * after it nothing writes [x, x + n) until keep_bf16(NULL, 0), which ends
     * every keep (the model calls it before anything may write a kept buffer
     * again: at the start of each training forward and of a prefill, and at the
     * end of the backward). Products read x meanwhile (the forward's, and the
     * backward's weight gradients). A backend with bf16 products may keep x's
     * bf16 rounding for all of them (CUDA: linear.cu "kept roundings") instead
     * of rounding x again in the backward, or an op reading x in its forward
     * and its backward may keep its own bf16 transform of x (CUDA: cuDNN's
     * attention keeps its rotated Q, K and V for q, k, v). Results are the
     * same bits with or without it; a caller that breaks the promise gets
     * stale operands. */
    void (*keep_bf16)(const real *x, size_t n);

    /* ---- fused decode ops (each may be NULL: generate.c then runs the
     * composition named at each; FLOWHN_DECODE_FUSE=0 makes it run that
     * composition anyway). A decode step at batch 1 is bound by its count of
     * small launches, not by work (docs/perf-notes.md, "Decode fusions"); each
     * op is one launch where the composition is several, and gives the same
     * values (the CPU's: the same bits, it runs the composition). Scratch
     * arguments are what the composition writes in between; a fused kernel
     * may leave them unwritten.
     * linear3_fwd: out_i [N, OC_i] = u @ w_i [OC_i, IC]^T for the products
     *   with OC_i > 0 (q/k/v of one input): linear_fwd for each, no bias.
     *   u = in [N, IC], or with norm_w != NULL u = RMSNorm(in) * norm_w
     *   (rmsnorm_fwd(normed, rstd, in, norm_w, N, IC, eps) first; normed [N, IC]
     *   and rstd [N] are scratch). MACs: N*IC*(OC0+OC1+OC2). out_i alias nothing.
     * linear_res_fwd: out = res + in @ w^T (linear_fwd(out, in, w, NULL), then
     *   add(out, out, res)); out aliases neither in nor res. MACs as linear_fwd.
     * swiglu_linear_fwd: out [N, OC] = silu(in wg^T) * (in wu^T) (two
     *   linear_fwd into gs, us [N, OC], then swiglu_fwd); the input RMSNorm'ed
     *   first when norm_w != NULL, as linear3_fwd. MACs: 2*N*IC*OC.
     * rope_append_at: after the q/k/v products of a decode step: qr = RoPE(q)
     *   at position pos[0] (rope_fwd, [B, 1, nh, hd]), the keys RoPE(k) (into
     *   scratch kr [B, nkv*hd]) and v appended as rows row[0] of the caches K,
     *   V (copy_rows_at(K, ld, kr, B, nkv*hd, row), the same for V); theta as
     *   rope_fwd. */
    void (*linear3_fwd)(real *out0, real *out1, real *out2, const real *in, const real *w0, const real *w1,
                        const real *w2, int N, int IC, int OC0, int OC1, int OC2, const real *norm_w, real eps,
                        real *normed, real *rstd);
    void (*linear_res_fwd)(real *out, const real *in, const real *w, const real *res, int N, int IC, int OC);
    void (*swiglu_linear_fwd)(real *out, real *gs, real *us, const real *in, const real *wg, const real *wu, int N,
                              int IC, int OC, const real *norm_w, real eps, real *normed, real *rstd);
    void (*rope_append_at)(real *qr, real *K, real *V, real *kr, const real *q, const real *k, const real *v,
                           const int *pos, const int *row, int B, int ld, int nh, int nkv, int hd, real theta);

    /* ---- attention with RoPE inside (each may be NULL: the model then runs
     * rope_fwd on q and k, attention_fwd, and in the backward attention_bwd
     * and rope_bwd twice; FLOWHN_ATTN_ROPE=0 makes it run those anyway).
     * q, k are the UNROTATED projections; the op rotates them by qpos / kpos
     * (as rope_fwd, theta) before the attention, so the rotated copies are
     * never stored (CUDA bf16: the rotation happens where q and k are rounded
     * to bf16 for the tensor cores, and the backward rotates dq, dk back as it
     * produces them).
     * attention_rope_fwd: attention_fwd(out, lse, rope(q, qpos), rope(k, kpos),
     *   v, ...); out and lse are attention_fwd's.
     * attention_rope_bwd: dq, dk are the gradients of the unrotated q, k
     *   (rope_bwd of attention_bwd's), dv attention_bwd's; acc as
     *   attention_bwd. q, k as given to the forward.
     * Both return 0, or 1 having done nothing: this shape / precision is not
     * fused, the caller runs the composition (CUDA: the bf16 tensor-core path
     * with head_dim 16, 32, 64 or 128 only). The same values as the composition
     * (the CPU's: the same bits, it runs the composition). MACs as
     * attention_fwd. Row strides ldq, ldkv as attention_fwd's. */
    int (*attention_rope_fwd)(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                              const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                              int ldkv);
    int (*attention_rope_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                              const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                              int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv);

    /* ---- bf16-only outputs (may be NULL: CPU, the oracle, always writes fp32) ----
     * bf16_only(x, n, once): the next op writes x[0, n) (its output, overwritten
     * whole, not accumulated), and its fp32 values are read by NO ONE: only
     * bf16 products read x, as linear_fwd's `in` or linear_bwd's `in` / `dout`,
     * over exactly (x, n) (the N x IC, N x OC matrix starting at x), and
     * nothing writes [x, x + n) until keep_bf16(NULL, 0). A next op that may
     * decline (attention_rope_bwd returning 1, having done nothing) leaves the
     * mark unused: whatever writes x after it writes fp32.
     *   once = 0: x is a kept input (keep_bf16(x, n) was called just before,
     *     for the same next op); its products may read it any number of times,
     *     forward and backward, on the branch that wrote it.
     *   once = 1: x is read by one product, once (its next reader; other ops
     *     may run in between), on the branch that wrote it.
     *   once = 2: x is the output of the next op, a linear_fwd without bias
     *     (gu, the gate|up product's [N, 2I]), kept just before
     *     (keep_bf16(x, n)); it is read ONLY by swiglu_packed_fwd and
     *     swiglu_packed_bwd as their gu (N x C with 2C = its width), on the
     *     branch that wrote it, until keep_bf16(NULL, 0); no product reads it.
     *     A backend may then have the product write only its bf16 output
     *     (fp32 accumulation, rounded once) and those ops read that: NOT the
     *     same bits as the fp32 path (g and u rounded to bf16 before SwiGLU);
     *     CUDA: FLOWHN_BF16_GU=0 writes fp32 as always.
     *   once = 3: x is the output of the next op, a linear_fwd without bias
     *     (qkv, the packed q|k|v product's [rows, P]), kept just before
     *     (keep_bf16(x, n)); it is read ONLY by the attention_rope_fwd that
     *     follows (q, k, v its column windows, ldq = ldkv = P) and that
     *     layer's attention_rope_bwd (the same q, k, v), on the branch that
     *     wrote it; no product reads it. A backend may then have the product
     *     write only its bf16 output and the attention read that: NOT the
     *     same bits (rope(bf16 x) rounded again). It must give any fallback
     *     of attention_rope_fwd defined fp32 (CUDA writes bf16(D) back), and
     *     attention_rope_bwd, if it cannot serve from its own kept copy,
     *     fails loudly instead of returning 1. CUDA: FLOWHN_BF16_QKV=0 writes
     *     fp32 as always.
     *   once = 4: x is the `out` of the next op, an attention_rope_fwd
     *     (the attention output, [rows, nh hd], dense), kept just before
     *     (keep_bf16(x, n)); it is read only by products (the o product:
     *     linear_fwd's and linear_bwd's `in`) and by that layer's
     *     attention_rope_bwd as its `out`, on the branch that wrote it. A
     *     backend may store only x's bf16 rounding (its kept buffer) if its
     *     attention backward reads that rounding; attention_rope_bwd, if it
     *     cannot serve from it, fails loudly instead of returning 1. Same
     *     bits (CUDA: cuDNN's bf16 O is that rounding; FLOWHN_BF16_ATT_O=0
     *     writes fp32 as always).
     *   once = 5: x is the `din` of the next op, a linear_bwd overwriting it
     *     (the attention's d out, [rows, nh hd]); it is read ONLY by the
     *     attention_rope_bwd that follows, as its `dout`, once, on the branch
     *     that wrote it; no product reads it. A backend may have the product
     *     write only its bf16 output and the attention read that; it must
     *     give any other path of attention_rope_bwd (and, if it declines,
     *     the model's dense fallback) defined fp32 (CUDA writes bf16(D) back).
     *     CUDA: FLOWHN_BF16_ATT_DO=0 writes fp32 as always.
     *   once = 7: x is the `din` of the next op, a linear_bwd overwriting it
     *     (the MLP's d act, [N, C]); it is read ONLY by the swiglu_packed_bwd
     *     that follows, as its `dout` (N x C), once, on the branch that wrote
     *     it; no product reads it. A backend may have the product write only
     *     its bf16 output (fp32 accumulation, rounded once) and
     *     swiglu_packed_bwd read that: NOT the same bits as the fp32 path
     *     (d act rounded to bf16 before SwiGLU's backward, as PyTorch
     *     autocast's bf16 matmul output). CUDA: FLOWHN_BF16_DACT=0 writes
     *     fp32 as always.
     *   once = 8: as once = 7, but x is the `din` of a linear_bwd (the
     *     MLP norm's output gradient dv, [N, C]) read ONLY by the rmsnorm_bwd
     *     that follows, as its `dout`, once, on the branch that wrote it. A
     *     backend may have the product write only its bf16 output and the
     *     norm backward read that; it must give any other path of
     *     rmsnorm_bwd defined fp32 (CUDA writes bf16(D) back). CUDA:
     *     FLOWHN_BF16_DNORM=0 writes fp32 as always.
     *   once = 9: as once = 8, but x is the `din` of the packed q|k|v
     *     product's linear_bwd, overwriting it (the attention norm's input
     *     gradient du, [N, C]); it is read ONLY by the rmsnorm_bwd that
     *     follows (the mixer norm's backward, not rmsnorm_gather_bwd), as
     *     its `dout`, once, on the branch that wrote it; nothing writes x
     *     between the product and that read (no other dgrad accumulates
     *     into it) and no product reads it. A backend may have the product
     *     write only its bf16 output and the norm backward read that; it
     *     must give any other path of rmsnorm_bwd defined fp32 (CUDA writes
     *     bf16(D) back), and any other reader fails loudly. NOT the same
     *     bits as the fp32 path (du rounded to bf16 before the norm's
     *     backward). CUDA: FLOWHN_BF16_DNORM_ATT=0 writes fp32 as always
     *     (independent of FLOWHN_BF16_DNORM, so each norm is A/B'd alone).
     *   once = 10: x is the output of the next op, a linear_fwd without
     *     bias (overwritten: a residual branch's output, [N, C], the o or
     *     the down product's); it is read ONLY by one add_rmsnorm_fwd, as
     *     its a or its b (over exactly (x, n), N x C), once, on the branch
     *     that wrote it; no product or other op reads it, and nothing writes
     *     [x, x + n) before that add (which may write its r over x: in
     *     place). A backend may have the product write only its bf16 output
     *     (fp32 accumulation, rounded once) and the add read that: NOT the
     *     same bits as the fp32 path (the branch rounded to bf16 before the
     *     add, as PyTorch autocast's bf16 matmul output; r itself is fp32).
     *     It must give any path of add_rmsnorm_fwd that cannot read the
     *     rounding defined fp32 (CUDA writes bf16(D) back first); x's fp32
     *     stays unwritten after the add unless r is x. CUDA:
     *     FLOWHN_BF16_RESID=0 writes fp32 as always.
     *   once = 6: x is the pack declared just before (pack_bf16(x, n, ld),
     *     same x and n, on this branch; not the next op's output: its window
     *     writers'); x's fp32 is read by no one: only the linear_bwd that
     *     reads x as its dout over exactly (x, n) (the pack's product), on
     *     that branch, once; nothing reads x after it. A backend may have the
     *     window writers that overwrite their window store only its bf16
     *     rounding into the pack, which the product reads: the same bits (the
     *     product reads that rounding anyway). It must serve that product
     *     even when a writer could not round its window (CUDA rounds the
     *     fp32 those wrote); a product reading x where the pack was broken
     *     fails loudly. CUDA: FLOWHN_DZXD_FP32=1 writes fp32 as always.
     * A backend with bf16 products may then store only x's bf16 rounding where
     * those products read it (CUDA: the kept buffer, or a shadow held until its
     * one read), and leave x's fp32 memory unwritten. It decides per call (the
     * producer must support it, its rounding must have a home; else it writes
     * fp32 as always), so results are the same bits either way (once 0, 1). A product that
     * reads x where no such rounding serves it is an error (never a rounding of
     * unwritten memory); under FLOWHN_BF16_KEEP_VERIFY=1 the fp32 memory is
     * filled with NaN instead, so any other reader shows at once. The model
     * calls it only where it can prove the readers are products (model.c
     * bf16_only). */
    void (*bf16_only)(const real *x, size_t n, int once);

    /* ---- packed gradient hint (may be NULL: CPU) ----
     * pack_bf16(x, n, ld): x is a [n / ld, ld] matrix (row stride ld) that the
     * next ops fill by column windows: each window op overwrites (or
     * accumulates into) its own columns of every row, as its output with row
     * stride ld (gated_rmsnorm_bwd's dz with ldz = ld, conv1d_silu_bwd's dx
     * with ldx = ld, copy_rows' dst with ldd = ld), and those windows tile
     * [0, ld). Nothing else writes [x, x + n) until a product reads it, as
     * linear_bwd's dout over exactly (x, n), on the branch that called this;
     * the hint ends there (the next pack_bf16 on the branch, or
     * keep_bf16(NULL, 0), which the model calls at the end of the backward).
     * A backend with bf16 products may have each window op write its
     * window's bf16 rounding into one packed bf16 copy of x and the product
     * read that copy, if every column was written so (CUDA: linear.cu "packed
     * gradient roundings", FLOWHN_INPROJ_D16=0 off). The fp32 values are
     * still written unless x is also marked bf16_only(x, n, 6) (above):
     * results are the same bits with or without either; a caller
     * that breaks the promise gets a stale operand. pack_bf16(NULL, 0, 0)
     * ends the branch's hint. */
    void (*pack_bf16)(const real *x, size_t n, int ld);
} Ops;

/* The CPU backend (fp32 in the library, fp64 in the gradient-check build). */
extern const Ops cpu_ops;

#endif
