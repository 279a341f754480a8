/* cpu_ops.h - the CPU backend's implementations of the op interface
 * (see ../ops.h for the contract of each op). One file per op family. */
#ifndef FLOWHN_CPU_OPS_H
#define FLOWHN_CPU_OPS_H

#include "../ops.h"

void * cpu_alloc(size_t bytes);
void cpu_release(void *p);
void cpu_zero(void *p, size_t bytes);
void cpu_zero_runs(real *base, size_t span, const size_t *runs, int n);
void cpu_to_host(void *dst_host, const void *src, size_t bytes);
void cpu_from_host(void *dst, const void *src_host, size_t bytes);
void cpu_add(real *out, const real *a, const real *b, size_t n);
void cpu_accumulate(real *dst, const real *src, real alpha, size_t n);
void cpu_embedding_fwd(real *out, const int *tok, const real *wte, int N, int C);
void cpu_embedding_bwd(real *dwte, const real *dout, const int *tok, int N, int C);
void cpu_rmsnorm_fwd(real *out, real *rstd, const real *x, const real *w, int N, int C, real eps);
void cpu_rmsnorm_bwd(real *dx, real *dw, const real *dout, const real *x, const real *w, const real *rstd, int N, int C, int acc);
void cpu_rmsnorm_gather_fwd(real *xsel, real *out, real *rstd, const real *x, const int *idx, const real *w, int B,
                            int T, int n_sel, int C, real eps);
void cpu_rmsnorm_gather_bwd(real *dfull, real *dw, const real *dres, const real *dout, const real *x, const real *w,
                            const real *rstd, const int *idx, int B, int T, int n_sel, int C);
void cpu_add_rmsnorm_fwd(real *r, real *out, real *rstd, const real *a, const real *b, const real *w, int N, int C, real eps);
void cpu_linear_fwd(real *out, const real *in, const real *w, const real *b, int N, int IC, int OC);
void cpu_linear_bwd(real *din, real *dw, real *db, const real *dout, const real *in, const real *w, int N, int IC, int OC, int acc);
void cpu_swiglu_fwd(real *out, const real *gate, const real *up, size_t n);
void cpu_swiglu_bwd(real *dgate, real *dup, const real *dout, const real *gate, const real *up, size_t n, int acc);
void cpu_swiglu_packed_fwd(real *out, const real *gu, int N, int C);
void cpu_swiglu_packed_bwd(real *dgu, const real *dout, const real *gu, int N, int C, int acc);
void cpu_silu_fwd(real *out, const real *x, size_t n);
void cpu_silu_bwd(real *dx, const real *dout, const real *x, size_t n, int acc);
void cpu_rope_fwd(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta);
void cpu_rope_bwd(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta, int acc);
int cpu_attention_rope_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                           const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, real theta, int ldq,
                           int ldkv);
int cpu_attention_rope_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                           const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B,
                           int nq, int nk, int nh, int nkv, int hd, real theta, int acc, int ldq, int ldkv);
/* the op table's attention (ops.h): q, dq rows ldq apart, k, v, dk, dv rows ldkv apart */
void cpu_attention_fwd_ld(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos,
                          const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv);
void cpu_attention_bwd_ld(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse,
                          const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq,
                          int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv);
/* the same, dense (ldq = nh*hd, ldkv = nkv*hd) */
void cpu_attention_fwd(real *out, real *lse, const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd);
void cpu_attention_bwd(real *dq, real *dk, real *dv, const real *dout, const real *out, const real *lse, const real *q, const real *k, const real *v, const int *qpos, const int *kpos, int B, int nq, int nk, int nh, int nkv, int hd, int acc);
void cpu_conv1d_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K);
void cpu_conv1d_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, int B, int n, int C, int K, int acc);
void cpu_conv1d_silu_fwd(real *out, const real *x, const real *w, const real *b, int B, int n, int C, int K, int ldx);
void cpu_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *dout, const real *x, const real *w, const real *b, int B, int n, int C, int K, int acc, int ldx);
void cpu_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L);
void cpu_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz, const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L, int acc);
void cpu_ssd_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L);
void cpu_ssd_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy, const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L, int acc);
void cpu_gated_rmsnorm_fwd(real *out, real *rstd, const real *y, const real *z, const real *w, int N, int C, real eps, int ldz);
void cpu_gated_rmsnorm_bwd(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z, const real *w, const real *rstd, int N, int C, int acc, int ldz);
void cpu_gather_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
void cpu_gather_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldi, int col0);
void cpu_scatter_fwd(real *out, const real *in, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0);
void cpu_scatter_bwd(real *din, const real *dout, const int *idx, int B, int T, int n_sel, int C, int ldo, int col0, int acc);
void cpu_xent_fwd(real *loss, real *lse, const real *logits, const int *targets, int N, int V);
void cpu_xent_bwd(real *dlogits, const real *dloss, const real *logits, const real *lse, const int *targets, int N, int V);
void cpu_classifier(real *loss, real *dx, real *dw, const real *x, const real *w, const int *targets, real scale,
                    int N, int H, int V, int acc);
void cpu_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real beta1, real beta2, real eps, real wd, real grad_scale, int step);
double cpu_sum_squares(const real *x, size_t n);
void cpu_sum_into(double *out, const real *x, size_t n, int squares);
void cpu_step_scale(StepScalars *s);
void cpu_adamw_step(real *p, const real *g, real *m, real *v, size_t n, const StepScalars *s, real beta1, real beta2,
                    real eps, real wd);
void cpu_selective_scan_step(real *y, real *h, const real *x, const real *dt_raw, const real *A_log, const real *Bm, const real *Cm, const real *D, const real *z, int B, int E, int S);
void cpu_ssd_step(real *y, real *h, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log, const real *D, int B, int nh, int P, int G, int N);
void cpu_copy_rows(real *dst, int ldd, const real *src, int lds, int rows, int cols);
void cpu_copy_rows_at(real *dst, int ldd, const real *src, int rows, int cols, const int *pos);
void cpu_linear3_fwd(real *out0, real *out1, real *out2, const real *in, const real *w0, const real *w1,
                     const real *w2, int N, int IC, int OC0, int OC1, int OC2, const real *norm_w, real eps,
                     real *normed, real *rstd);
void cpu_linear_res_fwd(real *out, const real *in, const real *w, const real *res, int N, int IC, int OC);
void cpu_swiglu_linear_fwd(real *out, real *gs, real *us, const real *in, const real *wg, const real *wu, int N, int IC,
                           int OC, const real *norm_w, real eps, real *normed, real *rstd);
void cpu_rope_append_at(real *qr, real *K, real *V, real *kr, const real *q, const real *k, const real *v,
                        const int *pos, const int *row, int B, int ld, int nh, int nkv, int hd, real theta);
void cpu_attention_decode_at(real *out, const real *q, const real *k, const real *v, int B, const int *pos, int ld,
                             int nh, int nkv, int hd);
void cpu_conv1d_step(real *out, real *win, const real *x, const real *w, const real *b, int B, int C, int K);
real cpu_attend_query(real *oi, const real *qi, const real *k0, const real *v0, size_t kstride, int n, int hd, real scale, real *s);
void cpu_attention_decode(real *out, const real *q, const real *k, const real *v, int B, int nk, int ld, int nh, int nkv, int hd);

#endif
