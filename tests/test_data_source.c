/* test_data_source.c - token shards as the trainer reads them: llm.c's byte
 * layout (written here by hand), both token widths, batch windows, wrap-around,
 * rank slicing, exact position restore, and each bad-file case. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/train/data_source.h"
#include "helpers/tmpdir.h"
#include "test.h"

static char dir[256];

/* writes an llm.c shard by hand: 256 int32 header, then tokens (2 or 4 bytes) */
static void write_shard(const char *name, int magic, int version, long n_header, const uint32_t *tok, long n, int width) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    int32_t h[256] = {0};
    h[0] = magic; h[1] = version; h[2] = (int32_t)n_header;
    fwrite(h, sizeof h, 1, f);
    for (long i = 0; i < n; i++) {
        if (width == 2) { uint16_t v = (uint16_t)tok[i]; fwrite(&v, 2, 1, f); }
        else fwrite(&tok[i], 4, 1, f);
    }
    fclose(f);
}

static void reads_llmc_layout_and_batches(void) {
    uint32_t t[100];
    for (int i = 0; i < 100; i++) t[i] = (uint32_t)(i * 7 % 50);
    write_shard("train_000000.bin", 20240520, 1, 60, t, 60, 2);
    write_shard("train_000001.bin", 20240520, 2, 40, t + 60, 40, 4);
    ShardSource s;
    CHECK(shard_source_open(&s, dir, "train", 50, 0, 1) == 0, "%s", fh_last_error());
    CHECK(shard_source_tokens(&s) == 100, "100 tokens across both shards");
    BatchSource b = shard_batch_source(&s);
    int tok[2 * 8], tgt[2 * 8];
    CHECK(b.next(b.ctx, tok, tgt, 2, 8) == 0, "%s", fh_last_error());
    CHECK(tok[0] == (int)t[0] && tgt[0] == (int)t[1] && tok[8] == (int)t[8] && tgt[15] == (int)t[16], "windows");
    char *st = b.state(b.ctx);
    int want[16];
    b.next(b.ctx, want, tgt, 2, 8);
    CHECK(b.restore(b.ctx, st) == 0, "%s", fh_last_error());
    b.next(b.ctx, tok, tgt, 2, 8);
    CHECK(memcmp(tok, want, sizeof want) == 0, "restored position gives the same batch");
    free(st);
    /* a fresh source restored before its first batch (as on resume) continues identically */
    st = b.state(b.ctx);
    b.next(b.ctx, want, tgt, 2, 8);
    ShardSource s2;
    shard_source_open(&s2, dir, "train", 50, 0, 1);
    BatchSource b2 = shard_batch_source(&s2);
    CHECK(b2.restore(b2.ctx, st) == 0, "%s", fh_last_error());
    b2.next(b2.ctx, tok, tgt, 2, 8);
    CHECK(memcmp(tok, want, sizeof want) == 0, "restore into a fresh source gives the same batch");
    free(st);
    shard_source_close(&s2);
    /* wrap-around: keeps producing full batches */
    for (int i = 0; i < 20; i++) CHECK(b.next(b.ctx, tok, tgt, 2, 8) == 0, "batch %d", i);
    /* two ranks read disjoint windows of the same step */
    ShardSource r0, r1;
    shard_source_open(&r0, dir, "train", 50, 0, 2);
    shard_source_open(&r1, dir, "train", 50, 1, 2);
    BatchSource b0 = shard_batch_source(&r0), b1 = shard_batch_source(&r1);
    int t0[16], t1[16];
    b0.next(b0.ctx, t0, tgt, 2, 8);
    b1.next(b1.ctx, t1, tgt, 2, 8);
    CHECK(t0[0] == (int)t[0] && t1[0] == (int)t[16], "rank 1 starts after rank 0's batch");
    /* a batch larger than the data is an error, not a crash */
    CHECK(b.next(b.ctx, tok, tgt, 8, 20) != 0 && strstr(fh_last_error(), "fewer than one batch"), "%s", fh_last_error());
    shard_source_close(&s); shard_source_close(&r0); shard_source_close(&r1);
}

static void bad_files(void) {
    uint32_t t[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 60};
    ShardSource s;
    write_shard("a_000000.bin", 12345, 1, 10, t, 10, 2);
    CHECK(shard_source_open(&s, dir, "a", 64, 0, 1) != 0 && strstr(fh_last_error(), "magic"), "%s", fh_last_error());
    write_shard("b_000000.bin", 20240520, 1, 12, t, 10, 2);
    CHECK(shard_source_open(&s, dir, "b", 64, 0, 1) != 0 && strstr(fh_last_error(), "truncated"), "%s", fh_last_error());
    write_shard("c_000000.bin", 20240520, 7, 10, t, 10, 2);
    CHECK(shard_source_open(&s, dir, "c", 64, 0, 1) != 0 && strstr(fh_last_error(), "version"), "%s", fh_last_error());
    write_shard("d_000000.bin", 20240520, 1, 10, t, 10, 2);
    CHECK(shard_source_open(&s, dir, "d", 50, 0, 1) != 0 && strstr(fh_last_error(), "outside the vocabulary"),
          "%s", fh_last_error());
    CHECK(strstr(fh_last_error(), "d_000000.bin") != NULL, "names the file");
    CHECK(shard_source_open(&s, dir, "none", 50, 0, 1) != 0 && strstr(fh_last_error(), "flowhn prepare"), "%s", fh_last_error());
}

static void unigram(void) {
    uint32_t t[8] = {0, 0, 0, 1, 0, 0, 0, 1};
    write_shard("u_000000.bin", 20240520, 1, 8, t, 8, 2);
    write_shard("v_000000.bin", 20240520, 1, 8, t, 8, 2);
    ShardSource a, b;
    shard_source_open(&a, dir, "u", 4, 0, 1);
    shard_source_open(&b, dir, "v", 4, 0, 1);
    /* vocabulary 4, add-one: p0 = (6+1)/(8+4), p1 = (2+1)/(8+4) */
    double want = -(6 * log(7.0 / 12) + 2 * log(3.0 / 12)) / 8;
    CHECK(fabs(shard_unigram_baseline(&a, &b) - want) < 1e-12, "%.6f vs %.6f", shard_unigram_baseline(&a, &b), want);
    shard_source_close(&a); shard_source_close(&b);
}

int main(void) {
    test_dir_make(dir, sizeof dir, "shards");
    RUN(reads_llmc_layout_and_batches);
    RUN(bad_files);
    RUN(unigram);
    test_dir_remove(dir);
    TEST_SUMMARY();
}
