/* test_dist.c - the CPU-testable parts of data-parallel training: rank
 * discovery from the launchers' environments, the file and TCP rendezvous
 * between forked processes (and their timeouts), the ZeRO-1 shard arithmetic,
 * and ZeRO-1 AdamW over W simulated ranks against the single-process AdamW,
 * bit for bit; the gradient buckets of the overlapped reduction (their plan
 * over the ZeRO-1 shards, and that the backward hands each one over only once
 * its gradients are final). (The NCCL collectives themselves need GPUs: see
 * src/dist/dist.h.) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/dist/bucket.h"
#include "../src/dist/dist.h"
#include "../src/dist/rendezvous.h"
#include "../src/dist/shard.h"
#include "../src/model/model.h"
#include "../src/train/optimizer.h"
#include "helpers/tiny.h"
#include "test.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- rank discovery ---- */

static const char *rank_vars[] = {"FLOWHN_RANK", "FLOWHN_WORLD_SIZE", "FLOWHN_LOCAL_RANK", "OMPI_COMM_WORLD_RANK",
                                  "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS",
                                  "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_STEP_ID", "OMPI_MCA_ess_base_jobid",
                                  "PMIX_NAMESPACE", "MASTER_ADDR", "MASTER_PORT"};
static void clear_env(void) {
    for (size_t i = 0; i < sizeof rank_vars / sizeof rank_vars[0]; i++) unsetenv(rank_vars[i]);
}

static void test_env_sources(void) {
    DistEnv e;
    clear_env();
    CHECK(dist_env_read(&e) == 0 && e.world == 1 && e.rank == 0 && !strcmp(e.source, "single"), "alone: %d/%d %s", e.rank,
          e.world, e.source);
    setenv("OMPI_COMM_WORLD_RANK", "3", 1); setenv("OMPI_COMM_WORLD_SIZE", "8", 1); setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    CHECK(dist_env_read(&e) == 0 && e.rank == 3 && e.world == 8 && e.local_rank == 1 && !strcmp(e.source, "mpirun"),
          "mpirun: %d/%d local %d %s", e.rank, e.world, e.local_rank, e.source);
    clear_env();
    setenv("SLURM_PROCID", "5", 1); setenv("SLURM_NTASKS", "6", 1);   /* no SLURM_LOCALID: GPU 0 */
    CHECK(dist_env_read(&e) == 0 && e.rank == 5 && e.world == 6 && e.local_rank == 0 && !strcmp(e.source, "srun"),
          "srun: %d/%d local %d %s", e.rank, e.world, e.local_rank, e.source);
    /* our launcher's variables win over the allocation's */
    setenv("FLOWHN_RANK", "1", 1); setenv("FLOWHN_WORLD_SIZE", "2", 1); setenv("FLOWHN_LOCAL_RANK", "1", 1);
    CHECK(dist_env_read(&e) == 0 && e.rank == 1 && e.world == 2 && e.local_rank == 1 && !strcmp(e.source, "flowhn"),
          "flowhn: %d/%d local %d %s", e.rank, e.world, e.local_rank, e.source);
    clear_env();
}

static void test_env_errors(void) {
    DistEnv e;
    clear_env();
    setenv("FLOWHN_RANK", "2", 1); setenv("FLOWHN_WORLD_SIZE", "2", 1);
    CHECK(dist_env_read(&e) == -1 && strstr(fh_last_error(), "outside the world"), "rank 2 of 2: %s", fh_last_error());
    unsetenv("FLOWHN_WORLD_SIZE");
    CHECK(dist_env_read(&e) == -1 && strstr(fh_last_error(), "set together"), "rank alone: %s", fh_last_error());
    setenv("FLOWHN_WORLD_SIZE", "two", 1);
    CHECK(dist_env_read(&e) == -1 && strstr(fh_last_error(), "FLOWHN_WORLD_SIZE"), "malformed: %s", fh_last_error());
    clear_env();
}

