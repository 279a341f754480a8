/* checkpoint.c - atomic, checksummed checkpoints (format in checkpoint.h). */
#include "checkpoint.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.h"

#define MAGIC "FLOWHNCK"
#define END_MAGIC "FLOWHEND"
#define VERSION 1u

typedef struct { FILE *f; uint64_t hash; const char *path; int failed; } Writer;

static void fnv(uint64_t *h, const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t x = *h;
    for (size_t i = 0; i < n; i++) { x ^= b[i]; x *= 1099511628211ull; }
    *h = x;
}

static void put(Writer *w, const void *p, size_t n) {
    if (w->failed) return;
    if (fwrite(p, 1, n, w->f) != n) { w->failed = errno ? errno : EIO; return; }
    fnv(&w->hash, p, n);
}

/* Writes n reals as float32 through a bounce buffer (reals are doubles in the
 * gradient-check build). Copies from backend memory when needed. */
static void put_reals(Writer *w, const Model *model, const real *x, size_t n, int on_backend) {
    enum { CH = 1 << 16 };
    real *tmp = malloc(sizeof(real) * CH);
    float *f = malloc(sizeof(float) * CH);
    if (!tmp || !f) { w->failed = ENOMEM; free(tmp); free(f); return; }
    for (size_t i = 0; i < n && !w->failed; i += CH) {
        size_t k = n - i < CH ? n - i : CH;
        if (on_backend) model->ops->to_host(tmp, x + i, sizeof(real) * k);
        else memcpy(tmp, x + i, sizeof(real) * k);
        for (size_t j = 0; j < k; j++) f[j] = (float)tmp[j];
        put(w, f, sizeof(float) * k);
    }
    free(tmp);
    free(f);
}

int checkpoint_save(const char *path, const Model *model, OptimizerView opt, const char *state_json) {
    char *cfg_json = config_to_json(&model->cfg);
    if (!cfg_json) return -1;
    cJSON *hdr = cJSON_CreateObject();
    cJSON_AddItemToObject(hdr, "config", cJSON_Parse(cfg_json));
    free(cfg_json);
    cJSON_AddNumberToObject(hdr, "n_params", (double)model->layout.total);
    cJSON_AddBoolToObject(hdr, "has_optimizer", opt.m && opt.v);
    cJSON *st = state_json ? cJSON_Parse(state_json) : NULL;
    if (state_json && !st) { cJSON_Delete(hdr); return fh_error("checkpoint %s: trainer state is not valid JSON", path); }
    if (st) cJSON_AddItemToObject(hdr, "state", st);
    char *text = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    if (!text) return fh_error("checkpoint %s: out of memory", path);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) { free(text); return fh_error("out of memory"); }
    snprintf(tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    Writer w = {fopen(tmp, "wb"), 14695981039346656037ull, tmp, 0};
    if (!w.f) {
        int e = errno;
        free(text); free(tmp);
        return fh_error("cannot create checkpoint file next to %s: %s (check the directory exists and is writable)",
                        path, strerror(e));
    }
    uint32_t version = VERSION;
    uint64_t hlen = strlen(text);
    put(&w, MAGIC, 8);
    put(&w, &version, 4);
    put(&w, &hlen, 8);
    put(&w, text, hlen);
    free(text);
    put_reals(&w, model, model->params, model->layout.total, 1);
    if (opt.m && opt.v) {
        put_reals(&w, model, opt.m, model->layout.total, 0);
        put_reals(&w, model, opt.v, model->layout.total, 0);
    }
    uint64_t h = w.hash;
    if (!w.failed && fwrite(&h, 8, 1, w.f) != 1) w.failed = errno ? errno : EIO;
    if (!w.failed && fwrite(END_MAGIC, 8, 1, w.f) != 1) w.failed = errno ? errno : EIO;
    if (!w.failed && fflush(w.f)) w.failed = errno ? errno : EIO;
    if (!w.failed && fsync(fileno(w.f))) w.failed = errno ? errno : EIO;
    if (fclose(w.f) && !w.failed) w.failed = errno ? errno : EIO;
    if (w.failed) {
        unlink(tmp);
        int e = w.failed;
        free(tmp);
        return fh_error("writing checkpoint %s failed: %s; the previous checkpoint (if any) is untouched%s", path,
                        strerror(e), e == ENOSPC || e == EFBIG ? " (free disk space or choose another --out)" : "");
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return fh_error("cannot move the new checkpoint into place at %s: %s", path, strerror(e));
    }
    free(tmp);
    /* make the rename itself durable */
    char *dup = strdup(path);
    if (dup) {
        int fd = open(dirname(dup), O_RDONLY);
        if (fd >= 0) { fsync(fd); close(fd); }
        free(dup);
    }
    return 0;
}

