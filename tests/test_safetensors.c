/* test_safetensors.c - st_write/st_load round trip (every dtype, a scalar, an
 * empty tensor, metadata), the file's byte layout read back by hand, atomic
 * overwrite, and corrupt files refused with messages naming the file and the
 * tensor (never a crash). */
#include <cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/error.h"
#include "../src/data/safetensors.h"
#include "test.h"

static char dir[] = "/tmp/test_safetensors_XXXXXX";

static void path_in_dir(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static int files_in_dir(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static StTensor tensor(const char *name, StDtype dt, int ndim, const int64_t *shape, void *data) {
    StTensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.dtype = dt;
    t.ndim = ndim;
    size_t n = st_dtype_size(dt);
    for (int k = 0; k < ndim; k++) { t.shape[k] = shape[k]; n *= (size_t)shape[k]; }
    t.nbytes = n;
    t.data = data;
    return t;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*len + 1);
    if (b && fread(b, 1, *len, f) != *len) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static void round_trip(void) {
    float f32[6] = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
    double f64[3] = {3.141592653589793, -1e-300, 2.0 / 3.0};
    int32_t i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
    int64_t i64[2] = {INT64_MIN, 1234567890123456789LL};
    uint16_t bf16[3] = {0x3f80, 0xc000, 0x7f80}, f16[2] = {0x3c00, 0xfbff};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    float scalar = 42.0f;
    int64_t s23[] = {2, 3}, s3[] = {3}, s221[] = {2, 2, 1}, s2[] = {2}, s13[] = {1, 3}, s12[] = {1, 2}, s5[] = {5},
            s03[] = {0, 3};
    StTensor in[] = {
        tensor("layers.0.w", ST_F32, 2, s23, f32),   tensor("f64", ST_F64, 1, s3, f64),
        tensor("i32", ST_I32, 3, s221, i32),         tensor("i64", ST_I64, 1, s2, i64),
        tensor("bf16", ST_BF16, 2, s13, bf16),       tensor("f16", ST_F16, 2, s12, f16),
        tensor("u8", ST_U8, 1, s5, u8),              tensor("scalar", ST_F32, 0, NULL, &scalar),
        tensor("empty", ST_F32, 2, s03, NULL),
    };
    int n = (int)(sizeof in / sizeof in[0]);
    char path[128];
    path_in_dir(path, sizeof path, "a.safetensors");
    CHECK(st_write(path, in, n, "{\"format\": \"pt\", \"note\": \"x\"}") == 0, "%s", fh_last_error());
    CHECK(files_in_dir() == 1, "the temp file was left behind (%d files)", files_in_dir());

    /* the layout, read by hand: LE length, 8-aligned JSON header, then the
     * data with no gaps, each tensor aligned for its dtype */
    size_t len = 0;
    unsigned char *raw = read_all(path, &len);
    CHECK(raw != NULL, "read back %s", path);
    if (!raw) return;
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = (hl << 8) | raw[k];
    size_t total = 0;
    for (int i = 0; i < n; i++) total += in[i].nbytes;
    CHECK(hl % 8 == 0 && 8 + hl + total == len, "header length %llu, file %zu, data %zu", (unsigned long long)hl, len, total);
    char *hdr = calloc(1, hl + 1);
    if (hl <= len - 8) memcpy(hdr, raw + 8, hl);
    cJSON *root = cJSON_Parse(hdr);
    CHECK(cJSON_IsObject(root), "header is a JSON object: %s", hdr);
    char covered[64] = {0};
    for (int i = 0; i < n && root; i++) {
        cJSON *e = cJSON_GetObjectItemCaseSensitive(root, in[i].name);
        cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets"), *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        CHECK(cJSON_GetArraySize(off) == 2 && cJSON_IsString(dt), "%s: header entry", in[i].name);
        if (cJSON_GetArraySize(off) != 2) continue;
        size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble, e2 = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        CHECK(!strcmp(dt->valuestring, st_dtype_name(in[i].dtype)), "%s: dtype %s", in[i].name, dt->valuestring);
        CHECK(e2 - b == in[i].nbytes && e2 <= total, "%s: offsets [%zu, %zu]", in[i].name, b, e2);
        CHECK(b % st_dtype_size(in[i].dtype) == 0, "%s: offset %zu not aligned", in[i].name, b);
        CHECK(!in[i].nbytes || memcmp(raw + 8 + hl + b, in[i].data, in[i].nbytes) == 0, "%s: bytes in the file", in[i].name);
        for (size_t k = b; k < e2 && k < sizeof covered; k++) covered[k]++;
    }
    for (size_t k = 0; k < total && k < sizeof covered; k++) CHECK(covered[k] == 1, "data byte %zu covered %d times", k, covered[k]);
    cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(md, "format")), "__metadata__ in the header");
    cJSON_Delete(root);
    free(hdr);
    free(raw);

    StFile f;
    CHECK(st_load(&f, path) == 0, "%s", fh_last_error());
    CHECK(f.n == n, "%d tensors, want %d", f.n, n);
    for (int i = 0; i < n && i < f.n; i++) {
        const StTensor *t = st_find(&f, in[i].name);
        CHECK(t != NULL, "tensor %s missing", in[i].name);
        if (!t) continue;
        CHECK(t->dtype == in[i].dtype && t->ndim == in[i].ndim && t->nbytes == in[i].nbytes, "%s: dtype/ndim/nbytes",
              t->name);
        for (int k = 0; k < t->ndim; k++) CHECK(t->shape[k] == in[i].shape[k], "%s: shape[%d]", t->name, k);
        CHECK(!t->nbytes || memcmp(t->data, in[i].data, t->nbytes) == 0, "%s: bytes differ", t->name);
        CHECK((uintptr_t)t->data % st_dtype_size(t->dtype) == 0, "%s: data not aligned", t->name);
    }
    CHECK(st_find(&f, "nope") == NULL, "st_find of a missing name");
    CHECK(f.metadata && strstr(f.metadata, "\"format\":\"pt\"") && strstr(f.metadata, "\"note\":\"x\""), "metadata %s",
          f.metadata ? f.metadata : "(none)");
    st_free(&f);

    /* overwriting replaces the file whole */
    float g[2] = {7, 8};
    StTensor one = tensor("g", ST_F32, 1, s2, g);
    CHECK(st_write(path, &one, 1, NULL) == 0, "%s", fh_last_error());
    CHECK(st_load(&f, path) == 0 && f.n == 1 && !f.metadata && st_find(&f, "g") &&
          ((float *)st_find(&f, "g")->data)[1] == 8.0f, "overwrite: %s", fh_last_error());
    st_free(&f);
    CHECK(files_in_dir() == 1, "temp files left behind");
    unlink(path);
}