static void test_default_rendezvous(void) {
    char b[1200];
    clear_env();
    CHECK(dist_default_rendezvous(b, sizeof b, "/o") == -1 && strstr(fh_last_error(), "FLOWHN_RENDEZVOUS"), "%s",
          fh_last_error());
    setenv("SLURM_JOB_ID", "42", 1); setenv("SLURM_STEP_ID", "3", 1);
    CHECK(dist_default_rendezvous(b, sizeof b, "/o") == 0 && !strcmp(b, "file:/o/.rendezvous-slurm-42.3"), "%s", b);
    setenv("MASTER_ADDR", "node7", 1); setenv("MASTER_PORT", "29500", 1);
    CHECK(dist_default_rendezvous(b, sizeof b, "/o") == 0 && !strcmp(b, "tcp:node7:29500"), "%s", b);
    clear_env();
}

static void test_world_of_one(void) {
    DistEnv one = {0, 1, 0, "single"}, two = {0, 2, 0, "flowhn"};
    Dist d;
    CHECK(dist_init(&d, &one, "cpu", "/nonexistent") == 0 && d.world == 1, "world of one: %s", fh_last_error());
    double x[2] = {1.5, -2};
    real buf[4] = {1, 2, 3, 4};
    CHECK(d.all_reduce_host(&d, x, 2, "t") == 0 && x[0] == 1.5 && x[1] == -2, "identity all-reduce");
    CHECK(d.reduce_scatter(&d, buf, buf, 4, "t") == 0 && d.all_gather(&d, buf, buf, 4, "t") == 0 && buf[3] == 4,
          "identity in place");
    dist_free(&d);
    CHECK(dist_init(&d, &two, "cpu", "/tmp") == -1 && strstr(fh_last_error(), "--device cuda"), "cpu world of two: %s",
          fh_last_error());
    /* this test links the CPU library only: no NCCL */
    CHECK(dist_init(&d, &two, "cuda", "/tmp") == -1 && strstr(fh_last_error(), "no NCCL"), "no NCCL: %s", fh_last_error());
}

/* ---- rendezvous between processes ---- */

enum { BLOB = 128 };

/* Forks `world` ranks that exchange a blob through spec; rank 0 starts after
 * rank0_delay_ms (the others must wait for it). Returns how many ranks ended
 * with rank 0's bytes. */
