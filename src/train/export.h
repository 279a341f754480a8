/* export.h - model weights as safetensors + config.json, the layout other
 * tools (Python safetensors, Hugging Face loaders) read. */
#ifndef FLOWHN_EXPORT_H
#define FLOWHN_EXPORT_H

#include "../model/model.h"

/* Writes DIR/model.safetensors (F32, tensors named as in the layout table,
 * in layout order) and DIR/config.json. */
int export_safetensors(const Model *m, const char *dir);

#endif
