/* memory.c - memory estimate by dry run, memory available, and the check
 * (see memory.h). */
#include "memory.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../infer/generate.h"
#include "../train/optimizer.h"
#include "model.h"
#include "split.h"

/* ------------------------------------------------------------------------ */
/* the dry-run op table: alloc records sizes, compute does nothing            */

/* Bytes "allocated" now and at most since the last reset. One dry run at a
 * time (the CLI estimates once, before it builds anything). */
static struct { size_t live, peak, kept; } dry;

/* Each allocation is a host word holding its size, so release can subtract it
 * and every pointer is distinct and non-NULL. No op ever reads through them. */
static void *dry_alloc(size_t bytes) {
    size_t *h = malloc(sizeof *h);
    if (!h) { fh_error("out of memory estimating memory"); return NULL; }
    *h = bytes;
    dry.live += bytes;
    if (dry.live > dry.peak) dry.peak = dry.live;
    return h;
}
static void dry_release(void *p) {
    if (!p) return;
    dry.live -= *(size_t *)p;
    free(p);
}
static void dry_zero(void *p, size_t bytes) {}
static void dry_zero_runs(real *b, size_t span, const size_t *r, int n) {}
/* Ops.keep_bf16: the CUDA backend holds one bf16 buffer per kept input (linear.cu "kept roundings"), as long as
 * the activation: counted here, added by memory_add_backend for CUDA bf16 training (one step: no input twice) */
static void dry_keep_bf16(const real *x, size_t n) { if (x) dry.kept += 2 * n; }
/* the host side gets zeros: the model reads losses back (finite, 0) */
static void dry_to_host(void *dst, const void *src, size_t bytes) { memset(dst, 0, bytes); }
static void dry_from_host(void *dst, const void *src, size_t bytes) {}
static void dry_add(real *o, const real *a, const real *b, size_t n) {}
static void dry_accumulate(real *d, const real *s, real alpha, size_t n) {}
static void dry_embedding_fwd(real *o, const int *t, const real *w, int N, int C) {}
static void dry_embedding_bwd(real *dw, const real *d, const int *t, int N, int C) {}
static void dry_rmsnorm_fwd(real *o, real *r, const real *x, const real *w, int N, int C, real eps) {}
static void dry_rmsnorm_bwd(real *dx, real *dw, const real *d, const real *x, const real *w, const real *r, int N,
                            int C, int acc) {}
static void dry_add_rmsnorm_fwd(real *r, real *o, real *rs, const real *a, const real *b, const real *w, int N, int C,
                                real eps) {}
static void dry_linear_fwd(real *o, const real *i, const real *w, const real *b, int N, int IC, int OC) {}
static void dry_linear_bwd(real *di, real *dw, real *db, const real *d, const real *i, const real *w, int N, int IC,
                           int OC, int acc) {}
static void dry_swiglu_fwd(real *o, const real *g, const real *u, size_t n) {}
static void dry_swiglu_bwd(real *dg, real *du, const real *d, const real *g, const real *u, size_t n, int acc) {}
static void dry_swiglu_packed_fwd(real *o, const real *gu, int N, int C) {}
static void dry_swiglu_packed_bwd(real *dgu, const real *d, const real *gu, int N, int C, int acc) {}
static void dry_silu_fwd(real *o, const real *x, size_t n) {}
static void dry_silu_bwd(real *dx, const real *d, const real *x, size_t n, int acc) {}
static void dry_rope_fwd(real *o, const real *x, const int *p, int B, int n, int nh, int hd, real th) {}
static void dry_rope_bwd(real *dx, const real *d, const int *p, int B, int n, int nh, int hd, real th, int acc) {}
static void dry_attention_fwd(real *o, real *lse, const real *q, const real *k, const real *v, const int *qp,
                              const int *kp, int B, int nq, int nk, int nh, int nkv, int hd, int ldq, int ldkv) {}
static void dry_attention_bwd(real *dq, real *dk, real *dv, const real *d, const real *o, const real *lse,
                              const real *q, const real *k, const real *v, const int *qp, const int *kp, int B, int nq,
                              int nk, int nh, int nkv, int hd, int acc, int ldq, int ldkv) {}
/* taken (0): the estimate is the fused op's, which allocates no rotated copies
 * (memory_add_backend adds them back where the backend composes) */
