/* main.c - the `flowhn` command: dispatches to one file per subcommand.
 * Library code returns errors; this is the only place that exits. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const struct { const char *name; int (*run)(int, char **); const char *help; } commands[] = {
#define COMMAND(name, fn, help) {name, fn, help},
#include "command_list.h"
#undef COMMAND
};

static void usage(void) {
    fprintf(stderr, "usage: flowhn <command> [options]   (flowhn <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stderr, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "flowhn: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
