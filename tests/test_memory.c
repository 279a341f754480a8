/* test_memory.c - the memory estimate (src/model/memory.h) against what a
 * real run allocates, and the refusal of a run that does not fit.
 *
 * "What a real run allocates" is measured by a counting copy of the CPU op
 * table (alloc/release wrapped, every op real): the estimate must equal its
 * peak byte for byte, part by part, for every architecture at two shapes, so
 * an allocation added to model.c or the optimizer without the estimate
 * seeing it fails here. The generator, which only runs on the CPU table
 * itself, is measured with mallinfo2 (bound stated at the case). */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/core/error.h"
#include "../src/core/rng.h"
#include "../src/infer/generate.h"
#include "../src/model/memory.h"
#include "../src/model/model.h"
#include "../src/ops/cpu/cpu_ops.h"
#include "../src/train/optimizer.h"
#include "test.h"

static const char *tiny[] = {"flowhn-ae", "flowhn-fa", "flowhn-fac", "flowhn-nosplit", "hymba",
                             "jamba",     "llama",     "mamba1",     "mamba2",         "shm"};
#define N_TINY (int)(sizeof tiny / sizeof tiny[0])

/* ---- the counting op table ---- */

enum { MAX_LIVE = 1 << 14 };
static struct { void *p; size_t n; } held[MAX_LIVE];
static int n_held;
static size_t live, peak;

static void *count_alloc(size_t bytes) {
    void *p = cpu_alloc(bytes);
    if (!p || n_held == MAX_LIVE) return p;
    held[n_held].p = p;
    held[n_held++].n = bytes;
    live += bytes;
    if (live > peak) peak = live;
    return p;
}
static void count_release(void *p) {
    for (int i = 0; p && i < n_held; i++)
        if (held[i].p == p) {
            live -= held[i].n;
            held[i] = held[--n_held];
            break;
        }
    cpu_release(p);
}
static Ops counting;
static void counting_init(void) {
    counting = cpu_ops;
    counting.alloc = count_alloc;
    counting.release = count_release;
    live = peak = 0;
    n_held = 0;
}

static int load_tiny(const char *name, Config *c) {
    char path[128];
    snprintf(path, sizeof path, "configs/tiny-%s.json", name);
    if (config_load(c, path)) { printf("    %s\n", fh_last_error()); return -1; }
    return 0;
}

static void random_batch(int *tok, int *tgt, int B, int T, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed, 3);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u32(&r) % (uint32_t)V);
    for (int i = 0; i < B * T; i++) tgt[i] = (i % T == T - 1) ? -1 : tok[i + 1];
}

/* A real run on the counting table: model, (optimizer), forward with loss,
 * (backward, AdamW step). Fills the measured parts in the estimate's shape. */
static int measure(const Config *c, int B, int T, int train, int measure_split, MemoryEstimate *got) {
    counting_init();
    memset(got, 0, sizeof *got);
    Model m;
    Optimizer opt;
    memset(&opt, 0, sizeof opt);
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    random_batch(tok, tgt, B, T, c->vocab_size, 11);
    int rc = model_create(&m, c, &counting) || model_init_params(&m, 5);
    got->params = sizeof(real) * m.layout.total;
    got->grads = live - got->params;
    if (!rc && measure_split) rc = model_measure_split(&m, T, 0, NULL);
    size_t base = live;
    if (!rc && train) {
        AdamWConfig oc;
        adamw_defaults(&oc);
        rc = optimizer_create(&opt, &m, &oc);
        got->optimizer = live - base;
        base = live;
    }
    peak = live;   /* activations: what the step adds (the split measurement's are freed by then) */
    double gn;
    if (!rc) rc = train ? model_forward_backward(&m, tok, tgt, B, T) || optimizer_step(&opt, &m, 1, &gn)
                        : model_forward(&m, tok, tgt, B, T);
    got->activations = peak - base;
    got->backend = got->params + got->grads + got->optimizer + got->activations;
    if (rc) printf("    real run: %s\n", fh_last_error());
    optimizer_free(&opt, &m);
    model_free(&m);
    if (live) { printf("    %zu bytes still held after model_free\n", live); rc = -1; }
    free(tok);
    free(tgt);
    return rc ? -1 : 0;
}

/* The estimate equals the real run's allocations, part by part, for every
 * architecture, training and inference, at two shapes. */