static int dry_attention_rope_fwd(real *o, real *lse, const real *q, const real *k, const real *v, const int *qp,
                                  const int *kp, int B, int nq, int nk, int nh, int nkv, int hd, real th, int ldq,
                                  int ldkv) {
    return 0;
}
static int dry_attention_rope_bwd(real *dq, real *dk, real *dv, const real *d, const real *o, const real *lse,
                                  const real *q, const real *k, const real *v, const int *qp, const int *kp, int B,
                                  int nq, int nk, int nh, int nkv, int hd, real th, int acc, int ldq, int ldkv) {
    return 0;
}
static void dry_conv1d_fwd(real *o, const real *x, const real *w, const real *b, int B, int n, int C, int K) {}
static void dry_conv1d_bwd(real *dx, real *dw, real *db, const real *d, const real *x, const real *w, int B, int n,
                           int C, int K, int acc) {}
static void dry_conv1d_silu_fwd(real *o, const real *x, const real *w, const real *b, int B, int n, int C, int K,
                                int ldx) {}
static void dry_conv1d_silu_bwd(real *dx, real *dw, real *db, const real *d, const real *x, const real *w,
                                const real *b, int B, int n, int C, int K, int acc, int ldx) {}
static void dry_scan_fwd(real *y, real *hs, const real *x, const real *dt, const real *A, const real *Bm,
                         const real *Cm, const real *D, const real *z, int B, int n, int E, int S, int L) {}
static void dry_scan_bwd(real *dx, real *ddt, real *dA, real *dB, real *dC, real *dD, real *dz, const real *dy,
                         const real *hs, const real *x, const real *dt, const real *A, const real *Bm, const real *Cm,
                         const real *D, const real *z, int B, int n, int E, int S, int L, int acc) {}
static void dry_ssd_fwd(real *y, real *st, const real *xbc, const real *dt, const real *dtb, const real *A,
                        const real *D, int B, int n, int nh, int P, int G, int N, int L) {}
static void dry_ssd_bwd(real *dxbc, real *ddt, real *ddtb, real *dA, real *dD, const real *dy, const real *st,
                        const real *xbc, const real *dt, const real *dtb, const real *A, const real *D, int B, int n,
                        int nh, int P, int G, int N, int L, int acc) {}
static void dry_gated_fwd(real *o, real *r, const real *y, const real *z, const real *w, int N, int C, real eps,
                          int ldz) {}
static void dry_gated_bwd(real *dy, real *dz, real *dw, const real *d, const real *y, const real *z, const real *w,
                          const real *r, int N, int C, int acc, int ldz) {}
static void dry_select(real *o, const real *i, const int *idx, int B, int T, int n, int C, int ld, int c0) {}
static void dry_scatter_bwd(real *o, const real *i, const int *idx, int B, int T, int n, int C, int ld, int c0, int acc) {}
static void dry_xent_fwd(real *l, real *lse, const real *lg, const int *t, int N, int V) {}
static void dry_xent_bwd(real *dl, const real *d, const real *lg, const real *lse, const int *t, int N, int V) {}
static void dry_classifier(real *l, real *dx, real *dw, const real *x, const real *w, const int *t, real sc, int N,
                           int H, int V, int acc) {}
static void dry_scan_step(real *y, real *h, const real *x, const real *dt, const real *A, const real *Bm,
                          const real *Cm, const real *D, const real *z, int B, int E, int S) {}
static void dry_ssd_step(real *y, real *h, const real *xbc, const real *dt, const real *dtb, const real *A,
                         const real *D, int B, int nh, int P, int G, int N) {}
static void dry_adamw(real *p, const real *g, real *m, real *v, size_t n, real lr, real b1, real b2, real eps,
                      real wd, real gs, int step) {}
static double dry_sum_squares(const real *x, size_t n) { return 0; }
static void dry_copy_rows(real *d, int ldd, const real *s, int lds, int rows, int cols) {}
static void dry_conv1d_step(real *o, real *win, const real *x, const real *w, const real *b, int B, int C, int K) {}
static void dry_copy_rows_at(real *d, int ldd, const real *s, int rows, int cols, const int *pos) {}
static void dry_attention_decode_at(real *o, const real *q, const real *k, const real *v, int B, const int *pos,
                                    int ld, int nh, int nkv, int hd) {}

/* Every entry is set: an op added to ops.h and not here is NULL and crashes
 * test_memory, which runs the dry run on every architecture; a changed
 * signature fails to compile (the pragma makes the mismatch an error). */