static int exchange_among(const char *spec, int world, int rank0_delay_ms, double timeout_s) {
    unsigned char want[BLOB];
    for (int i = 0; i < BLOB; i++) want[i] = (unsigned char)(i * 37 + 11 + getpid());
    pid_t pid[16];
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        pid[r] = fork();
        if (pid[r] == 0) {
            unsigned char blob[BLOB];
            if (r == 0) {
                memcpy(blob, want, BLOB);
                struct timespec ts = {rank0_delay_ms / 1000, (rank0_delay_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            } else memset(blob, 0, BLOB);
            if (rendezvous_exchange(spec, r, world, blob, BLOB, timeout_s)) {
                printf("    rank %d: %s\n", r, fh_last_error());
                fflush(stdout);
                _exit(2);
            }
            _exit(memcmp(blob, want, BLOB) ? 1 : 0);
        }
    }
    int good = 0;
    for (int r = 0; r < world; r++) {
        int st;
        waitpid(pid[r], &st, 0);
        good += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return good;
}

static void test_file_rendezvous(void) {
    char dir[64], spec[128];
    snprintf(dir, sizeof dir, "/tmp/flowhn-test-dist-%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(spec, sizeof spec, "file:%s/rdzv", dir);
    int good = exchange_among(spec, 5, 300, 10);
    CHECK(good == 5, "%d of 5 ranks got rank 0's blob through %s", good, spec);
    CHECK(access(spec + 5, F_OK) == 0, "the file is left for late readers until cleanup");
    rendezvous_cleanup(spec, 1);
    CHECK(access(spec + 5, F_OK) == 0, "only rank 0 removes it");
    rendezvous_cleanup(spec, 0);
    CHECK(access(spec + 5, F_OK) != 0, "rank 0's cleanup removes it");
    rmdir(dir);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &n))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static void test_tcp_rendezvous(void) {
    char spec[64];
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
    int good = exchange_among(spec, 4, 300, 10);   /* the others connect before rank 0 listens: they retry */
    CHECK(good == 4, "%d of 4 ranks got rank 0's blob through %s", good, spec);
}

static void test_rendezvous_timeouts(void) {
    unsigned char blob[BLOB] = {0};
    char spec[128];
    snprintf(spec, sizeof spec, "file:/tmp/flowhn-test-dist-none-%d", (int)getpid());
    double t0 = now_s();
    int rc = rendezvous_exchange(spec, 1, 2, blob, BLOB, 0.5);
    double dt = now_s() - t0;
    CHECK(rc == -1 && strstr(fh_last_error(), "rank 1") && strstr(fh_last_error(), "rank 0"), "file: %s",
          fh_last_error());
    CHECK(dt >= 0.5 && dt < 2, "file: gave up after %.2f s (bound 0.5 s)", dt);

    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", free_port());
    t0 = now_s();
    rc = rendezvous_exchange(spec, 3, 4, blob, BLOB, 0.5);
    dt = now_s() - t0;
    CHECK(rc == -1 && strstr(fh_last_error(), "rank 3") && strstr(fh_last_error(), "rank 0"), "tcp: %s", fh_last_error());
    CHECK(dt >= 0.5 && dt < 2, "tcp: gave up after %.2f s", dt);

    /* rank 0 waiting for ranks that never come */
    t0 = now_s();
    rc = rendezvous_exchange(spec, 0, 3, blob, BLOB, 0.5);
    dt = now_s() - t0;
    CHECK(rc == -1 && strstr(fh_last_error(), "0 of the 2 other ranks"), "tcp rank 0: %s", fh_last_error());
    CHECK(dt >= 0.5 && dt < 2, "tcp rank 0: gave up after %.2f s", dt);
    CHECK(rendezvous_exchange("nfs:/x", 1, 2, blob, BLOB, 0.1) == -1 && strstr(fh_last_error(), "file:PATH"), "%s",
          fh_last_error());
}

/* ---- shard arithmetic ---- */

static void test_shard_ranges(void) {
    size_t totals[] = {1, 7, 64, 1000, 1001, 12345};
    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++)
        for (int W = 1; W <= 8; W++) {
            size_t total = totals[t], per = shard_per_rank(total, W), padded = shard_padded(total, W);
            CHECK(padded % W == 0 && padded >= total && padded - total < (size_t)W, "total %zu W %d: padded %zu",
                  total, W, padded);
            unsigned char *own = calloc(total, 1);
            for (int r = 0; r < W; r++) {
                size_t lo, hi;
                shard_range(total, W, r, &lo, &hi);
                CHECK(lo <= hi && hi - lo <= per && (hi == total || hi - lo == per), "rank %d: [%zu, %zu)", r, lo, hi);
                /* the range is this rank's part of the padded reduce-scatter */
                CHECK(lo == (r * per < total ? r * per : total), "rank %d starts at %zu", r, lo);
                for (size_t i = lo; i < hi; i++) own[i]++;
            }
            int once = 1;
            for (size_t i = 0; i < total; i++) once &= own[i] == 1;
            CHECK(once, "total %zu W %d: every element owned exactly once", total, W);
            free(own);
        }
}

static int decayed_kind(ParamKind k, int decay_embeddings) {
    return k == PK_MATRIX || (decay_embeddings && k == PK_EMBED);
}

/* The optimizer's AdamW calls of each rank cover its range exactly, in
 * order, and each element keeps its tensor's weight-decay flag. */
static void test_optimizer_runs(void) {
    const TinySpec *spec = &tiny_specs[0];
    for (int i = 0; i < n_tiny_specs; i++)
        if (tiny_specs[i].arch == ARCH_FLOWHN) { spec = &tiny_specs[i]; break; }
    Config c = tiny_config(spec);
    Model m;
    CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
    const ParamLayout *L = &m.layout;
    int kinds_seen[5] = {0};
    for (int i = 0; i < L->n; i++) kinds_seen[L->entries[i].kind] = 1;
    CHECK(kinds_seen[PK_MATRIX] && kinds_seen[PK_EMBED] && kinds_seen[PK_NORM], "the tiny model mixes kinds");
    for (int de = 0; de < 2; de++)
        for (int W = 1; W <= 7; W++) {
            unsigned char *own = calloc(L->total, 1);
            int bad_flag = 0, bad_order = 0;
            for (int r = 0; r < W; r++) {
                AdamWConfig cfg;
                adamw_defaults(&cfg);
                cfg.decay_embeddings = de;
                Optimizer o;
                CHECK(optimizer_create_shard(&o, &m, &cfg, NULL, r, W) == 0, "%s", fh_last_error());
                size_t at = o.lo;
                for (int k = 0; k < o.n_runs; k++) {
                    const OptRun *u = &o.runs[k];
                    bad_order |= u->offset != at;   /* contiguous: no gap, no overlap */
                    at = u->offset + u->n;
                    for (size_t x = u->offset; x < u->offset + u->n; x++) {
                        own[x]++;
                        int e = 0;
                        while (!(x >= L->entries[e].offset && x < L->entries[e].offset + L->entries[e].numel)) e++;
                        bad_flag |= u->decay != decayed_kind(L->entries[e].kind, de);
                    }
                }
                bad_order |= at != o.hi;
                optimizer_free(&o, &m);
            }
            int once = 1;
            for (size_t i = 0; i < L->total; i++) once &= own[i] == 1;
            CHECK(once && !bad_flag && !bad_order, "W %d decay_embeddings %d: once %d, flags %s, order %s", W, de, once,
                  bad_flag ? "WRONG" : "ok", bad_order ? "WRONG" : "ok");
            free(own);
        }
    model_free(&m);
}

/* ZeRO-1 AdamW over W simulated ranks equals the single-process AdamW bit for
 * bit: each rank sees the reduced gradient on its range only (garbage
 * elsewhere), updates its range from the all-reduced sum of squares, and the
 * parameters are then gathered from their owners, for several steps. */
static void sharded_vs_whole(int W, double clip) {
    const TinySpec *spec = &tiny_specs[0];
    for (int i = 0; i < n_tiny_specs; i++)
        if (tiny_specs[i].arch == ARCH_FLOWHN) { spec = &tiny_specs[i]; break; }
    Config c = tiny_config(spec);
    Model ref, rk[8];
    CHECK(model_create(&ref, &c, &cpu_ops) == 0 && model_init_params(&ref, 7) == 0, "%s", fh_last_error());
    size_t n = ref.layout.total;
    AdamWConfig cfg;
    adamw_defaults(&cfg);
    cfg.lr = 1e-2; cfg.grad_clip = clip; cfg.warmup_steps = 1; cfg.total_steps = 10;
    Optimizer oref, ork[8];
    CHECK(optimizer_create(&oref, &ref, &cfg) == 0, "%s", fh_last_error());
    for (int r = 0; r < W; r++) {
        CHECK(model_create(&rk[r], &c, &cpu_ops) == 0 && model_init_params(&rk[r], 7) == 0, "%s", fh_last_error());
        CHECK(optimizer_create_shard(&ork[r], &rk[r], &cfg, NULL, r, W) == 0, "%s", fh_last_error());
    }
    real *g = malloc(sizeof(real) * n), *gathered = malloc(sizeof(real) * n);
    uint64_t s = 12345;
    int clipped = 0;
    for (int step = 0; step < 4; step++) {
        for (size_t i = 0; i < n; i++) {   /* a deterministic gradient, large enough that clip 1 clips */
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            g[i] = (real)((double)(s >> 11) / 9007199254740992.0 - 0.5) * (real)(step + 1);
        }
        memcpy(ref.grads, g, sizeof(real) * n);
        double gn_ref, ss = 0;
        CHECK(optimizer_step(&oref, &ref, 0.5, &gn_ref) == 0, "%s", fh_last_error());
        clipped |= clip > 0 && gn_ref > clip;
        for (int r = 0; r < W; r++) {
            for (size_t i = 0; i < n; i++) rk[r].grads[i] = (i >= ork[r].lo && i < ork[r].hi) ? g[i] : (real)1e30;
            ss += optimizer_local_sumsq(&ork[r], &rk[r]);
        }
        for (int r = 0; r < W; r++) {
            double gn;
            CHECK(optimizer_apply(&ork[r], &rk[r], ss, 0.5, &gn) == 0, "%s", fh_last_error());
            CHECK(fabs(gn - gn_ref) <= 1e-12 * gn_ref, "W %d step %d: norm %.17g vs %.17g", W, step, gn, gn_ref);
        }
        for (int r = 0; r < W; r++)   /* the all-gather */
            memcpy(gathered + ork[r].lo, rk[r].params + ork[r].lo, sizeof(real) * (ork[r].hi - ork[r].lo));
        for (int r = 0; r < W; r++) memcpy(rk[r].params, gathered, sizeof(real) * n);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) diff += memcmp(&gathered[i], &ref.params[i], sizeof(real)) != 0;
        CHECK(diff == 0, "W %d clip %g step %d: %zu of %zu parameters differ from the single-process AdamW", W, clip,
              step, diff, n);
    }
    size_t mdiff = 0;
    for (int r = 0; r < W; r++)
        for (size_t i = ork[r].lo; i < ork[r].hi; i++)
            mdiff += memcmp(&ork[r].m[i - ork[r].lo], &oref.m[i], sizeof(real)) != 0 ||
                     memcmp(&ork[r].v[i - ork[r].lo], &oref.v[i], sizeof(real)) != 0;
    CHECK(mdiff == 0, "W %d: %zu moments differ", W, mdiff);
    CHECK(clip == 0 || clipped, "clip %g was exercised", clip);
    free(g); free(gathered);
    optimizer_free(&oref, &ref);
    model_free(&ref);
    for (int r = 0; r < W; r++) { optimizer_free(&ork[r], &rk[r]); model_free(&rk[r]); }
}