static void test_estimate_is_exact(void) {
    const int shapes[2][2] = {{2, 16}, {3, 32}};
    for (int i = 0; i < N_TINY; i++) {
        Config c;
        if (load_tiny(tiny[i], &c)) { CHECK(0, "config %s", tiny[i]); continue; }
        for (int s = 0; s < 2; s++)
            for (int train = 0; train <= 1; train++) {
                int B = shapes[s][0], T = shapes[s][1];
                MemoryEstimate e, got;
                int rc = model_memory_estimate(&c, B, T, train ? MEMORY_TRAIN : MEMORY_INFER, &e);
                CHECK(rc == 0, "%s: %s", tiny[i], fh_last_error());
                if (rc || measure(&c, B, T, train, 0, &got)) { CHECK(0, "%s B=%d T=%d", tiny[i], B, T); continue; }
                CHECK(e.params == got.params && e.grads == got.grads && e.optimizer == got.optimizer &&
                          e.activations == got.activations,
                      "%s B=%d T=%d train=%d: estimate params %zu grads %zu opt %zu acts %zu, allocated %zu %zu %zu %zu",
                      tiny[i], B, T, train, e.params, e.grads, e.optimizer, e.activations, got.params, got.grads,
                      got.optimizer, got.activations);
                /* independent floor: every layer's output [B, T, H] and the logits [B, T, V] (twice in
                 * training: dlogits) are held at once */
                size_t floor = sizeof(real) * (size_t)B * T *
                               ((size_t)(c.num_layers + 1) * c.hidden_size + (size_t)(train ? 2 : 1) * c.vocab_size);
                CHECK(e.activations > floor, "%s: activations %zu below the floor %zu", tiny[i], e.activations, floor);
                CHECK(e.optimizer == (train ? 2 * e.params : 0), "%s: AdamW m, v = %zu", tiny[i], e.optimizer);
                CHECK(e.host == (train ? 2 * e.params : 0) && e.total == e.backend + e.host &&
                          e.backend == e.params + e.grads + e.optimizer + e.activations, "%s: sums", tiny[i]);
            }
    }
}

/* split_ratio "measured": the estimate (largest over the candidates) covers
 * what the run allocates after model_measure_split picked one. */
static void test_measured_split_is_covered(void) {
    const char *names[] = {"flowhn-fa", "flowhn-fac"};
    for (int i = 0; i < 2; i++) {
        Config c;
        if (load_tiny(names[i], &c)) { CHECK(0, "config"); continue; }
        c.ratio_rule = RATIO_MEASURED;
        MemoryEstimate e, got;
        int rc = model_memory_estimate(&c, 2, 32, MEMORY_TRAIN, &e);
        CHECK(rc == 0, "%s", fh_last_error());
        if (rc || measure(&c, 2, 32, 1, 1, &got)) { CHECK(0, "%s: real run", names[i]); continue; }
        /* the candidates differ by how many tokens go to each branch: within 25% of each other here */
        CHECK(e.backend >= got.backend && e.backend <= got.backend * 1.25, "%s: estimate %zu, allocated %zu",
              names[i], e.backend, got.backend);
        printf("    %s measured split: estimate %zu bytes, allocated %zu\n", names[i], e.backend, got.backend);
    }
}

/* The generator's buffers (KV caches, SSM states, scratch), measured with
 * mallinfo2 around generator_create. Bound: the estimate counts the backend
 * buffers; the measurement adds the generator's host bookkeeping (its struct,
 * layer table, cached positions: a few hundred bytes per layer) and malloc's
 * chunk headers, so estimate <= measured <= 1.01 x estimate + 4 KiB (measured: 1.5-2.4 KiB over). */
static void test_generator_estimate(void) {
#if defined(__SANITIZE_ADDRESS__)
    printf("    skipped under AddressSanitizer (mallinfo2 sees glibc's heap, not ASan's)\n");
#else
    for (int i = 0; i < N_TINY; i++) {
        Config c;
        if (load_tiny(tiny[i], &c)) { CHECK(0, "config"); continue; }
        for (int B = 1; B <= 8; B += 7) {
            MemoryEstimate e;
            Model m;
            if (model_memory_estimate(&c, B, 0, MEMORY_GENERATE, &e) || model_create(&m, &c, &cpu_ops)) {
                CHECK(0, "%s: %s", tiny[i], fh_last_error());
                continue;
            }
            struct mallinfo2 a = mallinfo2();
            Generator *g = generator_create(&m, B);
            struct mallinfo2 b = mallinfo2();
            size_t got = (b.uordblks + b.hblkhd) - (a.uordblks + a.hblkhd);
            CHECK(g != NULL, "%s", fh_last_error());
            /* grads: the buffer and model_zero_grad's run table on the backend (Model.zrun_dev) */
            size_t ztab = m.zrun_dev ? sizeof(size_t) * 2 * (size_t)m.n_zruns : 0;
            CHECK(e.params + e.grads == 2 * sizeof(real) * m.layout.total + ztab && e.optimizer == 0, "%s: params",
                  tiny[i]);
            CHECK(got >= e.activations && got <= e.activations * 1.01 + 4096,
                  "%s B=%d: generator estimate %zu bytes, measured %zu", tiny[i], B, e.activations, got);
            generator_free(g);
            model_free(&m);
        }
    }
#endif
}

