#include <stdio.h>

#include "../core/real.h"
#include "commands.h"

int cmd_version(int argc, char **argv) {
    (void)argc; (void)argv;
    printf("flowhn 0.1 (CPU backend " REAL_NAME ")\n");
    return 0;
}
