/* test_config.c - config files: every preset loads and round-trips through
 * config_to_json; each kind of bad input is refused with a message that names
 * the file and the field. */
#include <dirent.h>
#include <string.h>

#include "../src/core/error.h"
#include "../src/model/config.h"
#include "test.h"

static void presets_load_and_round_trip(void) {
    DIR *d = opendir("configs");
    CHECK(d != NULL, "configs/ (run from the repository root)");
    if (!d) return;
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        char path[600];
        snprintf(path, sizeof path, "configs/%s", de->d_name);
        Config a, b;
        CHECK(config_load(&a, path) == 0, "%s", fh_last_error());
        char *j = config_to_json(&a);
        CHECK(j && config_parse(&b, j, "round trip") == 0, "%s: %s", path, fh_last_error());
        CHECK(memcmp(&a, &b, sizeof a) == 0, "%s: load(to_json(c)) != c", path);
        free(j);
        n++;
    }
    closedir(d);
    CHECK(n >= 30, "expected the 30 paper presets and more, found %d", n);
}

/* parse must fail and the message must contain every needle */
static void refused(const char *json, const char *n1, const char *n2) {
    Config c;
    int rc = config_parse(&c, json, "test.json");
    const char *m = fh_last_error();
    CHECK(rc != 0, "accepted: %s", json);
    CHECK(strstr(m, "test.json") && strstr(m, n1) && (!n2 || strstr(m, n2)), "message '%s' lacks '%s'/'%s'", m, n1,
          n2 ? n2 : "");
}

static void bad_configs(void) {
    refused("{\"hiden_size\": 8}", "hiden_size", "did you mean \"hidden_size\"");
    refused("{\"bogus_key\": 1}", "bogus_key", NULL);
    refused("{\"hidden_size\": \"768\"}", "hidden_size", "integer");
    refused("{\"hidden_size\": 76.5}", "hidden_size", "integer");
    refused("{\"hidden_size\": 0}", "hidden_size", "out of range");
    refused("{\"hidden_size\": 100, \"num_attention_heads\": 32}", "num_attention_heads", "divide");
    refused("{\"num_key_value_heads\": 5}", "num_key_value_heads", "divide");
    refused("{\"split_ratio\": 1.5}", "split_ratio", "(0, 1)");
    refused("{\"split_ratio\": 0}", "split_ratio", NULL);
    refused("{\"split_ratio\": \"fast\"}", "split_ratio", "flops");
    refused("{\"architecture\": \"gpt\"}", "architecture", "\"llama\"");
    refused("{\"context\": \"global\"}", "context", "prefix");
    refused("{\"use_rope\": 1}", "use_rope", "true or false");
    refused("{\"use_rope\": true, \"hidden_size\": 96, \"num_attention_heads\": 32, \"num_key_value_heads\": 8}", "use_rope", "even");
    refused("{\"attn_layer_period\": 2, \"attn_layer_offset\": 2}", "attn_layer_offset", "period");
    refused("{\"architecture\": \"mamba2\", \"mamba2_headdim\": 100}", "mamba2_headdim", "divide");
    refused("{\"architecture\": \"mamba2\", \"mamba2_ngroups\": 5}", "mamba2_ngroups", "divide");
    refused("{\"vocab_size\": 1}", "vocab_size", NULL);
    refused("{\"vocab_size\": 2000000, \"hidden_size\": 4096}", "2^31", NULL);
    refused("{\"rms_norm_eps\": -1}", "rms_norm_eps", NULL);
    refused("{\"hidden_size\": 768,}", "invalid JSON", "line 1");
    refused("[1, 2]", "JSON object", NULL);
}

static void defaults_and_files(void) {
    Config c;
    CHECK(config_parse(&c, "{}", "empty") == 0, "an empty object is the default config: %s", fh_last_error());
    CHECK(c.arch == ARCH_FLOWHN && c.hidden_size == 768 && c.dt_rank == 48 && c.head_dim == 24, "defaults");
    CHECK(config_parse(&c, "{\"architecture\": \"llama\"}", "x") == 0 && c.use_rope == 1, "llama gets RoPE by default");
    CHECK(config_parse(&c, "{\"architecture\": \"llama\", \"use_rope\": false}", "x") == 0 && c.use_rope == 0, "unless told");
    CHECK(config_parse(&c, "{\"mamba_dt_rank\": \"auto\", \"hidden_size\": 40, \"num_attention_heads\": 4, \"num_key_value_heads\": 2}", "x") == 0 &&
          c.dt_rank == 3, "auto dt_rank = ceil(H/16)");
    CHECK(config_parse(&c, "{\"split_ratio\": 0.59}", "x") == 0 && c.ratio_rule == RATIO_FIXED && c.split_ratio == 0.59, "ratio");
    CHECK(config_load(&c, "/nonexistent/config.json") != 0 && strstr(fh_last_error(), "/nonexistent/config.json"), "%s", fh_last_error());
}

int main(void) {
    RUN(presets_load_and_round_trip);
    RUN(bad_configs);
    RUN(defaults_and_files);
    TEST_SUMMARY();
}
