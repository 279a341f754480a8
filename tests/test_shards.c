/* test_shards.c - llm.c token shards and the dataloader: both token widths
 * round-trip, a shard laid out byte by byte here (llm.c's format) loads
 * unchanged, every bad file is an error naming it, batches equal the token
 * windows computed here, ranks read disjoint slices, and a saved position
 * resumes the identical batch sequence (with and without shuffling). */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/data/dataloader.h"
#include "../src/data/shards.h"
#include "test.h"

static char dir[64];

static const char *path_of(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void write_bytes(const char *path, const unsigned char *b, long n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, (size_t)n, f);
    fclose(f);
}

static int error_has(const char *s) { return strstr(fh_last_error(), s) != NULL; }

/* files in dir whose name starts with prefix */
static int count_files(const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

/* An llm.c shard built byte by byte: 256 little-endian int32 (magic,
 * version, count, zeros), then `width`-byte little-endian tokens. */
static long llmc_bytes(unsigned char *b, int32_t magic, int32_t version, int32_t count, const uint32_t *tok, long n, int width) {
    memset(b, 0, 1024);
    int32_t h[3] = {magic, version, count};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 4; k++) b[4 * i + k] = (unsigned char)((uint32_t)h[i] >> (8 * k));
    for (long i = 0; i < n; i++)
        for (int k = 0; k < width; k++) b[1024 + i * width + k] = (unsigned char)(tok[i] >> (8 * k));
    return 1024 + n * width;
}

static void round_trip(int vocab, int expect_version) {
    enum { N = 1000 };
    int tok[N], back[N];
    for (int i = 0; i < N; i++) tok[i] = (int)((i * 2654435761u) % (unsigned)vocab);
    tok[0] = 0;
    tok[1] = vocab - 1;
    const char *p = path_of("rt.bin");
    CHECK(shard_write(p, tok, N, vocab) == 0, "%s", fh_last_error());
    int width = expect_version == 1 ? 2 : 4;
    CHECK(file_size(p) == 1024 + (long)width * N, "size %ld", file_size(p));
    /* the raw bytes, read here without the library */
    unsigned char b[1024 + 4 * N];
    FILE *f = fopen(p, "rb");
    CHECK(f && fread(b, 1, 1024 + (size_t)width * N, f) == 1024 + (size_t)width * N, "raw read");
    if (f) fclose(f);
    uint32_t magic = b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
    CHECK(magic == 20240520 && b[4] == expect_version && b[8] == (N & 255) && b[9] == (N >> 8), "header %u %d", magic, b[4]);
    uint32_t last = b[1024 + width] | b[1024 + width + 1] << 8 | (width == 4 ? b[1024 + width + 2] << 16 : 0);
    CHECK(last == (uint32_t)(vocab - 1), "token 1 bytes give %u, want %d", last, vocab - 1);
    Shard s;
    CHECK(shard_open(&s, p, vocab) == 0, "%s", fh_last_error());
    CHECK(s.version == expect_version && s.n_tokens == N, "version %d count %ld", s.version, s.n_tokens);
    CHECK(shard_read(&s, 0, N, back) == 0, "%s", fh_last_error());
    int bad = 0;
    for (int i = 0; i < N; i++) bad += back[i] != tok[i];
    CHECK(bad == 0, "%d tokens differ", bad);
    CHECK(shard_read(&s, 777, 5, back) == 0 && !memcmp(back, tok + 777, 5 * sizeof(int)), "read at an offset");
    CHECK(shard_read(&s, 998, 3, back) != 0 && error_has("rt.bin"), "read past the end: %s", fh_last_error());
    shard_close(&s);
    CHECK(count_files("rt.bin") == 1, "no temp file left beside the shard");
}

static void round_trip_uint16(void) { round_trip(50257, 1); }
static void round_trip_uint16_full_range(void) { round_trip(65536, 1); }
static void round_trip_uint32(void) { round_trip(100277, 2); }

