/* commands.h - each subcommand is `int cmd_<name>(int argc, char **argv)`
 * (argv[0] is the subcommand's name) returning the process exit status. */
#ifndef FLOWHN_COMMANDS_H
#define FLOWHN_COMMANDS_H

#define COMMAND(name, fn, help) int fn(int argc, char **argv);
#include "command_list.h"
#undef COMMAND

#endif
