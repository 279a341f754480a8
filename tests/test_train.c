/* test_train.c - the training loop and checkpoints: exact resume, refusal of
 * a different config, corrupted / truncated checkpoints, a full disk that
 * leaves the previous checkpoint intact, NaN detection, that a tiny
 * model's loss goes down on learnable data, the trainer's wiring of the
 * overlapped gradient reduction (a one-rank Dist on the CPU), and that the
 * recordable step (src/train/step.c, TrainOptions.graph, run op by op on the
 * CPU) gives the losses and weights of the trainer's original step and the
 * same NaN policies. */
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/train/checkpoint.h"
#include "../src/dist/bucket.h"
#include "../src/train/trainer.h"
#include "helpers/tiny.h"
#include "helpers/tmpdir.h"
#include "test.h"

/* A deterministic source over a fixed repeating token pattern (learnable). */
typedef struct { long pos; int V; } Stream;
static int stream_next(void *p, int *tok, int *tgt, int B, int T) {
    Stream *s = p;
    for (int i = 0; i < B * (T + 1); i++) {
        long k = s->pos + i;
        int v = (int)((k * 7 + (k / 5) % 3) % s->V);
        if (i % (T + 1) < T) tok[(i / (T + 1)) * T + i % (T + 1)] = v;
        if (i % (T + 1) > 0) tgt[(i / (T + 1)) * T + i % (T + 1) - 1] = v;
    }
    s->pos += (long)B * (T + 1);
    return 0;
}
static char *stream_state(void *p) {
    char *s = malloc(64);
    snprintf(s, 64, "{\"pos\": %ld}", ((Stream *)p)->pos);
    return s;
}
static int stream_restore(void *p, const char *json) {
    return sscanf(json, "{\"pos\":%ld}", &((Stream *)p)->pos) == 1 ? 0 : fh_error("bad stream state %s", json);
}

static char dir[256];

static TrainOptions options(const char *sub, int steps) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    TrainOptions o;
    memset(&o, 0, sizeof o);
    o.batch_size = 2; o.seq_len = 12; o.grad_accum = 2; o.steps = steps; o.quiet = 1;
    o.val_every = 5; o.val_batches = 2;
    o.out_dir = strdup(path);
    adamw_defaults(&o.opt);
    o.opt.lr = 3e-3; o.opt.warmup_steps = 3;
    return o;
}

static Config cfg_fac(void) { return tiny_config(&tiny_specs[12]); }   /* flowhn-fac-isolated */

/* m: a model of c with seed-1 weights, saved (no optimizer state) to dir/name, whose path goes to ck */
static void saved_model(Model *m, const Config *c, char *ck, size_t ck_size, const char *name) {
    model_create(m, c, &cpu_ops);
    model_init_params(m, 1);
    snprintf(ck, ck_size, "%s/%s", dir, name);
    OptimizerView none = {NULL, NULL};
    CHECK(checkpoint_save(ck, m, none, NULL) == 0, "%s", fh_last_error());
}

/* Two runs that must agree: the same seed-5 cfg_fac model twice, each with its
 * own training stream and validation stream over the same data. Filled in
 * place (the sources point at the streams beside them). */
typedef struct {
    Config c;
    Model a, b;
    Stream sa, sb, va, vb;
    BatchSource ta, tb, vsa, vsb;
} Twins;

static void twins_init(Twins *w) {
    w->c = cfg_fac();
    model_create(&w->a, &w->c, &cpu_ops); model_init_params(&w->a, 5);
    model_create(&w->b, &w->c, &cpu_ops); model_init_params(&w->b, 5);
    w->sa = w->sb = (Stream){0, w->c.vocab_size};
    w->va = w->vb = (Stream){1000000, w->c.vocab_size};
    w->ta = (BatchSource){stream_next, stream_state, stream_restore, &w->sa};
    w->tb = (BatchSource){stream_next, stream_state, stream_restore, &w->sb};
    w->vsa = (BatchSource){stream_next, stream_state, stream_restore, &w->va};
    w->vsb = (BatchSource){stream_next, stream_state, stream_restore, &w->vb};
}