/* ---- gradient buckets (src/dist/bucket.h) ---- */

/* Every property the overlapped reduction relies on, for one plan: the
 * buckets tile [0, total) from the top down with frontiers as low ends and
 * close as soon as they reach the target size; the pieces tile each bucket,
 * each lies in its root's ZeRO-1 shard, and each rank's pieces together are
 * exactly its shard; then W simulated ranks reduced piece by piece hold
 * exactly what the reduce-scatter gives. */
static void check_plan(const size_t *f, int nf, size_t total, int W, size_t target) {
    BucketPlan p;
    CHECK(bucket_plan_build(&p, f, nf, total, W, target) == 0, "%s", fh_last_error());
    size_t hi = total;
    for (int b = 0; b < p.n_buckets; b++) {
        const Bucket *k = &p.buckets[b];
        CHECK(k->hi == hi && k->lo < k->hi, "total %zu W %d: bucket %d is [%zu, %zu), expected to end at %zu", total, W,
              b, k->lo, k->hi, hi);
        int is_frontier = 0, minimal = 1;
        for (int i = 0; i < nf; i++) {
            is_frontier |= f[i] == k->lo;
            /* no frontier strictly inside would already have closed the bucket */
            if (f[i] > k->lo && f[i] < k->hi && k->hi - f[i] >= target) minimal = 0;
        }
        CHECK(is_frontier, "bucket %d starts at %zu, not a frontier", b, k->lo);
        CHECK(minimal, "bucket %d [%zu, %zu) could have closed earlier (target %zu)", b, k->lo, k->hi, target);
        CHECK(k->lo == 0 || k->hi - k->lo >= target, "bucket %d smaller than the target", b);
        size_t at = k->lo;
        for (int j = 0; j < k->n; j++) {
            const DistPiece *q = &p.pieces[k->first + j];
            size_t lo, sh;
            shard_range(total, W, q->root, &lo, &sh);
            CHECK(q->offset == at && q->count > 0, "bucket %d piece %d at %zu+%zu, expected at %zu", b, j, q->offset,
                  q->count, at);
            CHECK(q->root >= 0 && q->root < W && q->offset >= lo && q->offset + q->count <= sh,
                  "piece [%zu, %zu) outside rank %d's shard [%zu, %zu)", q->offset, q->offset + q->count, q->root, lo, sh);
            at += q->count;
        }
        CHECK(at == k->hi, "bucket %d: its pieces end at %zu, not %zu", b, at, k->hi);
        hi = k->lo;
    }
    CHECK(hi == 0, "total %zu W %d: the buckets stop at %zu", total, W, hi);
    CHECK(p.n_buckets == 0 || p.buckets[0].first == 0, "first piece");
    /* simulated ranks: rank r's gradient element i is a distinct value; the pieces summed onto their roots */
    real *g = malloc(sizeof(real) * (total ? total : 1) * W), *want = malloc(sizeof(real) * (total ? total : 1));
    for (int r = 0; r < W; r++)
        for (size_t i = 0; i < total; i++) g[(size_t)r * total + i] = (real)((i * 7 + r * 13) % 101) * (real)0.37;
    for (size_t i = 0; i < total; i++) {   /* the reduce-scatter's sums, in rank order */
        real s = 0;
        for (int r = 0; r < W; r++) s += g[(size_t)r * total + i];
        want[i] = s;
    }
    for (int j = 0; j < p.n_pieces; j++) {
        const DistPiece *q = &p.pieces[j];
        for (size_t i = q->offset; i < q->offset + q->count; i++) {
            real s = 0;
            for (int r = 0; r < W; r++) s += g[(size_t)r * total + i];
            g[(size_t)q->root * total + i] = s;
        }
    }
    size_t bad = 0;
    for (int r = 0; r < W; r++) {
        size_t lo, sh;
        shard_range(total, W, r, &lo, &sh);
        for (size_t i = lo; i < sh; i++) bad += memcmp(&g[(size_t)r * total + i], &want[i], sizeof(real)) != 0;
    }
    CHECK(bad == 0, "total %zu W %d target %zu: %zu owned sums differ from the reduce-scatter's", total, W, target, bad);
    free(g); free(want);
    bucket_plan_free(&p);
}

