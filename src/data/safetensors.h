/* safetensors.h - read and write the safetensors format: an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw bytes.
 * Loading validates every field against the file size; writing is atomic. */
#ifndef FLOWHN_SAFETENSORS_H
#define FLOWHN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F64, ST_I32, ST_I64, ST_BF16, ST_F16, ST_U8, ST_DTYPE_COUNT } StDtype;

typedef struct {
    char name[256];
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t nbytes;
    void *data;          /* points into the file's buffer (load) or the caller's (write) */
} StTensor;

typedef struct {
    StTensor *tensors;
    int n;
    char *metadata;      /* the __metadata__ object as JSON text, or NULL */
    unsigned char *buf;  /* the whole file */
    size_t len;
} StFile;

int st_load(StFile *f, const char *path);
const StTensor *st_find(const StFile *f, const char *name);
void st_free(StFile *f);
/* Writes tensors (data from the caller) to path atomically; metadata is a JSON
 * object of strings, or NULL. */
int st_write(const char *path, const StTensor *tensors, int n, const char *metadata_json);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);

#endif