/* The generate estimate with a T-token prompt (MEMORY_GENERATE, T > 0)
 * equals what generator_create + generator_prefill allocate on the counting
 * table, byte for byte, and grows with T (the prefill's B*T-row activations):
 * for every architecture, prompts of 0 (none), 1, 8 and the whole window. */
static void test_prefill_estimate(void) {
    const int prompts[] = {0, 1, 8, 32}, B = 2;
    int tok[2 * 32] = {0};
    for (int i = 0; i < N_TINY; i++) {
        Config c;
        if (load_tiny(tiny[i], &c)) { CHECK(0, "config"); continue; }
        c.max_seq_len = 32;
        size_t prev = 0, none = 0;
        for (int p = 0; p < 4; p++) {
            int T = prompts[p];
            MemoryEstimate e;
            Model m;
            int rc = model_memory_estimate(&c, B, T, MEMORY_GENERATE, &e);
            CHECK(rc == 0, "%s T=%d: %s", tiny[i], T, fh_last_error());
            counting_init();
            if (rc || model_create(&m, &c, &counting)) { CHECK(0, "%s: %s", tiny[i], fh_last_error()); continue; }
            size_t base = live;
            Generator *g = generator_create(&m, B);
            CHECK(g && (!T || generator_prefill(g, tok, T, NULL) == 0), "%s T=%d: %s", tiny[i], T, fh_last_error());
            size_t got = peak - base;
            CHECK(e.activations == got, "%s T=%d: estimate %zu bytes, allocated %zu", tiny[i], T, e.activations, got);
            CHECK(e.activations > prev, "%s T=%d: estimate %zu not above %zu at the shorter prompt", tiny[i], T,
                  e.activations, prev);
            prev = e.activations;
            if (!T) none = prev;
            generator_free(g);
            model_free(&m);
        }
        printf("    %-15s generate B=%d: no prompt %zu bytes, 32-token prompt %zu\n", tiny[i], B, none, prev);
    }
}

/* FLOWHN_MEMORY_LIMIT replaces the detected figure; suffixes are powers of 1024. */
static void test_limit_override(void) {
    const Backend *cpu = backend_find("cpu");
    const struct { const char *s; size_t v; } ok[] = {{"1048576", 1048576}, {"512K", 524288}, {"1M", 1048576},
                                                      {"2G", 2147483648u}, {"1.5M", 1572864}, {"3GiB", 3221225472u},
                                                      {"4kb", 4096}};
    char src[256];
    size_t v;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        setenv("FLOWHN_MEMORY_LIMIT", ok[i].s, 1);
        CHECK(memory_available(cpu, &v, src, sizeof src) == 0 && v == ok[i].v, "%s -> %zu", ok[i].s, v);
        CHECK(strstr(src, "FLOWHN_MEMORY_LIMIT") != NULL, "source '%s'", src);
    }
    const char *bad[] = {"12X", "abc", "-1", "1M5", "G"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("FLOWHN_MEMORY_LIMIT", bad[i], 1);
        CHECK(memory_available(cpu, &v, src, sizeof src) == -1 && strstr(fh_last_error(), "FLOWHN_MEMORY_LIMIT"),
              "'%s' accepted", bad[i]);
    }
    unsetenv("FLOWHN_MEMORY_LIMIT");
}

/* Without the override: a figure from /proc/meminfo or a cgroup, at most MemTotal. */
static void test_detected_cpu_memory(void) {
    size_t v = 0, total = 0;
    char src[256];
    CHECK(memory_available_cpu(&v, src, sizeof src) == 0, "no figure");
    FILE *f = fopen("/proc/meminfo", "r");
    unsigned long long kb;
    if (f && fscanf(f, "MemTotal: %llu kB", &kb) == 1) total = (size_t)kb * 1024;
    if (f) fclose(f);
    CHECK(v > 0 && v <= total, "available %zu of MemTotal %zu (%s)", v, total, src);
    CHECK(strstr(src, "MemAvailable") || strstr(src, "cgroup"), "source '%s'", src);
}

/* A run over the limit is refused; the message has the estimate by part, the
 * figure and its source, and the fix. Under the limit it passes. */