/* st_write refuses bad input and leaves no file */
static void write_errors(void) {
    float x[4] = {0};
    int64_t s4[] = {4}, s5[] = {5};
    char path[128];
    path_in_dir(path, sizeof path, "w.safetensors");
    StTensor t[2] = {tensor("a", ST_F32, 1, s4, x), tensor("a", ST_F32, 1, s4, x)};
    CHECK(st_write(path, t, 2, NULL) != 0 && strstr(fh_last_error(), "\"a\" appears twice"), "%s", fh_last_error());
    t[1] = tensor("b", ST_F32, 1, s4, x);
    t[1].nbytes = 12;
    CHECK(st_write(path, t, 2, NULL) != 0 && strstr(fh_last_error(), "\"b\"") && strstr(fh_last_error(), "16"), "%s",
          fh_last_error());
    t[1] = tensor("b", (StDtype)99, 1, s4, x);
    CHECK(st_write(path, t, 2, NULL) != 0 && strstr(fh_last_error(), "dtype"), "%s", fh_last_error());
    t[1] = tensor("__metadata__", ST_F32, 1, s4, x);
    CHECK(st_write(path, t, 2, NULL) != 0 && strstr(fh_last_error(), "__metadata__"), "%s", fh_last_error());
    t[1] = tensor("b", ST_U8, 1, s5, NULL);
    CHECK(st_write(path, t, 2, NULL) != 0 && strstr(fh_last_error(), "no data"), "%s", fh_last_error());
    CHECK(st_write(path, t, 1, "{\"k\": 1}") != 0 && strstr(fh_last_error(), "must be a string"), "%s", fh_last_error());
    CHECK(st_write(path, t, 1, "[1]") != 0 && strstr(fh_last_error(), "__metadata__"), "%s", fh_last_error());
    CHECK(st_write(path, t, 1, "{oops") != 0 && strstr(fh_last_error(), "not valid JSON"), "%s", fh_last_error());
    CHECK(files_in_dir() == 0, "a refused write left a file");
    CHECK(st_write("/nonexistent_dir/x.safetensors", t, 1, NULL) != 0 &&
          strstr(fh_last_error(), "/nonexistent_dir/x.safetensors"), "%s", fh_last_error());
}

/* Writes a file from a header text and `data_len` bytes of data. A negative
 * `hl` writes the header's real length; otherwise that value as the length. */