#pragma GCC diagnostic error "-Wincompatible-pointer-types"
static const Ops dry_ops = {
    .name = "dry-run",
    .alloc = dry_alloc, .release = dry_release, .zero = dry_zero, .zero_runs = dry_zero_runs,
    .to_host = dry_to_host, .from_host = dry_from_host,
    .add = dry_add, .accumulate = dry_accumulate,
    .embedding_fwd = dry_embedding_fwd, .embedding_bwd = dry_embedding_bwd,
    .rmsnorm_fwd = dry_rmsnorm_fwd, .rmsnorm_bwd = dry_rmsnorm_bwd,
    .add_rmsnorm_fwd = dry_add_rmsnorm_fwd,
    .linear_fwd = dry_linear_fwd, .linear_bwd = dry_linear_bwd,
    .swiglu_fwd = dry_swiglu_fwd, .swiglu_bwd = dry_swiglu_bwd,
    .swiglu_packed_fwd = dry_swiglu_packed_fwd, .swiglu_packed_bwd = dry_swiglu_packed_bwd,
    .silu_fwd = dry_silu_fwd, .silu_bwd = dry_silu_bwd,
    .rope_fwd = dry_rope_fwd, .rope_bwd = dry_rope_bwd,
    .attention_fwd = dry_attention_fwd, .attention_bwd = dry_attention_bwd,
    .conv1d_fwd = dry_conv1d_fwd, .conv1d_bwd = dry_conv1d_bwd,
    .conv1d_silu_fwd = dry_conv1d_silu_fwd, .conv1d_silu_bwd = dry_conv1d_silu_bwd,
    .selective_scan_fwd = dry_scan_fwd, .selective_scan_bwd = dry_scan_bwd,
    .ssd_fwd = dry_ssd_fwd, .ssd_bwd = dry_ssd_bwd,
    .gated_rmsnorm_fwd = dry_gated_fwd, .gated_rmsnorm_bwd = dry_gated_bwd,
    .gather_fwd = dry_select, .gather_bwd = dry_select, .scatter_fwd = dry_select, .scatter_bwd = dry_scatter_bwd,
    .xent_fwd = dry_xent_fwd, .xent_bwd = dry_xent_bwd, .classifier = dry_classifier,
    .selective_scan_step = dry_scan_step, .ssd_step = dry_ssd_step,
    .adamw = dry_adamw, .sum_squares = dry_sum_squares,
    /* the generator's (graphs and frozen weights are optional: left out) */
    .copy_rows = dry_copy_rows, .conv1d_step = dry_conv1d_step, .copy_rows_at = dry_copy_rows_at,
    .attention_decode_at = dry_attention_decode_at,
    .keep_bf16 = dry_keep_bf16,
    .attention_rope_fwd = dry_attention_rope_fwd, .attention_rope_bwd = dry_attention_rope_bwd,
};

/* ------------------------------------------------------------------------ */
/* the estimate                                                              */

/* One dry run for a config whose split is a number. unfused_rope: attention
 * with RoPE as the separate rope passes (Model.unfused_attn_rope). */
static int dry_run_as(const Config *c, int B, int T, int use, int world, MemoryEstimate *e, int unfused_rope) {
    memset(e, 0, sizeof *e);
    dry.live = dry.peak = dry.kept = 0;
    Model m;
    Optimizer opt;
    memset(&opt, 0, sizeof opt);
    if (model_create(&m, c, &dry_ops)) return -1;
    m.unfused_attn_rope = unfused_rope;
    int rc = 0;
    e->params = sizeof(real) * m.layout.total;
    /* linear.cu's layout of the trained weights' bf16 copy: each tensor from a multiple of 128 values */
    for (int i = 0; i < m.layout.n; i++) e->weights_bf16 += 2 * ((m.layout.entries[i].numel + 127) / 128 * 128);
    e->grads = dry.live - e->params;
    size_t base = dry.live;
    if (use == MEMORY_TRAIN) {
        AdamWConfig oc;
        adamw_defaults(&oc);
        rc = optimizer_create_shard(&opt, &m, &oc, NULL, 0, world);   /* ZeRO-1: this rank's moments */
        e->optimizer = dry.live - base;
        base = dry.live;
        /* train_run's save() copies m and v to the host while the activations live */
        e->host = 2 * sizeof(real) * m.layout.total;
    }
    if (!rc && use == MEMORY_GENERATE) {   /* the generator, and the prefill of a T-token prompt (T > 0) */
        int *tok = calloc((size_t)B * T + 1, sizeof(int));
        Generator *g = tok ? generator_create(&m, B) : NULL;
        rc = !g || (T > 0 && generator_prefill(g, tok, T, NULL));
        if (!tok) fh_error("out of memory estimating memory");
        e->activations = dry.peak - base;
        generator_free(g);
        free(tok);
    } else if (!rc) {
        int *tok = calloc((size_t)B * T, sizeof(int));   /* token 0 everywhere, as inputs and targets */
        double gnorm;
        if (!tok) rc = fh_error("out of memory estimating memory");
        else if (use == MEMORY_TRAIN)   /* the trainer's step: the fused classifier, no [B*T, V] logits */
            rc = model_forward_backward(&m, tok, tok, B, T) || optimizer_step(&opt, &m, 1.0, &gnorm);
        else rc = model_forward(&m, tok, tok, B, T);
        free(tok);
        e->activations = dry.peak - base;
    }
    if (use == MEMORY_TRAIN) e->kept_bf16 = dry.kept;
    optimizer_free(&opt, &m);
    model_free(&m);
    e->backend = e->params + e->grads + e->optimizer + e->activations;
    e->total = e->backend + e->host;
    e->use = use;
    e->head_dim = c->head_dim;
    return rc ? -1 : 0;
}

