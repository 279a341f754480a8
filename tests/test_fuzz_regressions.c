/* test_fuzz_regressions.c - replays every file in fuzz/corpus/<target>/ and
 * fuzz/regressions/<target>/ through the fuzz targets' own entry points
 * (fuzz/fuzz_*.c, included with FUZZ_NO_MAIN), in the normal build, so the
 * inputs that once crashed a parser keep being checked without clang. A
 * crash or sanitizer report (make asan) kills the binary, which counts as a
 * failure; a target's invariant checks abort the same way. One case per
 * target; a case also fails when its seed corpus is missing. Run from the
 * repository root (make test does). */
#include <dirent.h>
#include <sys/stat.h>

#define FUZZ_NO_MAIN
#include "../fuzz/fuzz_config.c"
#include "../fuzz/fuzz_tokenizer_json.c"
#include "../fuzz/fuzz_shard.c"
#include "../fuzz/fuzz_checkpoint.c"
#include "../fuzz/fuzz_safetensors.c"
#include "../fuzz/fuzz_eval_jsonl.c"
#include "../fuzz/fuzz_cli.c"

#include "test.h"

typedef int (*FuzzFn)(const uint8_t *, size_t);

/* Feeds each regular file of dir to fn; returns how many, or -1 if dir cannot be opened. */
static int replay_dir(const char *dir, FuzzFn fn) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        size_t got = f && buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
        if (f) fclose(f);
        CHECK(got == (size_t)st.st_size, "cannot read %s", path);
        fn(buf, got);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *target, FuzzFn fn) {
    char dir[256];
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", target);
    int seeds = replay_dir(dir, fn);
    CHECK(seeds >= 3, "%s: %d seed inputs (expected a few; run from the repository root)", dir, seeds);
    snprintf(dir, sizeof dir, "fuzz/regressions/%s", target);
    int regressions = replay_dir(dir, fn);   /* the directory exists only once something was found */
    printf("    %s: %d seeds, %d regression inputs replayed\n", target, seeds, regressions > 0 ? regressions : 0);
}

#define TARGET(name) static void name(void) { replay(#name, fuzz_##name##_one); }
TARGET(config)
TARGET(tokenizer_json)
TARGET(shard)
TARGET(checkpoint)
TARGET(safetensors)
TARGET(eval_jsonl)
TARGET(cli)

int main(void) {
    RUN(config);
    RUN(tokenizer_json);
    RUN(shard);
    RUN(checkpoint);
    RUN(safetensors);
    RUN(eval_jsonl);
    RUN(cli);
    TEST_SUMMARY();
}
