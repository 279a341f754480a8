/* fuzz_safetensors.c - st_load() on an arbitrary file; every tensor that
 * loads has its bytes read (ASan catches data pointing outside the file). */
#include "fuzz_common.h"

#include "../src/data/safetensors.h"

static int fuzz_safetensors_one(const uint8_t *data, size_t size) {
    StFile f;
    if (st_load(&f, fuzz_tmp_file(data, size))) return 0;
    volatile unsigned sum = 0;
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.tensors[i];
        /* the shape's byte count, without wrapping: readers trust the shape */
        size_t count = st_dtype_size(t->dtype);
        int wrapped = 0;
        for (int k = 0; k < t->ndim; k++) wrapped |= __builtin_mul_overflow(count, (size_t)t->shape[k], &count);
        if (wrapped || t->nbytes != count) { fprintf(stderr, "fuzz_safetensors: shape does not match the bytes\n"); abort(); }
        const unsigned char *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sum += p[b];
        if (st_find(&f, t->name) == NULL) { fprintf(stderr, "fuzz_safetensors: tensor not found by name\n"); abort(); }
    }
    (void)sum;
    st_free(&f);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors_one(data, size); }
#endif