/* The fused attention_rope ops' figure, and in attn_rope_unfused what the
 * separate rope passes add (qr, kr and their gradients; the prefill always
 * composes, so nothing for MEMORY_GENERATE), for memory_add_backend. */
static int dry_run(const Config *c, int B, int T, int use, int world, MemoryEstimate *e) {
    const char *ar = getenv("FLOWHN_ATTN_ROPE");
    int unfused = ar && !strcmp(ar, "0");
    if (dry_run_as(c, B, T, use, world, e, unfused)) return -1;
    if (unfused || !c->use_rope || use == MEMORY_GENERATE) return 0;
    MemoryEstimate u;
    if (dry_run_as(c, B, T, use, world, &u, 1)) return -1;
    e->attn_rope_unfused = u.activations > e->activations ? u.activations - e->activations : 0;
    return 0;
}

int model_memory_estimate(const Config *c, int B, int T, int use, MemoryEstimate *e) {
    return model_memory_estimate_ranks(c, B, T, use, 1, e);
}

int model_memory_estimate_ranks(const Config *c, int B, int T, int use, int world, MemoryEstimate *e) {
    if (world < 1) return fh_error("memory estimate: world size %d must be at least 1", world);
    if (B < 1 || T < (use == MEMORY_GENERATE ? 0 : 1))
        return fh_error("memory estimate: batch size (%d) and sequence length (%d) must be at least 1", B, T);
    int measured = c->arch == ARCH_FLOWHN && (c->split == SPLIT_FA || c->split == SPLIT_FAC) &&
                   c->ratio_rule == RATIO_MEASURED;
    if (!measured || use == MEMORY_GENERATE) {
        Config f = *c;
        if (measured) f.ratio_rule = RATIO_FLOPS;   /* the generator's buffers do not depend on the split */
        return dry_run(&f, B, T, use, world, e);
    }
    /* the n_a candidates model_measure_split times (at most ~32): the run will
     * keep one of them, so the largest figure covers it */
    int mult = split_multiple_at(c, T), step = mult, any = 0;
    while ((T - 2 * step) / step + 1 > 32) step += mult;
    memset(e, 0, sizeof *e);
    for (int na = mult; na <= T - mult; na += step) {
        Config f = *c;
        f.ratio_rule = RATIO_FIXED;
        f.split_ratio = (double)na / T;
        MemoryEstimate x;
        if (dry_run(&f, B, T, use, world, &x)) return -1;
        if (!any || x.total > e->total) *e = x;
        any = 1;
    }
    if (any) return 0;
    return fh_error("split_ratio \"measured\" needs a sequence length of at least %d (2 x split_multiple), got %d",
                    2 * mult, T);
}

