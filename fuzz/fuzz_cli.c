/* fuzz_cli.c - command-line parsing of `flowhn info`, `train`, `eval`,
 * `generate` and `version`: the input is split at newlines into argv (the
 * first line names the command) and the command's function is called.
 *
 * The commands run inside a sandbox directory under /tmp holding one valid
 * tiny config (c.json) and nothing else; arguments that are absolute paths or
 * contain ".." are replaced, so every path resolves inside the sandbox. There
 * are no shards, checkpoints or tokenizers there, so `train`, `eval` and
 * `generate` fail before doing work and nothing is written anywhere.
 *
 * The CLI files are included (they are not in libflowhn.a); each has its own
 * static usage(), renamed per file. */
#include "fuzz_common.h"

#include <fcntl.h>

#define usage info_usage
#include "../src/cli/cmd_info.c"
#undef usage
#define usage train_usage
#include "../src/cli/cmd_train.c"
#undef usage
#define usage eval_usage
#include "../src/cli/cmd_eval.c"
#undef usage
#define usage generate_usage
#include "../src/cli/cmd_generate.c"
#undef usage
#include "../src/cli/cmd_version.c"
#include "../src/cli/args.c"

#define FUZZ_CLI_MAX_ARGS 32

static char fuzz_cli_dir[64];

static void fuzz_cli_cleanup(void) {
    char p[96];
    snprintf(p, sizeof p, "%s/c.json", fuzz_cli_dir);
    unlink(p);
    rmdir(fuzz_cli_dir);
}

static void fuzz_cli_setup(void) {
    snprintf(fuzz_cli_dir, sizeof fuzz_cli_dir, "/tmp/flowhn-fuzz-cli-XXXXXX");
    if (!mkdtemp(fuzz_cli_dir)) { perror("fuzz_cli: mkdtemp"); abort(); }
    char p[96];
    snprintf(p, sizeof p, "%s/c.json", fuzz_cli_dir);
    FILE *f = fopen(p, "w");
    if (!f) abort();
    fputs("{\"architecture\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
          "\"num_key_value_heads\": 1, \"intermediate_size\": 8, \"vocab_size\": 32, \"max_position_embeddings\": 8}\n", f);
    fclose(f);
    atexit(fuzz_cli_cleanup);
}

static int fuzz_cli_one(const uint8_t *data, size_t size) {
    static const struct { const char *name; int (*run)(int, char **); } cmds[] = {
        {"info", cmd_info}, {"train", cmd_train}, {"eval", cmd_eval}, {"generate", cmd_generate}, {"version", cmd_version},
    };
    char *text = fuzz_cstr(data, size), *argv[FUZZ_CLI_MAX_ARGS + 1];
    int argc = 0;
    for (char *s = text; argc < FUZZ_CLI_MAX_ARGS;) {
        char *nl = memchr(s, '\n', (size_t)(text + size - s));
        if (nl) *nl = 0;
        argv[argc++] = (s[0] == '/' || strstr(s, "..")) ? "x" : s;
        if (!nl) break;
        s = nl + 1;
    }
    argv[argc] = NULL;
    int (*run)(int, char **) = NULL;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[0], cmds[i].name)) run = cmds[i].run;
    if (run) {
        if (!fuzz_cli_dir[0]) fuzz_cli_setup();
        int here = open(".", O_RDONLY | O_DIRECTORY);
        if (here < 0 || chdir(fuzz_cli_dir)) abort();
        /* the commands print; keep stdout quiet (and stderr in the replay test,
         * where libFuzzer's -close_fd_mask does not apply) */
        fflush(stdout);
        fflush(stderr);
        int out = dup(1), err = dup(2), null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
#ifdef FUZZ_NO_MAIN
        dup2(null, 2);
#endif
        run(argc, argv);
        fflush(stdout);
        fflush(stderr);
        dup2(out, 1);
        dup2(err, 2);
        close(out); close(err); close(null);
        if (fchdir(here)) abort();
        close(here);
    }
    free(text);
    return 0;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_cli_one(data, size); }
#endif