static void test_bucket_plan(void) {
    /* hand-made: head [90, 100), layers at 60, 30, embedding [0, 10) */
    size_t f1[] = {90, 60, 30, 10, 0};
    BucketPlan p;
    CHECK(bucket_plan_build(&p, f1, 5, 100, 2, 25) == 0, "%s", fh_last_error());
    CHECK(p.n_buckets == 3, "%d buckets", p.n_buckets);
    if (p.n_buckets == 3) {
        CHECK(p.buckets[0].lo == 60 && p.buckets[0].hi == 100, "[%zu, %zu)", p.buckets[0].lo, p.buckets[0].hi);
        CHECK(p.buckets[1].lo == 30 && p.buckets[1].hi == 60, "[%zu, %zu)", p.buckets[1].lo, p.buckets[1].hi);
        CHECK(p.buckets[2].lo == 0 && p.buckets[2].hi == 30, "[%zu, %zu)", p.buckets[2].lo, p.buckets[2].hi);
        /* shards [0, 50) and [50, 100): [60, 100) is rank 1's, [30, 60) straddles the boundary, [0, 30) is rank 0's */
        const DistPiece *q = p.pieces;
        CHECK(p.n_pieces == 4 && p.buckets[0].n == 1 && q[0].offset == 60 && q[0].count == 40 && q[0].root == 1,
              "bucket 0: %d pieces, first %zu+%zu root %d", p.buckets[0].n, q[0].offset, q[0].count, q[0].root);
        CHECK(p.n_pieces == 4 && p.buckets[1].n == 2 && q[1].offset == 30 && q[1].count == 20 && q[1].root == 0 &&
              q[2].offset == 50 && q[2].count == 10 && q[2].root == 1, "bucket 1 is not cut at 50");
        CHECK(p.n_pieces == 4 && p.buckets[2].n == 1 && q[3].offset == 0 && q[3].count == 30 && q[3].root == 0, "bucket 2");
    }
    bucket_plan_free(&p);
    check_plan(f1, 5, 100, 2, 25);
    size_t bad_order[] = {30, 60, 0}, no_zero[] = {60, 30};
    CHECK(bucket_plan_build(&p, bad_order, 3, 100, 2, 10) != 0, "increasing frontiers accepted");
    CHECK(bucket_plan_build(&p, no_zero, 2, 100, 2, 10) != 0, "frontiers not ending at 0 accepted");
    /* random layouts, worlds and targets, including targets of 1 (a bucket per block) and over everything */
    uint64_t s = 99;
    for (int trial = 0; trial < 300; trial++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int nf = 1 + (int)(s >> 60), W = 1 + (int)((s >> 40) % 9);
        size_t f[20], total = 1 + (s >> 20) % 500;
        f[nf - 1] = 0;
        for (int i = nf - 2; i >= 0; i--) {   /* decreasing, some equal */
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            f[i] = f[i + 1] + (s >> 33) % (total / nf + 2);
            if (f[i] > total) f[i] = total;
        }
        size_t targets[] = {1, 7, 40, 1000};
        check_plan(f, nf, total, W, targets[trial % 4]);
    }
}