void memory_add_backend(MemoryEstimate *e, const Backend *be) {
    e->backend -= e->weight_copy;
    e->total -= e->weight_copy;
    e->weight_copy = 0;
    const char *off = getenv("FLOWHN_BF16_MASTER"), *keep = getenv("FLOWHN_BF16_KEEP");
    int bf16 = e->use == MEMORY_TRAIN && be->matmul_precision && !strcmp(be->matmul_precision(), "bf16") &&
               strcmp(be->name, "cpu");
    if (bf16 && !(off && !strcmp(off, "0")))
        e->weight_copy = e->weights_bf16;   /* one bf16 per parameter, and the padding that aligns each tensor */
    if (bf16 && !(keep && !strcmp(keep, "0")))
        e->weight_copy += e->kept_bf16;     /* the kept bf16 roundings of the saved product inputs */
    e->backend += e->weight_copy;
    e->total += e->weight_copy;
    /* the rotated copies where the backend composes rope and attention: the
     * CPU always fuses (its op runs the composition on its own scratch); CUDA
     * only on the bf16 tensor-core path with a head size of one tile width
     * (attention_tc.cu attention_tc_rope_applies) */
    e->activations -= e->attn_rope_added;
    e->backend -= e->attn_rope_added;
    e->total -= e->attn_rope_added;
    int hd = e->head_dim, tile = hd == 16 || hd == 32 || hd == 64 || hd == 128;
    int fused = !strcmp(be->name, "cpu") ||
                (be->matmul_precision && !strcmp(be->matmul_precision(), "bf16") && tile);
    e->attn_rope_added = fused ? 0 : e->attn_rope_unfused;
    e->activations += e->attn_rope_added;
    e->backend += e->attn_rope_added;
    e->total += e->attn_rope_added;
}

/* ------------------------------------------------------------------------ */
/* memory available                                                          */

/* Reads one unsigned number from a file; 1 if the file says "max", -1 if it
 * cannot be read. */
static int read_number(const char *path, unsigned long long *v) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = {0};
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    if (!strncmp(buf, "max", 3)) return 1;
    char *end;
    *v = strtoull(buf, &end, 10);
    return end == buf ? -1 : 0;
}

/* This process's cgroup path for a hierarchy: "0::/path" (v2) or
 * "N:memory:/path" (v1) in /proc/self/cgroup. "" when not found. */
static void cgroup_path(int v2, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        int match = v2 ? !strncmp(line, "0::", 3) : (b - a - 1 == 6 && !strncmp(a + 1, "memory", 6));
        if (!match) continue;
        b[strcspn(b, "\n")] = 0;
        snprintf(out, n, "%s", strcmp(b + 1, "/") ? b + 1 : "");
        break;
    }
    fclose(f);
}

/* The least room under a cgroup limit from `dir` up to `root` (limits of
 * ancestors apply too). limit_file/usage_file: v2 memory.max/memory.current,
 * v1 memory.limit_in_bytes/memory.usage_in_bytes. 0 and *room, or -1 if no
 * limit is set anywhere. */
static int cgroup_room(const char *root, const char *rel, const char *limit_file, const char *usage_file,
                       size_t *room) {
    char dir[1200], p[1300];
    snprintf(dir, sizeof dir, "%s%s", root, rel);
    int found = 0;
    for (;;) {
        unsigned long long lim, use;
        snprintf(p, sizeof p, "%s/%s", dir, limit_file);
        int rl = read_number(p, &lim);
        snprintf(p, sizeof p, "%s/%s", dir, usage_file);
        /* v1 reports "no limit" as a huge number near 2^63 */
        if (rl == 0 && lim < (1ull << 60) && read_number(p, &use) == 0) {
            size_t r = use < lim ? (size_t)(lim - use) : 0;
            if (!found || r < *room) *room = r;
            found = 1;
        }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= strlen(root) || !slash) break;
        *slash = 0;
    }
    return found ? 0 : -1;
}

int memory_available_cpu(size_t *bytes, char *source, size_t n) {
    int have = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                *bytes = (size_t)kb * 1024;
                snprintf(source, n, "MemAvailable in /proc/meminfo");
                have = 1;
                break;
            }
        fclose(f);
    }
    char rel[1024];
    size_t room;
    cgroup_path(1, rel, sizeof rel);
    int v2 = cgroup_room("/sys/fs/cgroup", rel, "memory.max", "memory.current", &room) == 0;
    int v1 = 0;
    if (!v2) {
        cgroup_path(0, rel, sizeof rel);
        v1 = cgroup_room("/sys/fs/cgroup/memory", rel, "memory.limit_in_bytes", "memory.usage_in_bytes", &room) == 0;
        /* inside a container the v1 hierarchy is often mounted at our own cgroup */
        if (!v1) v1 = cgroup_room("/sys/fs/cgroup/memory", "", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                  &room) == 0;
    }
    if ((v2 || v1) && (!have || room < *bytes)) {
        *bytes = room;
        snprintf(source, n, "%s", v2 ? "cgroup v2 memory.max - memory.current"
                                     : "cgroup v1 memory.limit_in_bytes - memory.usage_in_bytes");
        have = 1;
    }
    return have ? 0 : -1;
}

