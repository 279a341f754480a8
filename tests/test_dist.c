/* test_dist.c - the CPU-testable parts of data-parallel training: rank
 * discovery from the launchers' environments, the file and TCP rendezvous
 * between forked processes (and their timeouts), the ZeRO-1 shard arithmetic,
 * and ZeRO-1 AdamW over W simulated ranks against the single-process AdamW,
 * bit for bit. (The NCCL collectives themselves need GPUs: see src/dist/dist.h.) */
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
    TEST_SUMMARY();
}