static void write_raw(const char *path, const char *header, long long hl, size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    uint64_t h = hl < 0 ? strlen(header) : (uint64_t)hl;
    for (int k = 0; k < 8; k++) fputc((int)((h >> (8 * k)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
}

/* loading must fail, leave f empty, and the message must name the file and contain the needles */
static void refused(const char *path, const char *n1, const char *n2) {
    StFile f;
    int rc = st_load(&f, path);
    const char *m = fh_last_error();
    CHECK(rc != 0, "%s accepted (n1 %s)", path, n1);
    CHECK(f.tensors == NULL && f.buf == NULL && f.n == 0, "a failed load left data in the StFile");
    CHECK(strstr(m, path) && strstr(m, n1) && (!n2 || strstr(m, n2)), "message '%s' lacks '%s'/'%s'", m, n1,
          n2 ? n2 : "");
    if (!rc) st_free(&f);
}

static void corrupt_files(void) {
    char p[128];
    path_in_dir(p, sizeof p, "bad.safetensors");
    const char *ok_hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";

    /* sanity: the hand-written good file loads, with the right bytes */
    write_raw(p, ok_hdr, -1, 16);
    StFile f;
    CHECK(st_load(&f, p) == 0 && f.n == 1 && ((unsigned char *)f.tensors[0].data)[5] == 5, "%s", fh_last_error());
    st_free(&f);

    /* headers that must be refused: header text, length field (-1: its real length), data bytes, and the
     * needles the message must contain */
    const struct { const char *hdr; long long hl; size_t data; const char *n1, *n2; } bad[] = {
        {ok_hdr, -1, 15, "tensor \"w\"", "truncated"},   /* truncated data */
        {ok_hdr, -1, 0, "tensor \"w\"", "[0, 16]"},
        {"{\"w\":{\"dty", 60, 0, "header length 60", "truncated"},   /* truncated header */
        {"", -1, 0, "header length 0", NULL},   /* a length field and nothing else */
        {ok_hdr, 0x7fffffffffffffffLL, 16, "header length 9223372036854775807", NULL},   /* header length too big */
        {"{\"w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,16]}}", -1, 16, "tensor \"w\"", "unsupported dtype \"F128\""},
        {"{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "tensor \"w\"", "dtype"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,1000]}}", -1, 16, "tensor \"w\"", "[0, 1000]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,4]}}", -1, 16, "tensor \"w\"", "[8, 4]"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[-4,12]}}", -1, 16, "tensor \"w\"", "data_offsets"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", -1, 16, "tensor \"w\"", "needs 24"},   /* shape mismatch */
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", -1, 16, "tensor \"w\"", "needs 32"},   /* dtype size mismatch */
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", -1, 16, "tensor \"w\"", "shape entry 0"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", -1, 16, "tensor \"w\"", "shape entry 0"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 16, "tensor \"w\"", "at most 8"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", -1, 16, "tensor \"w\"", "overflows"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}", -1, 16, "\"a\" and \"b\" overlap", NULL},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", -1, 16, "tensor \"a\" appears twice", NULL},
        {"{\"w\":[1,2]}", -1, 0, "tensor \"w\"", "expected an object"},
        {"{\"__metadata__\":{\"k\":3}}", -1, 0, "__metadata__", "\"k\""},
        {"{\"w\":{\"dtype\":\"F32\",", -1, 16, "not valid JSON", NULL},
        {"[1,2,3]", -1, 0, "not a JSON object", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_raw(p, bad[i].hdr, bad[i].hl, bad[i].data);
        refused(p, bad[i].n1, bad[i].n2);
    }
    FILE *fp = fopen(p, "wb");
    fputs("abc", fp);
    fclose(fp);
    refused(p, "too short", NULL);                      /* under 8 bytes */
    refused("/nonexistent/x.safetensors", "cannot open", NULL);
    refused(dir, "not a regular file", NULL);

    /* offsets need not be sorted, gaps and empty tensors are fine */
    write_raw(p, "{\"late\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]},"
                 "\"early\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"none\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}  ", -1, 16);
    CHECK(st_load(&f, p) == 0, "%s", fh_last_error());
    if (f.n == 3) {
        const StTensor *late = st_find(&f, "late"), *early = st_find(&f, "early");
        CHECK(late && ((unsigned char *)late->data)[0] == 12 && early && ((unsigned char *)early->data)[3] == 3,
              "unsorted offsets map to the right bytes");
    }
    st_free(&f);

    /* a legal file whose F32 starts at an odd offset: loaded into aligned memory */
    write_raw(p, "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                 "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}", -1, 9);
    CHECK(st_load(&f, p) == 0, "%s", fh_last_error());
    const StTensor *ft = st_find(&f, "f");
    if (ft) {
        unsigned char want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        CHECK((uintptr_t)ft->data % 4 == 0 && memcmp(ft->data, want, 8) == 0, "misaligned tensor copied aligned");
    }
    st_free(&f);
    unlink(p);
}

int main(void) {
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(round_trip);
    RUN(write_errors);
    RUN(corrupt_files);
    rmdir(dir);
    TEST_SUMMARY();
}