/* "123", "512K", "4G", "1.5G" (powers of 1024, an optional trailing B or iB) */
static int parse_bytes(const char *s, size_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0)) return -1;
    double mult = 1;
    switch (toupper((unsigned char)*end)) {
        case 'K': mult = 1024.0; end++; break;
        case 'M': mult = 1024.0 * 1024; end++; break;
        case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
        case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
        default: break;
    }
    if (mult > 1 && toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end || v * mult >= 1.8e19) return -1;
    *out = (size_t)(v * mult);
    return 0;
}

int memory_available(const Backend *be, size_t *bytes, char *source, size_t n) {
    const char *env = getenv("FLOWHN_MEMORY_LIMIT");
    if (env && *env) {
        if (parse_bytes(env, bytes))
            return fh_error("FLOWHN_MEMORY_LIMIT='%s' is not a byte count: use e.g. 512M, 4G or 1073741824", env);
        snprintf(source, n, "FLOWHN_MEMORY_LIMIT=%s", env);
        return 0;
    }
    if (!strcmp(be->name, "cpu")) return memory_available_cpu(bytes, source, n);
    size_t live, peak, used, total;
    be->memory(&live, &peak, &used, &total);
    if (!total) return -1;
    *bytes = used < total ? total - used : 0;
    snprintf(source, n, "%s: device total - in use", be->device());
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the check                                                                 */

/* "3.72 GiB", "1.50 MiB", "12.0 KiB": GiB for real models, smaller units for test-sized ones */
static const char *human(size_t b, char *buf, size_t n) {
    if (b >= (1u << 30)) snprintf(buf, n, "%.2f GiB", b / 1073741824.0);
    else if (b >= (1u << 20)) snprintf(buf, n, "%.2f MiB", b / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", b / 1024.0);
    return buf;
}

void memory_describe(const MemoryEstimate *e, char *buf, size_t n) {
    char t[32], p[32], g[32], o[32], a[32], h[32], w[32];
    snprintf(buf, n, "%s (params %s%s%s + grads %s%s%s + %s %s%s%s)", human(e->total, t, 32),
             human(e->params, p, 32), e->weight_copy ? " + bf16 copies (weights, kept inputs) " : "",
             e->weight_copy ? human(e->weight_copy, w, 32) : "", human(e->grads, g, 32),
             e->optimizer ? " + AdamW m, v " : "", e->optimizer ? human(e->optimizer, o, 32) : "",
             e->use == MEMORY_GENERATE ? "KV caches, states, scratch and prefill" : "activations", human(e->activations, a, 32),
             e->host ? " + host checkpoint copies " : "", e->host ? human(e->host, h, 32) : "");
}

int memory_check(const MemoryEstimate *e, const Backend *be) {
    static const char *fix = "reduce --batch or --seq-len, or use a smaller config";
    char what[512], src[256], need_s[32], avail_s[32];
    size_t avail;
    memory_describe(e, what, sizeof what);
    int cpu = !strcmp(be->name, "cpu");
    /* the FLOWHN_MEMORY_LIMIT error wins over "unknown" */
    const char *env = getenv("FLOWHN_MEMORY_LIMIT");
    int rc = memory_available(be, &avail, src, sizeof src);
    if (rc && env && *env) return -1;
    if (!rc && cpu && e->total > avail)
        return fh_error("not enough memory: this run needs an estimated %s, but %s is available (%s); %s", what,
                        human(avail, avail_s, 32), src, fix);
    if (!rc && !cpu && e->backend > avail)
        return fh_error("not enough device memory: this run needs an estimated %s, of which %s on the device, but "
                        "%s is available there (%s); %s", what, human(e->backend, need_s, 32),
                        human(avail, avail_s, 32), src, fix);
    if (cpu || !e->host) return 0;
    /* a device run also keeps host copies (checkpoints) */
    if (memory_available_cpu(&avail, src, sizeof src) == 0 && e->host > avail)
        return fh_error("not enough host memory: this run needs an estimated %s, of which %s on the host, but %s "
                        "is available (%s); %s", what, human(e->host, need_s, 32), human(avail, avail_s, 32), src, fix);
    return 0;
}
