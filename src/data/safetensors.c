/* safetensors.c - see safetensors.h. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/error.h"

static const char *const NAMES[ST_DTYPE_COUNT] = {"F32", "F64", "I32", "I64", "BF16", "F16", "U8"};
static const size_t SIZES[ST_DTYPE_COUNT] = {4, 8, 4, 8, 2, 2, 1};

size_t st_dtype_size(StDtype d) { return d < ST_DTYPE_COUNT ? SIZES[d] : 0; }
const char *st_dtype_name(StDtype d) { return d < ST_DTYPE_COUNT ? NAMES[d] : "?"; }

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

static int parse_tensor(StTensor *t, const cJSON *e, const char *path, size_t data_len) {
    snprintf(t->name, sizeof t->name, "%s", e->string);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return fh_error("%s: tensor \"%s\": missing dtype", path, t->name);
    int d = -1;
    for (int k = 0; k < ST_DTYPE_COUNT; k++) if (!strcmp(dt->valuestring, NAMES[k])) d = k;
    if (d < 0) return fh_error("%s: tensor \"%s\": unsupported dtype \"%s\"", path, t->name, dt->valuestring);
    t->dtype = (StDtype)d;
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8)
        return fh_error("%s: tensor \"%s\": shape must be an array of at most 8 sizes", path, t->name);
    t->ndim = cJSON_GetArraySize(sh);
    size_t count = 1;
    for (int k = 0; k < t->ndim; k++) {
        const cJSON *s = cJSON_GetArrayItem(sh, k);
        if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > 1e15)
            return fh_error("%s: tensor \"%s\": bad shape entry", path, t->name);
        t->shape[k] = (int64_t)s->valuedouble;
        count *= (size_t)t->shape[k];
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)))
        return fh_error("%s: tensor \"%s\": data_offsets must be [begin, end]", path, t->name);
    double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
    if (b < 0 || en < b || en > (double)data_len)
        return fh_error("%s: tensor \"%s\": data_offsets [%.0f, %.0f] outside the %zu data bytes (truncated file?)",
                        path, t->name, b, en, data_len);
    t->nbytes = (size_t)(en - b);
    if (t->nbytes != count * SIZES[d])
        return fh_error("%s: tensor \"%s\": %zu bytes but shape x %s needs %zu", path, t->name, t->nbytes,
                        NAMES[d], count * SIZES[d]);
    t->data = (void *)(uintptr_t)b;   /* offset for now; made a pointer by the caller */
    return 0;
}

int st_load(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return fh_error("cannot open %s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    if (n < 8) { fclose(fp); return fh_error("%s: too short to be a safetensors file (%ld bytes)", path, n); }
    f->buf = malloc((size_t)n + 1);
    if (!f->buf) { fclose(fp); return fh_error("out of memory reading %s", path); }
    f->len = fread(f->buf, 1, (size_t)n, fp);
    fclose(fp);
    if (f->len != (size_t)n) { st_free(f); return fh_error("short read on %s", path); }
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = (hl << 8) | f->buf[k];
    if (hl > f->len - 8) { st_free(f); return fh_error("%s: header length %llu exceeds the file (%zu bytes); truncated or not safetensors", path, (unsigned long long)hl, f->len); }
    char *text = malloc(hl + 1);
    if (!text) { st_free(f); return fh_error("out of memory"); }
    memcpy(text, f->buf + 8, hl);
    text[hl] = 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); st_free(f); return fh_error("%s: header is not a JSON object", path); }
    size_t data_off = 8 + hl, data_len = f->len - data_off;
    f->tensors = calloc(cJSON_GetArraySize(root) + 1, sizeof(StTensor));
    if (!f->tensors) { cJSON_Delete(root); st_free(f); return fh_error("out of memory"); }
    for (cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) { f->metadata = cJSON_PrintUnformatted(e); continue; }
        if (!cJSON_IsObject(e) || parse_tensor(&f->tensors[f->n], e, path, data_len)) {
            if (!cJSON_IsObject(e)) fh_error("%s: entry \"%s\" is not a tensor description", path, e->string);
            cJSON_Delete(root);
            st_free(f);
            return -1;
        }
        StTensor *t = &f->tensors[f->n++];
        t->data = f->buf + data_off + (uintptr_t)t->data;
    }
    cJSON_Delete(root);
    return 0;
}

int st_write(const char *path, const StTensor *tensors, int n, const char *metadata_json) {
    cJSON *root = cJSON_CreateObject();
    size_t off = 0;
    if (metadata_json) {
        cJSON *md = cJSON_Parse(metadata_json);
        if (!cJSON_IsObject(md)) { cJSON_Delete(md); cJSON_Delete(root); return fh_error("%s: metadata must be a JSON object", path); }
        cJSON_AddItemToObject(root, "__metadata__", md);
    }
    for (int i = 0; i < n; i++) {
        const StTensor *t = &tensors[i];
        cJSON *e = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
        cJSON_AddStringToObject(e, "dtype", st_dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
        cJSON_AddItemToObject(e, "shape", sh);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + t->nbytes)));
        cJSON_AddItemToObject(e, "data_offsets", of);
        cJSON_AddItemToObject(root, t->name, e);
        off += t->nbytes;
    }
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!hdr) return fh_error("out of memory");
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;   /* 8-byte aligned data, spaces as padding */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) { free(hdr); return fh_error("cannot create %s: %s", tmp, strerror(errno)); }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)(padded >> (8 * k));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
    for (size_t k = hl; ok && k < padded; k++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < n; i++) ok = fwrite(tensors[i].data, 1, tensors[i].nbytes, fp) == tensors[i].nbytes;
    free(hdr);
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int e = errno;
    if (fclose(fp) && ok) { ok = 0; e = errno; }
    if (!ok || rename(tmp, path)) {
        if (ok) e = errno;
        unlink(tmp);
        return fh_error("writing %s failed: %s", path, strerror(e));
    }
    return 0;
}