/* ---- loading ---- */

typedef struct { unsigned char *buf; size_t len; } Blob;

static int read_all(const char *path, Blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return fh_error("cannot open checkpoint %s: %s", path, strerror(errno));
    /* a directory opens, and its "size" from ftell can be LONG_MAX */
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fh_error("checkpoint %s is not a regular file; pass the checkpoint.bin file itself", path);
    }
    if (fseek(f, 0, SEEK_END)) { fclose(f); return fh_error("cannot read checkpoint %s", path); }
    long n = ftell(f);
    rewind(f);
    if (n < 0) { fclose(f); return fh_error("cannot read checkpoint %s", path); }
    b->len = (size_t)n;
    b->buf = malloc(b->len ? b->len : 1);
    if (!b->buf) { fclose(f); return fh_error("out of memory reading checkpoint %s", path); }
    size_t got = fread(b->buf, 1, b->len, f);
    fclose(f);
    if (got != b->len) { free(b->buf); return fh_error("short read on checkpoint %s", path); }
    return 0;
}

/* Validates framing and checksum; returns the parsed header (and keeps the
 * file in b->buf), or NULL with nothing left allocated. */
static cJSON *open_checked(const char *path, Blob *b, size_t *data_off) {
    if (read_all(path, b)) return NULL;
    cJSON *hdr = NULL;
    const size_t head = 8 + 4 + 8, tail = 16;
    uint32_t version;
    uint64_t hlen, want, h = 14695981039346656037ull;
    if (b->len < head + tail || memcmp(b->buf, MAGIC, 8)) {
        fh_error("%s is not a flowhn checkpoint (bad magic or too short: %zu bytes)", path, b->len);
        goto fail;
    }
    memcpy(&version, b->buf + 8, 4);
    memcpy(&hlen, b->buf + 12, 8);
    if (version != VERSION) { fh_error("%s: checkpoint version %u, this flowhn reads version %u", path, version, VERSION); goto fail; }
    if (hlen > b->len - head - tail) { fh_error("%s: checkpoint is truncated (header says %llu bytes)", path, (unsigned long long)hlen); goto fail; }
    if (memcmp(b->buf + b->len - 8, END_MAGIC, 8)) {
        fh_error("%s: checkpoint is truncated or was not completely written (end marker missing); use an earlier "
                 "checkpoint", path);
        goto fail;
    }
    memcpy(&want, b->buf + b->len - 16, 8);
    fnv(&h, b->buf, b->len - 16);
    if (h != want) { fh_error("%s: checksum mismatch (file is corrupted); use an earlier checkpoint", path); goto fail; }
    char *text = malloc(hlen + 1);
    if (!text) { fh_error("out of memory"); goto fail; }
    memcpy(text, b->buf + head, hlen);
    text[hlen] = 0;
    hdr = cJSON_Parse(text);
    free(text);
    if (!hdr) { fh_error("%s: checkpoint header is not valid JSON", path); goto fail; }
    *data_off = head + hlen;
    return hdr;
fail:
    free(b->buf);
    b->buf = NULL;
    return NULL;
}

static int config_from_header(const cJSON *hdr, const char *path, Config *c) {
    cJSON *cfg = cJSON_GetObjectItemCaseSensitive(hdr, "config");
    char *txt = cfg ? cJSON_PrintUnformatted(cfg) : NULL;
    if (!txt) return fh_error("%s: checkpoint header has no config", path);
    int rc = config_parse(c, txt, path);
    free(txt);
    return rc;
}

