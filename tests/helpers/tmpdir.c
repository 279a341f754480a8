#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

void test_dir_make(char *dir, size_t dir_size, const char *tag) {
    snprintf(dir, dir_size, "/tmp/flowhn-test-%s-%d", tag, (int)getpid());
    mkdir(dir, 0777);
}

void test_dir_remove(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
}
