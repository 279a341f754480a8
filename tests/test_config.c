/* test_config.c - config files: every preset loads and round-trips through
 * config_to_json; each kind of bad input is refused with a message that names
 * the file and the field. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    CHECK(n >= 40, "expected the 30 paper presets, 10 tiny ones and more, found %d", n);
}

/* parse must fail with a message of the form
 *   test.json: field "<field>": <what>; allowed: <values>   (or ; did you mean "<key>"?)
 * that also contains `needle` (NULL: no extra check) */
static void refused(const char *json, const char *field, const char *needle) {
    Config c;
    int rc = config_parse(&c, json, "test.json");
    const char *m = fh_last_error();
    char head[128];
    snprintf(head, sizeof head, "test.json: field \"%s\": ", field);
    CHECK(rc != 0, "accepted: %s", json);
    CHECK(strncmp(m, head, strlen(head)) == 0, "message '%s' does not start with '%s'", m, head);
    CHECK(strstr(m, "; allowed: ") || strstr(m, "; did you mean \""), "message '%s' says nothing of the fix", m);
    CHECK(!needle || strstr(m, needle), "message '%s' lacks '%s'", m, needle);
}

static void bad_configs(void) {
    /* unknown keys */
    refused("{\"hiden_size\": 8}", "hiden_size", "did you mean \"hidden_size\"?");
    refused("{\"num_attention_head\": 8}", "num_attention_head", "did you mean \"num_attention_heads\"?");
    refused("{\"bogus_key\": 1}", "bogus_key", "allowed:");
    refused("{\"hidden_size\": 768, \"hidden_size\": 768}", "hidden_size", "twice");
    /* wrong JSON types */
    refused("{\"hidden_size\": \"768\"}", "hidden_size", "expected an integer, got a string");
    refused("{\"hidden_size\": null}", "hidden_size", "got null");
    refused("{\"rope_theta\": [1]}", "rope_theta", "got an array");
    refused("{\"use_rope\": 1}", "use_rope", "allowed: true, false");
    refused("{\"split_strategy\": true}", "split_strategy", "expected a string");
    refused("{\"split_ratio\": {}}", "split_ratio", "flops");
    /* integers */
    refused("{\"hidden_size\": 76.5}", "hidden_size", "not an integer");
    refused("{\"num_hidden_layers\": 2.000001}", "num_hidden_layers", "not an integer");
    refused("{\"hidden_size\": 0}", "hidden_size", "out of range");
    refused("{\"num_hidden_layers\": -2}", "num_hidden_layers", "out of range");
    refused("{\"mamba_dt_rank\": 0}", "mamba_dt_rank", "\"auto\"");
    refused("{\"mamba_dt_rank\": \"half\"}", "mamba_dt_rank", "\"auto\"");
    refused("{\"vocab_size\": 1}", "vocab_size", "[2, ");
    refused("{\"vocab_size\": 1e10}", "vocab_size", "out of range");
    /* NaN / infinity (JSON has no NaN literal: 1e999 overflows to inf) */
    refused("{\"rms_norm_eps\": 1e999}", "rms_norm_eps", "finite");
    refused("{\"hidden_size\": -1e999}", "hidden_size", "non-finite");
    refused("{\"split_ratio\": 1e999}", "split_ratio", "(0, 1)");
    refused("{\"rms_norm_eps\": -1}", "rms_norm_eps", "(0, 1]");
    refused("{\"initializer_range\": 0}", "initializer_range", "(0, ");
    /* impossible values */
    refused("{\"hidden_size\": 100, \"num_attention_heads\": 32}", "num_attention_heads", "divide");
    refused("{\"num_key_value_heads\": 5}", "num_key_value_heads", "divide");
    refused("{\"num_key_value_heads\": 64}", "num_key_value_heads", "divide");
    refused("{\"split_ratio\": 1.5}", "split_ratio", "(0, 1)");
    refused("{\"split_ratio\": 1}", "split_ratio", "(0, 1)");
    refused("{\"split_ratio\": 0}", "split_ratio", "(0, 1)");
    refused("{\"split_ratio\": -0.25}", "split_ratio", "(0, 1)");
    refused("{\"split_ratio\": \"fast\"}", "split_ratio", "\"flops\", \"measured\"");
    refused("{\"use_rope\": true, \"hidden_size\": 96, \"num_attention_heads\": 32}", "use_rope", "even");
    refused("{\"architecture\": \"llama\", \"hidden_size\": 96, \"num_attention_heads\": 32}", "use_rope", "even");
    refused("{\"attn_layer_period\": 2, \"attn_layer_offset\": 2}", "attn_layer_offset", "[0, 1]");
    refused("{\"attn_layer_period\": 4, \"attn_layer_offset\": 7}", "attn_layer_offset", "[0, 3]");
    refused("{\"architecture\": \"mamba2\", \"mamba2_headdim\": 100}", "mamba2_headdim", "divide");
    refused("{\"architecture\": \"mamba2\", \"mamba2_ngroups\": 5}", "mamba2_ngroups", "divide");
    /* enums */
    refused("{\"architecture\": \"gpt\"}", "architecture", "\"llama\"");
    refused("{\"split_strategy\": \"half\"}", "split_strategy", "\"fac\"");
    refused("{\"context\": \"global\"}", "context", "\"prefix\"");
    refused("{\"attention_position\": \"middle\"}", "attention_position", "\"first\", \"last\"");
    refused("{\"architecture\": \"Llama\"}", "architecture", "\"Llama\"");
    /* sizes past int: V*H = 2^31 exactly, I*H, 2*E*H */
    refused("{\"vocab_size\": 1048576, \"hidden_size\": 2048}", "vocab_size", "2^31");
    refused("{\"intermediate_size\": 4194304, \"hidden_size\": 1024, \"vocab_size\": 64}", "intermediate_size", NULL);
    refused("{\"mamba_expand\": 64, \"hidden_size\": 8192, \"vocab_size\": 64, \"num_attention_heads\": 32}",
            "mamba_expand", NULL);
    /* just below the limit is fine */
    Config c;
    CHECK(config_parse(&c, "{\"vocab_size\": 1048575, \"hidden_size\": 2048}", "x") == 0, "%s", fh_last_error());
}