static void exact_resume(void) {
    Twins w;
    twins_init(&w);
    TrainResult ra, rb1, rb2;
    TrainOptions oa = options("straight", 20);
    CHECK(train_run(&w.a, &oa, &w.ta, &w.vsa, &ra) == 0, "%s", fh_last_error());
    TrainOptions ob = options("resumed", 20);
    ob.stop_after = 10;
    CHECK(train_run(&w.b, &ob, &w.tb, &w.vsb, &rb1) == 0, "%s", fh_last_error());
    CHECK(rb1.steps_done == 10, "stopped after 10 (%d)", rb1.steps_done);
    /* a fresh model and source, restored from the checkpoint */
    Model b2;
    model_create(&b2, &w.c, &cpu_ops);
    model_init_params(&b2, 999);   /* different init: must be overwritten by the checkpoint */
    Stream sb2 = {0, w.c.vocab_size};
    BatchSource tb2 = {stream_next, stream_state, stream_restore, &sb2};
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoint.bin", ob.out_dir);
    TrainOptions ob2 = options("resumed", 20);
    ob2.resume = ck;
    CHECK(train_run(&b2, &ob2, &tb2, &w.vsb, &rb2) == 0, "%s", fh_last_error());
    CHECK(rb2.steps_done == 10, "resumed run did 10 steps (%d)", rb2.steps_done);
    for (int i = 0; i < 10; i++) {
        CHECK(ra.losses[i] == rb1.losses[i], "step %d: %.9g vs %.9g", i + 1, ra.losses[i], rb1.losses[i]);
        CHECK(ra.losses[10 + i] == rb2.losses[i], "step %d after resume: %.9g vs %.9g", 11 + i, ra.losses[10 + i],
              rb2.losses[i]);
    }
    CHECK(memcmp(w.a.params, b2.params, sizeof(real) * w.a.layout.total) == 0, "weights bit-identical after resume");
    CHECK(ra.losses[19] < ra.losses[0] - 0.5, "loss falls on learnable data: %.4f -> %.4f", ra.losses[0], ra.losses[19]);
    printf("    20 straight vs 10 + resume + 10: identical; loss %.4f -> %.4f\n", ra.losses[0], ra.losses[19]);
    model_free(&w.a); model_free(&w.b); model_free(&b2);
    free(ra.losses); free(rb1.losses); free(rb2.losses);
    free((char *)oa.out_dir); free((char *)ob.out_dir); free((char *)ob2.out_dir);
}


/* A Dist of one rank that behaves like a real communicator (impl set, so the
 * trainer takes the collective path) with copying collectives, counting
 * what the trainer asks of it. */
static struct { int rs, ag, launched, waits, bad; } fd;
static int fd_reduce_scatter(Dist *d, const real *send, real *recv, size_t n, const char *w) {
    fd.rs++;
    memmove(recv, send, sizeof(real) * n);
    return 0;
}
static int fd_all_gather(Dist *d, const real *send, real *recv, size_t n, const char *w) {
    fd.ag++;
    memmove(recv, send, sizeof(real) * n);
    return 0;
}
static int fd_all_reduce_host(Dist *d, double *x, int n, const char *w) { return 0; }
static int fd_reduce_async(Dist *d, real *buf, const DistPiece *p, int n, const char *w) {
    for (int i = 0; i < n; i++) fd.bad += p[i].root != 0;
    fd.launched++;
    return 0;
}
static int fd_wait_async(Dist *d, const char *w) { fd.waits++; return 0; }

/* Overlap on, off, and no Dist at all train the same weights bit for bit
 * (with accumulation); with overlap every bucket goes out once per step
 * (during the last micro-batch's backward) and is waited for once, and the
 * reduce-scatter is never called; without, the reduce-scatter runs once a step. */
