/* export.c - see export.h. */
#include "export.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/error.h"
#include "../data/safetensors.h"

int export_safetensors(const Model *m, const char *dir) {
    if (mkdir(dir, 0777) && errno != EEXIST) return fh_error("cannot create %s: %s", dir, strerror(errno));
    const ParamLayout *L = &m->layout;
    size_t n = L->total;
    real *host = malloc(sizeof(real) * n);
    float *f = malloc(sizeof(float) * n);
    StTensor *t = calloc(L->n, sizeof(StTensor));
    if (!host || !f || !t) { free(host); free(f); free(t); return fh_error("out of memory exporting"); }
    m->ops->to_host(host, m->params, sizeof(real) * n);
    for (size_t i = 0; i < n; i++) f[i] = (float)host[i];
    for (int i = 0; i < L->n; i++) {
        const ParamEntry *e = &L->entries[i];
        snprintf(t[i].name, sizeof t[i].name, "%s", e->name);
        t[i].dtype = ST_F32;
        t[i].ndim = e->ndim;
        t[i].shape[0] = e->shape[0];
        t[i].shape[1] = e->shape[1];
        t[i].nbytes = sizeof(float) * e->numel;
        t[i].data = f + e->offset;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char meta[128];
    snprintf(meta, sizeof meta, "{\"format\": \"pt\", \"producer\": \"flowhn\", \"architecture\": \"%s\"}", arch_name(m->cfg.arch));
    int rc = st_write(path, t, L->n, meta);
    free(t); free(f); free(host);
    if (rc) return rc;
    char *json = config_to_json(&m->cfg);
    if (!json) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) { free(json); return fh_error("cannot write %s: %s", path, strerror(errno)); }
    int ok = fputs(json, fp) >= 0 && fputc('\n', fp) != EOF;
    free(json);
    if (fclose(fp) || !ok) return fh_error("cannot write %s", path);
    return 0;
}