/* messages for text that is not a config at all (no field to name) */
static void not_json(const char *json, const char *n1, const char *n2) {
    Config c;
    int rc = config_parse(&c, json, "test.json");
    const char *m = fh_last_error();
    CHECK(rc != 0, "accepted: %s", json);
    CHECK(strstr(m, "test.json") && strstr(m, n1) && (!n2 || strstr(m, n2)), "message '%s' lacks '%s'/'%s'", m, n1,
          n2 ? n2 : "");
}

/* The message must place the error at `line` and within one column of `col`
 * (cJSON's error pointer sits at or just past the offending character). */
static void json_error_at(const char *m, const char *origin, int line, int col) {
    const char *at = strstr(m, "invalid JSON at line ");
    int l = 0, c = 0;
    CHECK(strncmp(m, origin, strlen(origin)) == 0 && at && sscanf(at, "invalid JSON at line %d, column %d", &l, &c) == 2,
          "message '%s'", m);
    CHECK(l == line && c >= col && c <= col + 1, "message '%s': want line %d, column %d", m, line, col);
}

static void bad_json(void) {
    Config c;
    CHECK(config_parse(&c, "{\"hidden_size\": 768,}", "test.json") != 0, "trailing comma accepted");
    json_error_at(fh_last_error(), "test.json", 1, 21);
    CHECK(config_parse(&c, "{\n  \"hidden_size\": 768\n  \"vocab_size\": 64\n}", "test.json") != 0, "missing comma");
    json_error_at(fh_last_error(), "test.json", 3, 3);
    CHECK(config_parse(&c, "{\"hidden_size\": 768} trailing", "test.json") != 0, "trailing text accepted");
    json_error_at(fh_last_error(), "test.json", 1, 22);
    CHECK(config_parse(&c, "", "test.json") != 0, "empty text accepted");
    json_error_at(fh_last_error(), "test.json", 1, 1);
    not_json("{\"split_ratio\": NaN}", "invalid JSON", NULL);
    not_json("[1, 2]", "JSON object", NULL);
    not_json("768", "JSON object", NULL);
}

/* Writes `text` to a fresh file under /tmp; returns 0 and the path in `path`. */
static int temp_file(char *path, const char *text) {
    strcpy(path, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    return ok ? 0 : -1;
}

static void files(void) {
    Config c;
    CHECK(config_load(&c, "/nonexistent/config.json") != 0 && strstr(fh_last_error(), "/nonexistent/config.json") &&
          strstr(fh_last_error(), "No such file"), "%s", fh_last_error());

    char path[64];
    CHECK(temp_file(path, "{\n  \"hidden_size\": 64,\n  \"num_attention_heads\": 4,\n  \"num_key_value_heads\": 2\n}\n") == 0,
          "mkstemp");
    CHECK(config_load(&c, path) == 0 && c.hidden_size == 64 && c.dt_rank == 4, "a good file: %s", fh_last_error());
    unlink(path);

    /* invalid JSON in a file: named by path, line and column */
    CHECK(temp_file(path, "{\n  \"hidden_size\": 64,\n  oops\n}\n") == 0, "mkstemp");
    CHECK(config_load(&c, path) != 0, "invalid JSON accepted");
    json_error_at(fh_last_error(), path, 3, 3);
    unlink(path);

    /* field errors name the file */
    CHECK(temp_file(path, "{\"vocab_size\": 1}") == 0, "mkstemp");
    CHECK(config_load(&c, path) != 0 && strstr(fh_last_error(), path) && strstr(fh_last_error(), "\"vocab_size\""),
          "%s", fh_last_error());

    /* unreadable: without permission (unless root, who reads anything) ... */
    if (geteuid() != 0) {
        chmod(path, 0);
        CHECK(config_load(&c, path) != 0 && strstr(fh_last_error(), path) && strstr(fh_last_error(), "ermission"),
              "%s", fh_last_error());
    }
    unlink(path);
    /* ... and a directory, which fopen() opens but read() refuses */
    char dir[] = "/tmp/test_config_dir_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    CHECK(config_load(&c, dir) != 0 && strstr(fh_last_error(), dir) && strstr(fh_last_error(), "directory"), "%s",
          fh_last_error());
    rmdir(dir);
}