/* A Dist of W ranks whose reduce_async records, for each bucket, the
 * gradients it was handed at that moment (and whose wait_async counts). */
typedef struct {
    real *snap;        /* [total]: each element as it was when its bucket was launched */
    int launched, waits, bad_root;
    size_t covered;
} FakeDist;
static FakeDist fake;
static int fake_reduce_async(Dist *d, real *buf, const DistPiece *p, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        if (p[i].root < 0 || p[i].root >= d->world) fake.bad_root++;
        memcpy(fake.snap + p[i].offset, buf + p[i].offset, sizeof(real) * p[i].count);
        fake.covered += p[i].count;
    }
    fake.launched++;
    return 0;
}
static int fake_wait_async(Dist *d, const char *what) { fake.waits++; return 0; }

/* The backward hands every bucket over while it runs, and only once its
 * gradients are final: what each bucket held when it was launched equals the
 * finished gradient bit for bit. On every architecture (tied head: SHM), after
 * an earlier micro-batch without the hook (accumulation), with W 3 and a
 * bucket target of one real (a bucket per block, the finest cut). */
static void test_backward_hands_over_final_buckets(void) {
    for (int si = 0; si < n_tiny_specs; si++) {
        Config c = tiny_config(&tiny_specs[si]);
        Model m;
        CHECK(model_create(&m, &c, &cpu_ops) == 0 && model_init_params(&m, 3) == 0, "%s", fh_last_error());
        size_t n = m.layout.total;
        Dist d;
        memset(&d, 0, sizeof d);
        d.world = 3;
        d.reduce_async = fake_reduce_async;
        d.wait_async = fake_wait_async;
        for (int target = 0; target < 2; target++) {
            GradReducer g;
            CHECK(grad_reducer_create(&g, &m, &d, target ? n / 3 : 1) == 0, "%s", fh_last_error());
            CHECK(g.plan.n_buckets == (target ? g.plan.n_buckets : c.num_layers + 2), "%s: %d buckets for a target of 1",
                  tiny_specs[si].name, g.plan.n_buckets);
            memset(&fake, 0, sizeof fake);
            fake.snap = calloc(n, sizeof(real));
            int B = 2, T = 12, tok[24], tgt[24];
            model_zero_grad(&m);
            grad_reducer_begin(&g, m.grads);
            for (int a = 0; a < 2; a++) {   /* two micro-batches, the hook on the last */
                tiny_batch(tok, tgt, B, T, c.vocab_size, 11 + a);
                if (a == 1) { m.grads_ready = grad_reducer_ready; m.grads_ready_ctx = &g; }
                CHECK(model_forward_backward(&m, tok, tgt, B, T) == 0, "%s", fh_last_error());
                m.grads_ready = NULL;
                if (a == 0) CHECK(fake.launched == 0, "a bucket went out during an earlier micro-batch");
            }
            CHECK(fake.launched == g.plan.n_buckets, "%s: %d of %d buckets launched during the backward",
                  tiny_specs[si].name, fake.launched, g.plan.n_buckets);
            CHECK(grad_reducer_finish(&g) == 0 && fake.waits == 1 && fake.launched == g.plan.n_buckets,
                  "finish: %d waits, %d launched", fake.waits, fake.launched);
            CHECK(fake.covered == n && fake.bad_root == 0, "%zu of %zu reals handed over, %d bad roots", fake.covered, n,
                  fake.bad_root);
            size_t diff = 0, first = n;
            for (size_t i = 0; i < n; i++)
                if (memcmp(&fake.snap[i], &m.grads[i], sizeof(real))) { diff++; if (first == n) first = i; }
            CHECK(diff == 0, "%s: %zu gradients changed after their bucket was launched (first at %zu)",
                  tiny_specs[si].name, diff, first);
            /* a rank whose backward did not run (a non-finite loss) still queues every bucket, in order */
            free(fake.snap);
            memset(&fake, 0, sizeof fake);
            fake.snap = calloc(n, sizeof(real));
            grad_reducer_begin(&g, m.grads);
            CHECK(grad_reducer_finish(&g) == 0 && fake.launched == g.plan.n_buckets && fake.covered == n,
                  "finish without a backward launched %d of %d", fake.launched, g.plan.n_buckets);
            free(fake.snap);
            grad_reducer_free(&g);
        }
        model_free(&m);
    }
}