static void llmc_layout_loads(void) {
    uint32_t tok[6] = {50256, 15496, 11, 995, 0, 13};  /* <|endoftext|>Hello, world... in GPT-2 ids */
    unsigned char b[1024 + 12];
    long n = llmc_bytes(b, 20240520, 1, 6, tok, 6, 2);
    CHECK(b[0] == 0x88 && b[1] == 0xD8 && b[2] == 0x34 && b[3] == 0x01, "magic bytes are 20240520 little-endian");
    write_bytes(path_of("llmc.bin"), b, n);
    Shard s;
    int back[6];
    CHECK(shard_open(&s, path_of("llmc.bin"), 50257) == 0, "%s", fh_last_error());
    CHECK(s.version == 1 && s.n_tokens == 6, "version %d count %ld", s.version, s.n_tokens);
    CHECK(shard_read(&s, 0, 6, back) == 0, "%s", fh_last_error());
    for (int i = 0; i < 6; i++) CHECK(back[i] == (int)tok[i], "token %d: %d vs %u", i, back[i], tok[i]);
    shard_close(&s);
    /* and our writer produces the same bytes for the same tokens */
    int itok[6];
    for (int i = 0; i < 6; i++) itok[i] = (int)tok[i];
    CHECK(shard_write(path_of("ours.bin"), itok, 6, 50257) == 0, "%s", fh_last_error());
    unsigned char o[1024 + 12 + 1];
    FILE *f = fopen(path_of("ours.bin"), "rb");
    size_t got = f ? fread(o, 1, sizeof o, f) : 0;
    if (f) fclose(f);
    CHECK(got == (size_t)n && !memcmp(o, b, (size_t)n), "writer output equals llm.c's layout byte for byte");
}

static void bad_files_are_named(void) {
    uint32_t tok[10] = {1, 2, 3, 4, 5, 6, 7, 999, 8, 1000};
    unsigned char b[1024 + 40 + 4];
    Shard s;
    long n = llmc_bytes(b, 20240520, 1, 10, tok, 10, 2);
    write_bytes(path_of("trunc.bin"), b, n - 1);
    CHECK(shard_open(&s, path_of("trunc.bin"), 0) != 0 && error_has("trunc.bin") && error_has("truncated"), "%s", fh_last_error());
    b[n] = 0;
    write_bytes(path_of("long.bin"), b, n + 1);
    CHECK(shard_open(&s, path_of("long.bin"), 0) != 0 && error_has("long.bin") && error_has("extra bytes"), "%s", fh_last_error());
    write_bytes(path_of("short.bin"), b, 100);
    CHECK(shard_open(&s, path_of("short.bin"), 0) != 0 && error_has("short.bin") && error_has("header"), "%s", fh_last_error());
    n = llmc_bytes(b, 20240521, 1, 10, tok, 10, 2);
    write_bytes(path_of("magic.bin"), b, n);
    CHECK(shard_open(&s, path_of("magic.bin"), 0) != 0 && error_has("magic.bin") && error_has("20240521"), "%s", fh_last_error());
    n = llmc_bytes(b, 20240520, 3, 10, tok, 10, 2);
    write_bytes(path_of("version.bin"), b, n);
    CHECK(shard_open(&s, path_of("version.bin"), 0) != 0 && error_has("version.bin") && error_has("version 3"), "%s", fh_last_error());
    /* ids: 999 at offset 7 is the first one >= 999 */
    n = llmc_bytes(b, 20240520, 1, 10, tok, 10, 2);
    write_bytes(path_of("ids.bin"), b, n);
    CHECK(shard_open(&s, path_of("ids.bin"), 999) != 0 && error_has("ids.bin") && error_has("offset 7") && error_has("999"),
          "%s", fh_last_error());
    CHECK(shard_open(&s, path_of("ids.bin"), 1001) == 0, "all ids < 1001: %s", fh_last_error());
    shard_close(&s);
    CHECK(shard_open(&s, path_of("missing.bin"), 0) != 0 && error_has("missing.bin"), "%s", fh_last_error());
    /* the writer refuses bad ids and leaves nothing behind */
    int itok[3] = {1, 70000, 2};
    CHECK(shard_write(path_of("refused.bin"), itok, 3, 50257) != 0 && error_has("refused.bin") && error_has("70000"), "%s", fh_last_error());
    CHECK(count_files("refused.bin") == 0, "no file or temp file for a refused shard");
}

