/* safetensors.c - see safetensors.h. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.h"

/* Tensor bytes are copied as they are: the format is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const char *const NAMES[ST_DTYPE_COUNT] = {"F32", "F64", "I32", "I64", "BF16", "F16", "U8"};
static const size_t SIZES[ST_DTYPE_COUNT] = {4, 8, 4, 8, 2, 2, 1};
static const char DTYPE_LIST[] = "F32, F64, I32, I64, BF16, F16, U8";

/* Like the reference implementation, a header over 100 MB means a corrupt
 * length field, not a big model. */
#define MAX_HEADER ((uint64_t)100 << 20)
/* Offsets and sizes are JSON numbers (doubles here): exact up to 2^53. */
#define MAX_JSON_INT 9007199254740992.0

size_t st_dtype_size(StDtype d) { return (unsigned)d < ST_DTYPE_COUNT ? SIZES[d] : 0; }
const char *st_dtype_name(StDtype d) { return (unsigned)d < ST_DTYPE_COUNT ? NAMES[d] : "?"; }

void st_free(StFile *f) {
    free(f->tensors);
    free(f->metadata);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* Bytes a tensor of this dtype and shape needs; -1 if a size is negative or
 * the product does not fit size_t. */
static int shape_bytes(StDtype d, int ndim, const int64_t *shape, size_t *bytes) {
    size_t n = SIZES[d];
    for (int k = 0; k < ndim; k++) {
        if (shape[k] < 0) return -1;
        if (shape[k] && n > SIZE_MAX / (uint64_t)shape[k]) return -1;
        n *= (size_t)shape[k];
    }
    *bytes = n;
    return 0;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

/* Two tensors of one name would make st_find ambiguous. */
static int check_unique_names(const StTensor *t, int n, const char *path) {
    const StTensor **s = malloc(sizeof *s * (size_t)(n ? n : 1));
    if (!s) return fh_error("%s: out of memory", path);
    for (int i = 0; i < n; i++) s[i] = &t[i];
    qsort(s, (size_t)n, sizeof *s, name_cmp);
    int rc = 0;
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(s[i - 1]->name, s[i]->name)) rc = fh_error("%s: tensor \"%s\" appears twice", path, s[i]->name);
    free(s);
    return rc;
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_count(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (!isfinite(x) || x < 0 || x > MAX_JSON_INT || x != floor(x)) return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Fills t and [*begin, *end) from one header entry; data is set later. */
static int parse_tensor(StTensor *t, uint64_t *begin, uint64_t *end, const cJSON *e, const char *path,
                        uint64_t data_len) {
    if (strlen(e->string) >= sizeof t->name)
        return fh_error("%s: tensor \"%.40s...\": name longer than %zu bytes", path, e->string, sizeof t->name - 1);
    snprintf(t->name, sizeof t->name, "%s", e->string);
    if (!cJSON_IsObject(e))
        return fh_error("%s: tensor \"%s\": expected an object {\"dtype\", \"shape\", \"data_offsets\"}", path, t->name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");

    if (!cJSON_IsString(dt)) return fh_error("%s: tensor \"%s\": \"dtype\" missing or not a string", path, t->name);
    int d = -1;
    for (int k = 0; k < ST_DTYPE_COUNT; k++)
        if (!strcmp(dt->valuestring, NAMES[k])) d = k;
    if (d < 0)
        return fh_error("%s: tensor \"%s\": unsupported dtype \"%s\" (supported: %s)", path, t->name, dt->valuestring,
                        DTYPE_LIST);
    t->dtype = (StDtype)d;

    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > ST_MAX_NDIM)
        return fh_error("%s: tensor \"%s\": \"shape\" must be an array of at most %d sizes", path, t->name, ST_MAX_NDIM);
    t->ndim = cJSON_GetArraySize(sh);
    for (int k = 0; k < t->ndim; k++) {
        uint64_t s;
        if (json_count(cJSON_GetArrayItem(sh, k), &s))
            return fh_error("%s: tensor \"%s\": shape entry %d is not a non-negative integer", path, t->name, k);
        t->shape[k] = (int64_t)s;
    }
    size_t need;
    if (shape_bytes(t->dtype, t->ndim, t->shape, &need))
        return fh_error("%s: tensor \"%s\": the shape's size overflows", path, t->name);

    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_count(cJSON_GetArrayItem(off, 0), begin) ||
        json_count(cJSON_GetArrayItem(off, 1), end))
        return fh_error("%s: tensor \"%s\": \"data_offsets\" must be [begin, end], non-negative integers", path,
                        t->name);
    if (*begin > *end || *end > data_len)
        return fh_error("%s: tensor \"%s\": data_offsets [%llu, %llu] are not a range inside the %llu data bytes "
                        "(truncated file?)", path, t->name, (unsigned long long)*begin, (unsigned long long)*end,
                        (unsigned long long)data_len);
    t->nbytes = (size_t)(*end - *begin);
    if (t->nbytes != need)
        return fh_error("%s: tensor \"%s\": data_offsets hold %zu bytes but the shape in %s needs %zu", path, t->name,
                        t->nbytes, NAMES[d], need);
    return 0;
}

typedef struct { uint64_t begin, end; int i; } Range;

static int range_cmp(const void *a, const void *b) {
    const Range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Tensors may be listed in any order, but their bytes may not be shared. */
static int check_no_overlap(const StTensor *t, Range *r, int n, const char *path) {
    qsort(r, (size_t)n, sizeof *r, range_cmp);
    int last = -1;   /* the non-empty range ending furthest so far */
    for (int k = 0; k < n; k++) {
        if (r[k].begin == r[k].end) continue;
        if (last >= 0 && r[k].begin < r[last].end)
            return fh_error("%s: tensors \"%s\" and \"%s\" overlap (data_offsets [%llu, %llu] and [%llu, %llu])", path,
                            t[r[last].i].name, t[r[k].i].name, (unsigned long long)r[last].begin,
                            (unsigned long long)r[last].end, (unsigned long long)r[k].begin,
                            (unsigned long long)r[k].end);
        if (last < 0 || r[k].end > r[last].end) last = k;
    }
    return 0;
}

static int check_metadata(const cJSON *md, const char *path) {
    if (!cJSON_IsObject(md)) return fh_error("%s: \"__metadata__\" must be an object of strings", path);
    for (const cJSON *m = md->child; m; m = m->next)
        if (!cJSON_IsString(m)) return fh_error("%s: \"__metadata__\" entry \"%s\" must be a string", path, m->string);
    return 0;
}

/* Parses the header text; fills f->tensors, f->n, f->metadata and the data
 * ranges (r, one per tensor). */
static int parse_header(StFile *f, Range **r, const char *text, const char *path, uint64_t data_len) {
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return fh_error("%s: the header is not valid JSON (error near byte %ld of it)", path, at ? (long)(at - text) : 0L);
    }
    int rc = 0, cap = cJSON_GetArraySize(root);
    if (!cJSON_IsObject(root)) rc = fh_error("%s: the header is not a JSON object", path);
    if (!rc) {
        f->tensors = calloc((size_t)cap + 1, sizeof(StTensor));
        *r = calloc((size_t)cap + 1, sizeof(Range));
        if (!f->tensors || !*r) rc = fh_error("%s: out of memory for %d tensors", path, cap);
    }
    for (const cJSON *e = rc ? NULL : root->child; e && !rc; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            rc = check_metadata(e, path);
            if (!rc && !f->metadata && !(f->metadata = cJSON_PrintUnformatted(e))) rc = fh_error("out of memory");
            continue;
        }
        Range *g = &(*r)[f->n];
        rc = parse_tensor(&f->tensors[f->n], &g->begin, &g->end, e, path, data_len);
        g->i = f->n++;
    }
    cJSON_Delete(root);
    if (!rc) rc = check_unique_names(f->tensors, f->n, path);
    return rc;
}

static int read_exact(FILE *fp, void *dst, size_t n) { return fread(dst, 1, n, fp) == n ? 0 : -1; }

int st_load(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return fh_error("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return fh_error("%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size, hl = 0;
    unsigned char len8[8];
    if (size < 8 || read_exact(fp, len8, 8)) {
        fclose(fp);
        return fh_error("%s: %llu bytes, too short for a safetensors file (truncated?)", path, (unsigned long long)size);
    }
    for (int k = 7; k >= 0; k--) hl = (hl << 8) | len8[k];
    if (hl > size - 8 || hl > MAX_HEADER || hl < 2) {
        fclose(fp);
        return fh_error("%s: header length %llu does not fit the file's %llu bytes after the length field (truncated "
                        "file, or not safetensors)", path, (unsigned long long)hl, (unsigned long long)(size - 8));
    }
    char *text = malloc(hl + 1);
    if (!text) { fclose(fp); return fh_error("%s: out of memory for the header", path); }
    if (read_exact(fp, text, hl)) { free(text); fclose(fp); return fh_error("%s: short read of the header", path); }
    text[hl] = 0;
    if (strlen(text) != hl) { free(text); fclose(fp); return fh_error("%s: the header contains a NUL byte", path); }

    uint64_t data_len = size - 8 - hl;
    Range *r = NULL;
    int rc = parse_header(f, &r, text, path, data_len);
    free(text);
    if (!rc) rc = check_no_overlap(f->tensors, r, f->n, path);
    /* A tensor whose offset is not a multiple of its element size (legal, if
     * rare) gets an aligned copy after the data, so callers may cast freely. */
    size_t extra = 0;
    for (int k = 0; !rc && k < f->n; k++)
        if (r[k].begin % SIZES[f->tensors[r[k].i].dtype]) extra += f->tensors[r[k].i].nbytes + 8;
    if (!rc) {
        f->len = (size_t)data_len;
        f->buf = malloc(f->len + extra + 8);
        if (!f->buf) rc = fh_error("%s: out of memory for %zu data bytes", path, f->len);
        else if (read_exact(fp, f->buf, f->len)) rc = fh_error("%s: short read of the data", path);
    }
    fclose(fp);
    size_t tail = (f->len + 7) & ~(size_t)7;
    for (int k = 0; !rc && k < f->n; k++) {
        StTensor *t = &f->tensors[r[k].i];
        t->data = f->buf + r[k].begin;
        if (r[k].begin % SIZES[t->dtype]) {
            memcpy(f->buf + tail, t->data, t->nbytes);
            t->data = f->buf + tail;
            tail += (t->nbytes + 7) & ~(size_t)7;
        }
    }
    free(r);
    if (rc) st_free(f);
    return rc;
}

static int check_for_write(const StTensor *t, int n, const char *path) {
    if (n < 0) return fh_error("%s: negative tensor count %d", path, n);
    for (int i = 0; i < n; i++) {
        size_t need;
        if (!t[i].name[0] || strnlen(t[i].name, sizeof t[i].name) == sizeof t[i].name ||
            !strcmp(t[i].name, "__metadata__"))
            return fh_error("%s: tensor %d: name empty, unterminated or \"__metadata__\"", path, i);
        if ((unsigned)t[i].dtype >= ST_DTYPE_COUNT)
            return fh_error("%s: tensor \"%s\": unknown dtype %d (supported: %s)", path, t[i].name, (int)t[i].dtype,
                            DTYPE_LIST);
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_NDIM || shape_bytes(t[i].dtype, t[i].ndim, t[i].shape, &need))
            return fh_error("%s: tensor \"%s\": bad shape (ndim %d)", path, t[i].name, t[i].ndim);
        if (need != t[i].nbytes)
            return fh_error("%s: tensor \"%s\": nbytes %zu but the shape in %s needs %zu", path, t[i].name,
                            t[i].nbytes, NAMES[t[i].dtype], need);
        if (need && !t[i].data) return fh_error("%s: tensor \"%s\": no data", path, t[i].name);
    }
    return check_unique_names(t, n, path);
}

/* The header text, padded with spaces to a multiple of 8 bytes so the data
 * section starts aligned. NULL (error set) on failure. */
static char *make_header(const StTensor *t, int n, const char *metadata_json, const char *path, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    if (!root) { fh_error("out of memory"); return NULL; }
    if (metadata_json) {
        cJSON *md = cJSON_Parse(metadata_json);
        if (!md || check_metadata(md, path)) {
            if (!md) fh_error("%s: metadata is not valid JSON", path);
            cJSON_Delete(md);
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddItemToObject(root, "__metadata__", md);
    }
    /* Data in order of falling element size (8, 4, 2, 1 bytes), the caller's
     * order within a size: every tensor then starts aligned for its dtype and
     * the data has no gaps (which other readers reject). */
    size_t *begin = malloc(sizeof *begin * (size_t)(n ? n : 1)), off = 0;
    if (!begin) { cJSON_Delete(root); fh_error("out of memory"); return NULL; }
    for (size_t es = 8; es >= 1; es /= 2)
        for (int i = 0; i < n; i++)
            if (SIZES[t[i].dtype] == es) { begin[i] = off; off += t[i].nbytes; }
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *sh = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *of = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!of) { free(begin); cJSON_Delete(root); fh_error("out of memory"); return NULL; }
        cJSON_AddStringToObject(e, "dtype", NAMES[t[i].dtype]);
        for (int k = 0; k < t[i].ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[k]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)begin[i]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(begin[i] + t[i].nbytes)));
    }
    free(begin);
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!hdr) { fh_error("out of memory"); return NULL; }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    char *out = realloc(hdr, padded + 1);
    if (!out) { free(hdr); fh_error("out of memory"); return NULL; }
    memset(out + hl, ' ', padded - hl);
    out[padded] = 0;
    *len = padded;
    return out;
}