static void overlap_wiring(void) {
    Config c = cfg_fac();
    int impl_dummy = 0, steps = 6;
    real *ref = NULL;
    double ref_loss[6];
    for (int mode = 0; mode < 3; mode++) {   /* 0: no Dist, 1: --no-overlap, 2: overlap */
        Model m;
        model_create(&m, &c, &cpu_ops);
        model_init_params(&m, 5);
        Stream st = {0, c.vocab_size};
        BatchSource src = {stream_next, stream_state, stream_restore, &st};
        const char *sub[] = {"ov-none", "ov-off", "ov-on"};
        TrainOptions o = options(sub[mode], steps);
        o.val_every = 0;
        Dist d;
        memset(&d, 0, sizeof d);
        d.world = 1;
        d.impl = &impl_dummy;
        d.reduce_scatter = fd_reduce_scatter; d.all_gather = fd_all_gather; d.all_reduce_host = fd_all_reduce_host;
        d.reduce_async = fd_reduce_async; d.wait_async = fd_wait_async;
        if (mode) o.dist = &d;
        o.overlap = mode == 2;
        o.bucket_reals = 1000;   /* several buckets on the tiny model */
        memset(&fd, 0, sizeof fd);
        TrainResult r;
        CHECK(train_run(&m, &o, &src, NULL, &r) == 0, "mode %d: %s", mode, fh_last_error());
        if (mode == 0) {
            ref = malloc(sizeof(real) * m.layout.total);
            memcpy(ref, m.params, sizeof(real) * m.layout.total);
            for (int i = 0; i < steps; i++) ref_loss[i] = r.losses[i];
        } else {
            CHECK(memcmp(ref, m.params, sizeof(real) * m.layout.total) == 0, "mode %d: weights differ", mode);
            for (int i = 0; i < steps; i++) CHECK(r.losses[i] == ref_loss[i], "mode %d step %d", mode, i + 1);
        }
        if (mode == 1) CHECK(fd.rs == steps && fd.launched == 0 && fd.waits == 0, "off: %d rs, %d launched", fd.rs, fd.launched);
        if (mode == 2) {
            GradReducer g;
            CHECK(grad_reducer_create(&g, &m, &d, 1000) == 0, "%s", fh_last_error());
            CHECK(g.plan.n_buckets > 2, "%d buckets", g.plan.n_buckets);
            CHECK(fd.rs == 0 && fd.launched == steps * g.plan.n_buckets && fd.waits == steps && fd.bad == 0,
                  "on: %d rs, %d launched (%d x %d buckets), %d waits", fd.rs, fd.launched, steps, g.plan.n_buckets,
                  fd.waits);
            grad_reducer_free(&g);
        }
        free(r.losses);
        free((char *)o.out_dir);
        model_free(&m);
    }
    free(ref);
}

static void refuses_other_config(void) {
    Config c = cfg_fac();
    Model m;
    char ck[600];
    saved_model(&m, &c, ck, sizeof ck, "cfg.bin");
    Config d = c;
    d.intermediate_size = 32;
    Model m2;
    model_create(&m2, &d, &cpu_ops);
    CHECK(checkpoint_load(ck, &m2, NULL, NULL, NULL) != 0, "a different config must be refused");
    CHECK(strstr(fh_last_error(), "intermediate_size") != NULL, "message names the field: %s", fh_last_error());
    printf("    message: %s\n", fh_last_error());
    CHECK(checkpoint_load(ck, &m, NULL, NULL, NULL) == 0, "same config loads: %s", fh_last_error());
    model_free(&m); model_free(&m2);
}