/* shards "dl_000000.bin" ..., shard k holding sizes[k] tokens valued 1000*k + i */
static void write_seq_shards(const char *prefix, const long *sizes, int n_shards, int vocab) {
    for (int k = 0; k < n_shards; k++) {
        int tok[4096];
        for (long i = 0; i < sizes[k]; i++) tok[i] = 1000 * k + (int)i;
        char name[64];
        snprintf(name, sizeof name, "%s_%06d.bin", prefix, k);
        CHECK(shard_write(path_of(name), tok, sizes[k], vocab) == 0, "%s", fh_last_error());
    }
}

static DataLoaderConfig config(int B, int T, int rank, int world, int shuffle, uint64_t seed) {
    DataLoaderConfig c = {B, T, rank, world, 100000, shuffle, seed};
    return c;
}

static void batches_are_token_windows(void) {
    long sizes[2] = {30, 21};
    write_seq_shards("dl", sizes, 2, 100000);
    DataLoader d;
    DataLoaderConfig c = config(2, 4, 0, 1, 0, 0);
    char pat[128];
    snprintf(pat, sizeof pat, "%s/dl_*.bin", dir);
    CHECK(dataloader_open(&d, pat, &c) == 0, "%s", fh_last_error());
    /* span 8: shard 0 has (30-1)/8 = 3 batches, shard 1 (21-1)/8 = 2 */
    CHECK(dataloader_batches_per_epoch(&d) == 5, "%ld batches per epoch", dataloader_batches_per_epoch(&d));
    int in[8], tg[8];
    int starts[12][2] = {{0, 0}, {0, 8}, {0, 16}, {1, 0}, {1, 8}, {0, 0}, {0, 8}, {0, 16}, {1, 0}, {1, 8}, {0, 0}, {0, 8}};
    for (int s = 0; s < 12; s++) {
        CHECK(dataloader_next(&d, in, tg) == 0, "%s", fh_last_error());
        int base = 1000 * starts[s][0] + starts[s][1], bad = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 4; t++) {
                bad += in[b * 4 + t] != base + b * 4 + t;      /* row b: the window of T+1 tokens at b*T */
                bad += tg[b * 4 + t] != base + b * 4 + t + 1;
            }
        CHECK(bad == 0, "batch %d: inputs start %d (want %d), %d wrong", s, in[0], base, bad);
    }
    CHECK(dataloader_tell(&d).epoch == 2 && dataloader_tell(&d).shard == 0 && dataloader_tell(&d).batch == 2, "position after 12 batches");
    dataloader_close(&d);
}

/* per rank, the set of token values seen as inputs in one epoch */
static void ranks_are_disjoint(int shuffle) {
    long sizes[2] = {100, 77};
    write_seq_shards("rk", sizes, 2, 100000);
    char pat[128];
    snprintf(pat, sizeof pat, "%s/rk_*.bin", dir);
    enum { W = 3, B = 2, T = 4 };
    static int seen[2000];
    memset(seen, 0, sizeof seen);
    long total = 0;
    for (int r = 0; r < W; r++) {
        DataLoader d;
        DataLoaderConfig c = config(B, T, r, W, shuffle, 7);
        CHECK(dataloader_open(&d, pat, &c) == 0, "%s", fh_last_error());
        long nb = dataloader_batches_per_epoch(&d);
        CHECK(nb == 99 / 24 + 76 / 24, "rank %d: %ld batches", r, nb);
        int in[B * T], tg[B * T];
        for (long s = 0; s < nb; s++) {
            CHECK(dataloader_next(&d, in, tg) == 0, "%s", fh_last_error());
            for (int i = 0; i < B * T; i++) {
                CHECK(seen[in[i]] == 0, "token %d read by rank %d and rank %d", in[i], r, seen[in[i]] - 1);
                seen[in[i]] = r + 1;
                /* rank r's slice of a span starts at r*B*T within it */
                CHECK((in[i] % 1000) % (W * B * T) / (B * T) == r, "token %d in rank %d's batch", in[i], r);
                total++;
            }
        }
        CHECK(dataloader_tell(&d).epoch == 1 && dataloader_tell(&d).batch == 0, "one epoch done");
        dataloader_close(&d);
    }
    /* together the ranks cover every whole span: 4 spans of shard 0, 3 of shard 1 */
    long covered = 0;
    for (int v = 0; v < 96; v++) covered += seen[v] != 0;
    for (int v = 1000; v < 1072; v++) covered += seen[v] != 0;
    CHECK(covered == total && total == 96 + 72, "covered %ld of %ld", covered, total);
}
static void ranks_are_disjoint_in_order(void) { ranks_are_disjoint(0); }
static void ranks_are_disjoint_shuffled(void) { ranks_are_disjoint(1); }