/* fsync the directory holding path, so the rename itself is durable. */
static void sync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);   /* best effort: some file systems refuse fsync on a directory */
        close(fd);
    }
    free(copy);
}

int st_write(const char *path, const StTensor *tensors, int n, const char *metadata_json) {
    if (check_for_write(tensors, n, path)) return -1;
    size_t hl;
    char *hdr = make_header(tensors, n, metadata_json, path, &hl);
    if (!hdr) return -1;

    /* temp file next to the target (same file system), renamed over it at the end */
    size_t plen = strlen(path) + 16;
    char *tmp = malloc(plen);
    if (!tmp) { free(hdr); return fh_error("out of memory"); }
    snprintf(tmp, plen, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!fp) {
        int e = errno;
        if (fd >= 0) { close(fd); unlink(tmp); }
        free(hdr);
        free(tmp);
        return fh_error("%s: cannot create a temporary file next to it: %s", path, strerror(e));
    }
    fchmod(fd, 0644);   /* mkstemp makes it 0600 */
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)hl >> (8 * k));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
    free(hdr);
    for (size_t es = 8; es >= 1; es /= 2)   /* the order make_header gave them */
        for (int i = 0; ok && i < n; i++)
            if (SIZES[tensors[i].dtype] == es && tensors[i].nbytes)
                ok = fwrite(tensors[i].data, 1, tensors[i].nbytes, fp) == tensors[i].nbytes;
    ok = ok && fflush(fp) == 0 && fsync(fd) == 0;
    int e = errno;
    if (fclose(fp) && ok) { ok = 0; e = errno; }
    if (ok && rename(tmp, path)) { ok = 0; e = errno; }
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return fh_error("%s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    sync_dir(path);
    return 0;
}