static void test_refusal(void) {
    const Backend *cpu = backend_find("cpu");
    Config c;
    if (load_tiny("llama", &c)) { CHECK(0, "config"); return; }
    MemoryEstimate e;
    CHECK(model_memory_estimate(&c, 64, 32, MEMORY_TRAIN, &e) == 0, "%s", fh_last_error());
    setenv("FLOWHN_MEMORY_LIMIT", "64K", 1);
    CHECK(e.total > 65536, "tiny estimate %zu", e.total);
    int rc = memory_check(&e, cpu);
    const char *msg = fh_last_error();
    CHECK(rc == -1, "not refused");
    const char *want[] = {"MiB", "params", "grads", "AdamW", "activations", "available", "FLOWHN_MEMORY_LIMIT=64K",
                          "reduce --batch or --seq-len, or use a smaller config"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(strstr(msg, want[i]) != NULL, "message lacks '%s': %s", want[i], msg);
    setenv("FLOWHN_MEMORY_LIMIT", "100G", 1);
    CHECK(memory_check(&e, cpu) == 0, "refused under 100G: %s", fh_last_error());
    setenv("FLOWHN_MEMORY_LIMIT", "junk", 1);
    CHECK(memory_check(&e, cpu) == -1 && strstr(fh_last_error(), "junk"), "a bad limit is not named");
    unsetenv("FLOWHN_MEMORY_LIMIT");
}

/* A 1B preset at batch 64: estimated in well under a second without
 * allocating it, refused under a 64 GiB limit. */
/* one rank of a data-parallel run keeps 1/world of the AdamW moments (ZeRO-1,
 * padded to a multiple of world) and everything else whole */
static void test_world_share(void) {
    Config c;
    if (config_load(&c, "configs/flowhn-fa-1b.json")) { CHECK(0, "%s", fh_last_error()); return; }
    MemoryEstimate one, two, three;
    int rc = model_memory_estimate_ranks(&c, 2, 256, MEMORY_TRAIN, 1, &one) ||
             model_memory_estimate_ranks(&c, 2, 256, MEMORY_TRAIN, 2, &two) ||
             model_memory_estimate_ranks(&c, 2, 256, MEMORY_TRAIN, 3, &three);
    CHECK(rc == 0, "%s", fh_last_error());
    size_t n = one.params / sizeof(real);
    CHECK(two.optimizer == 2 * sizeof(real) * ((n + 1) / 2), "2 ranks: moments %zu, want %zu", two.optimizer,
          2 * sizeof(real) * ((n + 1) / 2));
    CHECK(three.optimizer == 2 * sizeof(real) * ((n + 2) / 3), "3 ranks: moments %zu", three.optimizer);
    CHECK(two.params == one.params && two.activations == one.activations, "2 ranks: the rest changed");
    printf("    flowhn-fa-1b at 2 x 256, optimizer moments per rank: 1 rank %.2f GiB, 2 ranks %.2f, 3 ranks %.2f\n",
           one.optimizer / 1073741824.0, two.optimizer / 1073741824.0, three.optimizer / 1073741824.0);
}

static void test_1b_preset(void) {
    const char *paths[] = {"configs/llama-1b.json", "configs/flowhn-fa-1b.json"};
    for (int i = 0; i < 2; i++) {
        Config c;
        if (config_load(&c, paths[i])) { CHECK(0, "%s", fh_last_error()); continue; }
        ParamLayout L;
        if (layout_build(&L, &c)) { CHECK(0, "layout"); continue; }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        MemoryEstimate e;
        int rc = model_memory_estimate(&c, 64, c.max_seq_len, MEMORY_TRAIN, &e);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        CHECK(rc == 0 && s < 2, "%s: %.2f s, %s", paths[i], s, rc ? fh_last_error() : "");
        size_t BT = (size_t)64 * c.max_seq_len;
        CHECK(e.params == sizeof(real) * L.total && e.optimizer == 2 * e.params, "%s params", paths[i]);
        /* at least every layer's [B*T, H] output (the fused classifier stores no [B*T, V] logits) */
        CHECK(e.activations > sizeof(real) * BT * ((size_t)(c.num_layers + 1) * c.hidden_size),
              "%s activations %zu", paths[i], e.activations);
        printf("    %s at 64 x %d: %.1f GiB (params %.2f, activations %.1f), estimated in %.3f s\n", paths[i],
               c.max_seq_len, e.total / 1073741824.0, e.params / 1073741824.0, e.activations / 1073741824.0, s);
        setenv("FLOWHN_MEMORY_LIMIT", "64G", 1);
        CHECK(memory_check(&e, backend_find("cpu")) == -1, "%s not refused", paths[i]);
        unsetenv("FLOWHN_MEMORY_LIMIT");
        layout_free(&L);
    }
}

int main(void) {
    RUN(test_estimate_is_exact);
    RUN(test_measured_split_is_covered);
    RUN(test_generator_estimate);
    RUN(test_prefill_estimate);
    RUN(test_limit_override);
    RUN(test_detected_cpu_memory);
    RUN(test_refusal);
    RUN(test_1b_preset);
    RUN(test_world_share);
    TEST_SUMMARY();
}