/* run n batches, hashing each batch into seq[] */
static void run_batches(DataLoader *d, int n, uint64_t *seq, int BT) {
    int in[64], tg[64];
    for (int s = 0; s < n; s++) {
        CHECK(dataloader_next(d, in, tg) == 0, "%s", fh_last_error());
        uint64_t h = 1469598103934665603ull;
        for (int i = 0; i < BT; i++) h = (h ^ (uint64_t)in[i]) * 1099511628211ull ^ (uint64_t)tg[i];
        seq[s] = h;
    }
}

static void resume_replays_the_sequence(int shuffle) {
    long sizes[3] = {70, 50, 95};
    write_seq_shards("rs", sizes, 3, 100000);
    char pat[128];
    snprintf(pat, sizeof pat, "%s/rs_*.bin", dir);
    DataLoaderConfig c = config(2, 3, 1, 2, shuffle, 42);
    DataLoader a, b;
    CHECK(dataloader_open(&a, pat, &c) == 0 && dataloader_open(&b, pat, &c) == 0, "%s", fh_last_error());
    uint64_t first[40], rest[40], again[40];
    run_batches(&a, 7, first, 6);
    DataPosition p = dataloader_tell(&a);
    run_batches(&a, 40, rest, 6);
    CHECK(dataloader_seek(&b, p) == 0, "%s", fh_last_error());
    run_batches(&b, 40, again, 6);
    CHECK(!memcmp(rest, again, sizeof rest), "a restored position replays the same 40 batches");
    /* positions that do not exist are refused */
    DataPosition bad = {0, 3, 0}, bad2 = {0, 0, 100};
    CHECK(dataloader_seek(&b, bad) != 0 && error_has("shard 3"), "%s", fh_last_error());
    CHECK(dataloader_seek(&b, bad2) != 0 && error_has("batch 100") && error_has("rs_"), "%s", fh_last_error());
    dataloader_close(&a);
    dataloader_close(&b);
}
static void resume_in_order(void) { resume_replays_the_sequence(0); }
static void resume_shuffled(void) { resume_replays_the_sequence(1); }