static void defaults(void) {
    Config c, d;
    CHECK(config_parse(&c, "{}", "empty") == 0, "an empty object is the default config: %s", fh_last_error());
    config_defaults(&d);
    CHECK(memcmp(&c, &d, sizeof c) == 0, "config_parse(\"{}\") != config_defaults");
    CHECK(c.arch == ARCH_FLOWHN && c.hidden_size == 768 && c.intermediate_size == 2048 && c.num_heads == 32 &&
          c.num_kv_heads == 8 && c.num_layers == 2 && c.vocab_size == 65536 && c.max_seq_len == 1024 &&
          c.d_state == 16 && c.expand == 2 && c.d_conv == 4 && c.dt_rank == 48 && c.head_dim == 24 &&
          c.split == SPLIT_FAC && c.ratio_rule == RATIO_FLOPS && c.split_multiple == 64 &&
          c.context == CONTEXT_ISOLATED && c.attn_position == ATTN_LAST && !c.use_rope && !c.tie_embeddings,
          "the 135M FlowHN FAC defaults");
    CHECK(config_parse(&c, "{\"architecture\": \"llama\"}", "x") == 0 && c.use_rope == 1, "llama gets RoPE by default");
    CHECK(config_parse(&c, "{\"architecture\": \"llama\", \"use_rope\": false}", "x") == 0 && c.use_rope == 0, "unless told");
    CHECK(config_parse(&c, "{\"architecture\": \"mamba1\"}", "x") == 0 && c.use_rope == 0, "others do not");
    /* dt_rank: absent or "auto" = ceil(H/16) of the file's H, not of the default H */
    const char *h40 = "\"hidden_size\": 40, \"num_attention_heads\": 4, \"num_key_value_heads\": 2";
    char j[256];
    snprintf(j, sizeof j, "{%s}", h40);
    CHECK(config_parse(&c, j, "x") == 0 && c.dt_rank == 3, "absent dt_rank at H 40: %d, want 3", c.dt_rank);
    snprintf(j, sizeof j, "{%s, \"mamba_dt_rank\": \"auto\"}", h40);
    CHECK(config_parse(&c, j, "x") == 0 && c.dt_rank == 3, "auto dt_rank at H 40: %d, want 3", c.dt_rank);
    snprintf(j, sizeof j, "{%s, \"mamba_dt_rank\": 7}", h40);
    CHECK(config_parse(&c, j, "x") == 0 && c.dt_rank == 7, "explicit dt_rank");
    CHECK(config_parse(&c, "{\"hidden_size\": 2048}", "x") == 0 && c.dt_rank == 128 && c.head_dim == 64, "H 2048");
    CHECK(config_parse(&c, "{\"split_ratio\": 0.59}", "x") == 0 && c.ratio_rule == RATIO_FIXED && c.split_ratio == 0.59, "ratio");
    CHECK(config_parse(&c, "{\"split_ratio\": \"measured\"}", "x") == 0 && c.ratio_rule == RATIO_MEASURED, "measured");
    /* round trip of a config with every non-default choice */
    const char *odd = "{\"architecture\": \"jamba\", \"split_strategy\": \"ae\", \"split_ratio\": 0.3, \"context\": "
                      "\"prefix\", \"attention_position\": \"first\", \"use_rope\": true, \"tie_word_embeddings\": true, "
                      "\"rms_norm_eps\": 1e-5, \"rope_theta\": 500000, \"initializer_range\": 0.0123456789, "
                      "\"attn_layer_period\": 8, \"attn_layer_offset\": 3, \"mamba_dt_rank\": 5}";
    CHECK(config_parse(&c, odd, "odd") == 0, "%s", fh_last_error());
    char *txt = config_to_json(&c);
    CHECK(txt && config_parse(&d, txt, "odd round trip") == 0 && memcmp(&c, &d, sizeof c) == 0, "round trip: %s", txt);
    free(txt);
}

int main(void) {
    RUN(presets_load_and_round_trip);
    RUN(bad_configs);
    RUN(bad_json);
    RUN(files);
    RUN(defaults);
    TEST_SUMMARY();
}