static void corrupted_and_truncated(void) {
    Config c = cfg_fac();
    Model m;
    char ck[600], bad[700];
    saved_model(&m, &c, ck, sizeof ck, "good.bin");
    FILE *f = fopen(ck, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc(n);
    CHECK(fread(buf, 1, n, f) == (size_t)n, "read");
    fclose(f);
    /* one flipped bit in the weights */
    snprintf(bad, sizeof bad, "%s/flipped.bin", dir);
    buf[n / 2] ^= 4;
    f = fopen(bad, "wb"); fwrite(buf, 1, n, f); fclose(f);
    CHECK(checkpoint_load(bad, &m, NULL, NULL, NULL) != 0 && strstr(fh_last_error(), "checksum"), "flip: %s", fh_last_error());
    buf[n / 2] ^= 4;
    /* truncated */
    snprintf(bad, sizeof bad, "%s/truncated.bin", dir);
    f = fopen(bad, "wb"); fwrite(buf, 1, n - 100, f); fclose(f);
    CHECK(checkpoint_load(bad, &m, NULL, NULL, NULL) != 0 && strstr(fh_last_error(), "truncated"), "trunc: %s", fh_last_error());
    /* not a checkpoint at all */
    snprintf(bad, sizeof bad, "%s/garbage.bin", dir);
    f = fopen(bad, "wb"); fputs("hello", f); fclose(f);
    CHECK(checkpoint_load(bad, &m, NULL, NULL, NULL) != 0 && strstr(fh_last_error(), "not a flowhn checkpoint"), "%s", fh_last_error());
    CHECK(checkpoint_load("/nonexistent/x.bin", &m, NULL, NULL, NULL) != 0 && strstr(fh_last_error(), "/nonexistent/x.bin"), "%s", fh_last_error());
    free(buf);
    model_free(&m);
}

static void full_disk_keeps_previous(void) {
    Config c = cfg_fac();
    Model m;
    char ck[600];
    saved_model(&m, &c, ck, sizeof ck, "disk.bin");
    OptimizerView none = {NULL, NULL};
    /* a file-size limit below the checkpoint size: writes fail with EFBIG like a full disk */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        model_init_params(&m, 2);
        int rc = checkpoint_save(ck, &m, none, NULL);
        printf("    write under a 4 KiB file limit: %s\n", rc ? fh_last_error() : "succeeded?!");
        fflush(stdout);
        _exit(rc ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the limited write must fail with an error");
    Model back;
    model_create(&back, &c, &cpu_ops);
    CHECK(checkpoint_load(ck, &back, NULL, NULL, NULL) == 0, "previous checkpoint still loads: %s", fh_last_error());
    CHECK(memcmp(back.params, m.params, sizeof(real) * m.layout.total) == 0, "and holds the seed-1 weights");
    char tmpname[700];
    snprintf(tmpname, sizeof tmpname, "%s/disk.bin.tmp.%d", dir, (int)pid);
    CHECK(access(tmpname, F_OK) != 0, "no temporary file left behind");
    model_free(&m); model_free(&back);
}

static void nan_detected(void) {
    Config c = cfg_fac();
    Model m;
    model_create(&m, &c, &cpu_ops);
    model_init_params(&m, 1);
    m.params[m.layout.layers[0].out_proj + 3] = NAN;
    int tok[24], tgt[24];
    tiny_batch(tok, tgt, 2, 12, c.vocab_size, 1);
    CHECK(model_forward(&m, tok, tgt, 2, 12) != 0, "NaN weights give an error");
    CHECK(strstr(fh_last_error(), "not finite") != NULL, "%s", fh_last_error());
    model_free(&m);
}

static void nan_policies_with(int graph) {
    Config c = cfg_fac();
    for (int skip = 0; skip < 2; skip++) {
        Model m;
        model_create(&m, &c, &cpu_ops);
        model_init_params(&m, 1);
        m.params[m.layout.layers[0].out_proj + 3] = NAN;
        real before = m.params[m.layout.embed + 5];
        Stream st = {0, c.vocab_size};
        BatchSource src = {stream_next, stream_state, stream_restore, &st};
        TrainOptions o = options(skip ? "nan-skip" : "nan-stop", 3);
        o.nan_policy = skip ? NAN_SKIP : NAN_STOP;
        o.val_every = 0;
        if (graph) { o.graph = 1; o.grad_accum = 1; }   /* the recordable step (no accumulation) */
        TrainResult r;
        int rc = train_run(&m, &o, &src, NULL, &r);
        if (skip) {
            CHECK(rc == 0 && r.steps_done == 3 && isnan(r.losses[0]) && isnan(r.losses[2]), "skip: rc %d, %d steps", rc, r.steps_done);
            CHECK(m.params[m.layout.embed + 5] == before, "skipped updates leave the weights alone");
        } else {
            CHECK(rc != 0 && strstr(fh_last_error(), "step 1") && strstr(fh_last_error(), "not finite"), "stop: %s", fh_last_error());
            char ck[600];
            snprintf(ck, sizeof ck, "%s/checkpoint.bin", o.out_dir);
            CHECK(access(ck, F_OK) != 0, "no checkpoint written from a NaN run");
        }
        free(r.losses);
        free((char *)o.out_dir);
        model_free(&m);
    }
}

static void nan_policies(void) { nan_policies_with(0); }
static void nan_policies_recordable_step(void) { nan_policies_with(1); }

/* the recordable step in the trainer (validation, checkpoints) against the original step */
static void recordable_step_same_run(void) {
    Twins w;
    twins_init(&w);
    TrainResult ra, rb;
    TrainOptions oa = options("orig-step", 12), ob = options("recordable-step", 12);
    oa.grad_accum = ob.grad_accum = 1;
    oa.graph = -1;
    ob.graph = 1;
    CHECK(train_run(&w.a, &oa, &w.ta, &w.vsa, &ra) == 0, "%s", fh_last_error());
    CHECK(train_run(&w.b, &ob, &w.tb, &w.vsb, &rb) == 0, "%s", fh_last_error());
    double worst = 0;
    for (int i = 0; i < 12; i++) worst = fmax(worst, fabs(ra.losses[i] - rb.losses[i]) / fabs(ra.losses[i]));
    CHECK(worst <= 1e-12, "losses differ by relative %.2e", worst);
    CHECK(fabs(ra.last_val_loss - rb.last_val_loss) <= 1e-12 * fabs(ra.last_val_loss), "validation %.9g vs %.9g",
          ra.last_val_loss, rb.last_val_loss);
    CHECK(memcmp(w.a.params, w.b.params, sizeof(real) * w.a.layout.total) == 0, "weights bit-identical");
    printf("    original vs recordable step, 12 steps: losses rel %.1e, loss %.4f -> %.4f\n", worst, ra.losses[0],
           ra.losses[11]);
    model_free(&w.a); model_free(&w.b);
    free(ra.losses); free(rb.losses);
    free((char *)oa.out_dir); free((char *)ob.out_dir);
}

static void bad_inputs(void) {
    Config c = cfg_fac();
    Model m;
    model_create(&m, &c, &cpu_ops);
    model_init_params(&m, 1);
    int tok[24], tgt[24];
    tiny_batch(tok, tgt, 2, 12, c.vocab_size, 1);
    tok[5] = c.vocab_size;
    CHECK(model_forward(&m, tok, tgt, 2, 12) != 0 && strstr(fh_last_error(), "outside the vocabulary"), "%s", fh_last_error());
    tok[5] = -3;
    CHECK(model_forward(&m, tok, tgt, 2, 12) != 0, "negative token");
    tok[5] = 1;
    int big[2 * 65];
    for (int i = 0; i < 130; i++) big[i] = 1;
    CHECK(model_forward(&m, big, NULL, 2, 65) != 0 && strstr(fh_last_error(), "max_position_embeddings"), "%s", fh_last_error());
    CHECK(model_backward(&m) != 0, "backward without forward with targets");
    model_free(&m);
}

int main(void) {
    test_dir_make(dir, sizeof dir, "train");
    RUN(exact_resume);
    RUN(refuses_other_config);
    RUN(corrupted_and_truncated);
    RUN(full_disk_keeps_previous);
    RUN(nan_detected);
    RUN(nan_policies);
    RUN(nan_policies_recordable_step);
    RUN(recordable_step_same_run);
    RUN(bad_inputs);
    RUN(overlap_wiring);
    test_dir_remove(dir);
    TEST_SUMMARY();
}