/* span 12 (B 3, T 4): shards of 100, 50, 62 tokens have 8, 4, 5 batches */
static void shuffle_permutes_each_epoch(void) {
    long sizes[3] = {100, 50, 62};
    write_seq_shards("sh", sizes, 3, 100000);
    char pat[128];
    snprintf(pat, sizeof pat, "%s/sh_*.bin", dir);
    DataLoaderConfig c = config(3, 4, 0, 1, 1, 5);
    DataLoader d, e;
    CHECK(dataloader_open(&d, pat, &c) == 0, "%s", fh_last_error());
    int in[12], tg[12], first[3][17], same = 0;
    for (int ep = 0; ep < 3; ep++) {
        int hits[3000] = {0};
        for (int s = 0; s < 17; s++) {
            CHECK(dataloader_next(&d, in, tg) == 0, "%s", fh_last_error());
            first[ep][s] = in[0];
            CHECK(in[0] % 1000 % 12 == 0 && in[11] == in[0] + 11 && tg[11] == in[0] + 12, "whole window at %d", in[0]);
            if (in[0] >= 0 && in[0] < 3000) hits[in[0]]++;
        }
        int missing = 0;
        for (int k = 0; k < 8; k++) missing += hits[12 * k] != 1;
        for (int k = 0; k < 4; k++) missing += hits[1000 + 12 * k] != 1;
        for (int k = 0; k < 5; k++) missing += hits[2000 + 12 * k] != 1;
        CHECK(missing == 0, "epoch %d visits each of the 17 batches once (%d missing)", ep, missing);
    }
    for (int s = 0; s < 17; s++) same += first[0][s] == first[1][s];
    CHECK(same < 17, "epochs 0 and 1 have different orders");
    same = 0;
    for (int s = 0; s < 17; s++) same += first[0][s] == 12 * s;
    CHECK(same < 17, "the shuffled order differs from file order");
    /* the same seed gives the same order; another seed another */
    DataLoaderConfig c2 = config(3, 4, 0, 1, 1, 6);
    int diff = 0;
    CHECK(dataloader_open(&e, pat, &c2) == 0, "%s", fh_last_error());
    for (int s = 0; s < 17; s++) { dataloader_next(&e, in, tg); diff += in[0] != first[0][s]; }
    CHECK(diff > 0, "seed 6 differs from seed 5");
    dataloader_close(&e);
    CHECK(dataloader_open(&e, pat, &c) == 0, "%s", fh_last_error());
    diff = 0;
    for (int s = 0; s < 17; s++) { dataloader_next(&e, in, tg); diff += in[0] != first[0][s]; }
    CHECK(diff == 0, "seed 5 again gives the same order (%d differ)", diff);
    dataloader_close(&e);
    dataloader_close(&d);
}

static void dataloader_errors(void) {
    DataLoader d;
    DataLoaderConfig c = config(2, 4, 0, 1, 0, 0);
    char pat[128];
    snprintf(pat, sizeof pat, "%s/nothing_*.bin", dir);
    CHECK(dataloader_open(&d, pat, &c) != 0 && error_has("nothing_*.bin") && error_has("flowhn prepare"), "%s", fh_last_error());
    long sizes[2] = {40, 8};
    write_seq_shards("er", sizes, 2, 100000);
    snprintf(pat, sizeof pat, "%s/er_*.bin", dir);
    CHECK(dataloader_open(&d, pat, &c) != 0 && error_has("er_000001.bin") && error_has("8 tokens"), "%s", fh_last_error());
    c.rank = 1;
    CHECK(dataloader_open(&d, pat, &c) != 0 && error_has("rank 1"), "%s", fh_last_error());
    /* a bad id in the second shard is found when the walk enters it */
    long ok_sizes[2] = {40, 40};
    write_seq_shards("id", ok_sizes, 2, 100000);
    snprintf(pat, sizeof pat, "%s/id_*.bin", dir);
    c = config(2, 4, 0, 1, 0, 0);
    c.vocab_size = 1020;  /* shard 1 holds 1000..1039 */
    CHECK(dataloader_open(&d, pat, &c) == 0, "%s", fh_last_error());
    int in[8], tg[8], rc = 0;
    for (int s = 0; s < 6 && !rc; s++) rc = dataloader_next(&d, in, tg);
    CHECK(rc != 0 && error_has("id_000001.bin") && error_has("offset 20") && error_has("1020"), "%s", fh_last_error());
    dataloader_close(&d);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/flowhn_shards_XXXXXX");
    if (!mkdtemp(dir)) { printf("cannot make a temp dir\nRESULT 0 passed, 1 failed\n"); return 1; }
    RUN(round_trip_uint16);
    RUN(round_trip_uint16_full_range);
    RUN(round_trip_uint32);
    RUN(llmc_layout_loads);
    RUN(bad_files_are_named);
    RUN(batches_are_token_windows);
    RUN(ranks_are_disjoint_in_order);
    RUN(ranks_are_disjoint_shuffled);
    RUN(resume_in_order);
    RUN(resume_shuffled);
    RUN(shuffle_permutes_each_epoch);
    RUN(dataloader_errors);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(path_of(e->d_name));
    if (d) closedir(d);
    rmdir(dir);
    TEST_SUMMARY();
}
