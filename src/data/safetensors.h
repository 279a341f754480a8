/* safetensors.h - read and write the safetensors format: an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
 * little-endian bytes, offsets relative to the end of the header.
 * Loading validates every field against the file size (messages name the file
 * and the tensor); writing is atomic (temp file, fsync, rename). */
#ifndef FLOWHN_SAFETENSORS_H
#define FLOWHN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F64, ST_I32, ST_I64, ST_BF16, ST_F16, ST_U8, ST_DTYPE_COUNT } StDtype;

#define ST_MAX_NDIM 8

typedef struct {
    char name[256];
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    size_t nbytes;
    void *data;          /* points into StFile.buf (load) or the caller's memory (write) */
} StTensor;

typedef struct {
    StTensor *tensors;   /* in header order */
    int n;
    char *metadata;      /* the __metadata__ object as JSON text, or NULL */
    unsigned char *buf;  /* the data section (malloc'd), then aligned copies of
                            any tensor whose offset is not a multiple of its
                            element size: every data pointer is aligned */
    size_t len;          /* the data section's size in bytes */
} StFile;

/* Reads and validates `path`. Returns 0, or -1 with fh_last_error() set (and
 * *f empty). */
int st_load(StFile *f, const char *path);
/* The tensor called `name`, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);
void st_free(StFile *f);
/* Writes tensors (data from the caller) to path atomically; metadata is a JSON
 * object of strings, or NULL. Validates names, dtypes and sizes first. */
int st_write(const char *path, const StTensor *tensors, int n, const char *metadata_json);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);

#endif