int checkpoint_read_config(const char *path, Config *c) {
    Blob b;
    size_t off;
    cJSON *hdr = open_checked(path, &b, &off);
    if (!hdr) return -1;
    int rc = config_from_header(hdr, path, c);
    cJSON_Delete(hdr);
    free(b.buf);
    return rc;
}

/* Names the fields in which two configs differ (empty if none). */
static void config_diff(const Config *a, const Config *b, char *out, size_t cap) {
    out[0] = 0;
    char *ja = config_to_json(a), *jb = config_to_json(b);
    cJSON *oa = ja ? cJSON_Parse(ja) : NULL, *ob = jb ? cJSON_Parse(jb) : NULL;
    free(ja); free(jb);
    if (!oa || !ob) { snprintf(out, cap, "(could not compare)"); cJSON_Delete(oa); cJSON_Delete(ob); return; }
    for (cJSON *it = oa->child; it; it = it->next) {
        cJSON *other = cJSON_GetObjectItemCaseSensitive(ob, it->string);
        if (!other || !cJSON_Compare(it, other, 1)) {
            char *va = cJSON_PrintUnformatted(it), *vb = other ? cJSON_PrintUnformatted(other) : NULL;
            size_t used = strlen(out);
            snprintf(out + used, cap - used, "%s%s: model %s, checkpoint %s", used ? "; " : "", it->string,
                     va ? va : "?", vb ? vb : "(missing)");
            free(va); free(vb);
        }
    }
    cJSON_Delete(oa); cJSON_Delete(ob);
}

static void get_reals(real *dst, const unsigned char *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, src + 4 * i, 4);
        dst[i] = (real)f;
    }
}

int checkpoint_load(const char *path, Model *model, real *m, real *v, char **state_json) {
    if (state_json) *state_json = NULL;
    Blob b;
    size_t off;
    cJSON *hdr = open_checked(path, &b, &off);
    if (!hdr) return -1;
    Config c;
    int rc = -1;
    if (config_from_header(hdr, path, &c)) goto done;
    char diff[2048];
    config_diff(&model->cfg, &c, diff, sizeof diff);
    if (diff[0]) { fh_error("%s: checkpoint was written for a different config: %s", path, diff); goto done; }
    cJSON *np = cJSON_GetObjectItemCaseSensitive(hdr, "n_params");
    size_t n = model->layout.total;
    /* compared as doubles: casting a huge or negative n_params to size_t would be undefined */
    if (!cJSON_IsNumber(np) || np->valuedouble != (double)n) {
        fh_error("%s: checkpoint holds %g parameters, the model has %zu", path, cJSON_IsNumber(np) ? np->valuedouble : -1.0, n);
        goto done;
    }
    int has_opt = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(hdr, "has_optimizer"));
    size_t need = off + 4 * n * (has_opt ? 3 : 1) + 16;
    if (b.len != need) { fh_error("%s: checkpoint size %zu does not match its header (expected %zu)", path, b.len, need); goto done; }
    real *host = malloc(sizeof(real) * n);
    if (!host) { fh_error("out of memory"); goto done; }
    get_reals(host, b.buf + off, n);
    model->ops->from_host(model->params, host, sizeof(real) * n);
    free(host);
    if (m && v) {
        if (has_opt) {
            get_reals(m, b.buf + off + 4 * n, n);
            get_reals(v, b.buf + off + 8 * n, n);
        } else {
            memset(m, 0, sizeof(real) * n);
            memset(v, 0, sizeof(real) * n);
        }
    }
    cJSON *st = cJSON_GetObjectItemCaseSensitive(hdr, "state");
    if (st && state_json) *state_json = cJSON_PrintUnformatted(st);
    rc = 0;
done:
    cJSON_Delete(hdr);
    free(b.buf);
    return rc;
}

int checkpoint_load_model(const char *path, const Ops *ops, Model *m) {
    Config c;
    if (checkpoint_read_config(path, &c) || model_create(m, &c, ops)) return -1;
    if (checkpoint_load(path, m, NULL, NULL, NULL)) {
        model_free(m);
        return -1;
    }
    return 0;
}