static void test_grad_frontiers(void) {
    for (int si = 0; si < n_tiny_specs; si++) {
        Config c = tiny_config(&tiny_specs[si]);
        Model m;
        CHECK(model_create(&m, &c, &cpu_ops) == 0, "%s", fh_last_error());
        size_t f[64];
        int nf = model_grad_frontiers(&m, f, 64);
        CHECK(nf == c.num_layers + 2 && f[nf - 1] == 0 && f[0] == m.layout.norm_f, "%s: %d frontiers",
              tiny_specs[si].name, nf);
        /* each layer's tensors lie in [begin, next begin): the backward of layer l writes nothing else */
        for (int l = 0; l < c.num_layers; l++) {
            size_t lo = m.layout.layers[l].begin, hi = l + 1 < c.num_layers ? m.layout.layers[l + 1].begin : m.layout.norm_f;
            int inside = 0;
            for (int i = 0; i < m.layout.n; i++) {
                char pre[32];
                snprintf(pre, sizeof pre, "layers.%d.", l);
                if (strncmp(m.layout.entries[i].name, pre, strlen(pre))) continue;
                inside++;
                CHECK(m.layout.entries[i].offset >= lo && m.layout.entries[i].offset + m.layout.entries[i].numel <= hi,
                      "%s outside layer %d's range", m.layout.entries[i].name, l);
            }
            CHECK(inside > 0, "layer %d has no tensors", l);
        }
        model_free(&m);
    }
}

static void test_sharded_adamw_w2(void) { sharded_vs_whole(2, 1.0); }
static void test_sharded_adamw_w3(void) { sharded_vs_whole(3, 1.0); }
static void test_sharded_adamw_w5_noclip(void) { sharded_vs_whole(5, 0); }
static void test_sharded_adamw_w7(void) { sharded_vs_whole(7, 1.0); }

int main(void) {
    RUN(test_env_sources);
    RUN(test_env_errors);
    RUN(test_default_rendezvous);
    RUN(test_world_of_one);
    RUN(test_file_rendezvous);
    RUN(test_tcp_rendezvous);
    RUN(test_rendezvous_timeouts);
    RUN(test_shard_ranges);
    RUN(test_optimizer_runs);
    RUN(test_sharded_adamw_w2);
    RUN(test_sharded_adamw_w3);
    RUN(test_sharded_adamw_w5_noclip);
    RUN(test_sharded_adamw_w7);
    RUN(test_bucket_plan);
    RUN(test_grad_frontiers);
    RUN(test_backward_hands_over_final_buckets);
    TEST_SUMMARY();
}
