/* fuzz_config.c - config_parse() on arbitrary text. A config that parses
 * must also survive config_to_json() -> config_parse() unchanged, and its
 * parameter layout must build. */
#include "fuzz_common.h"

#include "../src/model/config.h"
#include "../src/model/layout.h"

static int fuzz_config_one(const uint8_t *data, size_t size) {
    char *text = fuzz_cstr(data, size);
    Config c;
    if (config_parse(&c, text, "fuzz") == 0) {
        char *json = config_to_json(&c);
        Config back;
        if (!json || config_parse(&back, json, "round trip")) {
            fprintf(stderr, "fuzz_config: a parsed config does not parse back: %s\n", json ? json : "(null)");
            abort();
        }
        char *again = config_to_json(&back);
        if (!again || strcmp(json, again)) { fprintf(stderr, "fuzz_config: round trip changed the config\n"); abort(); }
        free(again);
        free(json);
        ParamLayout L;
        if (layout_build(&L, &c) == 0) layout_free(&L);
    }
    free(text);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_config_one(data, size); }
#endif
