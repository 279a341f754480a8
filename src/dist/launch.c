/* launch.c - `flowhn train --gpus N`: one process per GPU on this node (see
 * dist_launch in dist.h). The ranks are this same executable, re-executed
 * through /proc/self/exe with the rank variables set, so they find each other
 * exactly as under mpirun or srun. */
#include "dist.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/error.h"

static volatile sig_atomic_t got_signal;
static void on_signal(int s) { got_signal = s; }

static void describe(char *buf, size_t cap, int status) {
    if (WIFSIGNALED(status)) snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
}

/* Stops the ranks still running: SIGTERM, then SIGKILL after a grace period. */
static void stop_all(pid_t *pid, int *done, int n) {
    for (int r = 0; r < n; r++)
        if (!done[r]) kill(pid[r], SIGTERM);
    for (int waited = 0; waited < 100; waited++) {   /* 10 s */
        int left = 0;
        for (int r = 0; r < n; r++) {
            if (done[r]) continue;
            int st;
            if (waitpid(pid[r], &st, WNOHANG) == pid[r]) done[r] = 1;
            else left++;
        }
        if (!left) return;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    for (int r = 0; r < n; r++)
        if (!done[r]) { kill(pid[r], SIGKILL); waitpid(pid[r], NULL, 0); done[r] = 1; }
}

int dist_launch(int n, int argc, char **argv, const char *out_dir) {
    if (mkdir(out_dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "flowhn train: cannot create output directory %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    /* the ranks' command line: ours without --gpus N */
    char **av = calloc(argc + 2, sizeof(char *));
    pid_t *pid = calloc(n, sizeof(pid_t));
    int *done = calloc(n, sizeof(int)), k = 0;
    if (!av || !pid || !done) { free(av); free(pid); free(done); fprintf(stderr, "flowhn train: out of memory\n"); return 1; }
    av[k++] = "flowhn";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--gpus")) { i++; continue; }
        av[k++] = argv[i];
    }
    av[k] = NULL;
    char rv[1200], num[16];
    /* new for every launch, so no rank can read a stale id from an earlier job */
    snprintf(rv, sizeof rv, "file:%s/.rendezvous-%d-%ld", out_dir, (int)getpid(), (long)time(NULL));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < n; r++) {
        pid[r] = fork();
        if (pid[r] < 0) {
            fprintf(stderr, "flowhn train: cannot start rank %d: %s\n", r, strerror(errno));
            stop_all(pid, done, r);
            return 1;
        }
        if (pid[r] == 0) {
            snprintf(num, sizeof num, "%d", r);
            setenv("FLOWHN_RANK", num, 1);
            setenv("FLOWHN_LOCAL_RANK", num, 1);
            snprintf(num, sizeof num, "%d", n);
            setenv("FLOWHN_WORLD_SIZE", num, 1);
            setenv("FLOWHN_RENDEZVOUS", rv, 1);
            execv("/proc/self/exe", av);
            fprintf(stderr, "flowhn train: rank %d: cannot execute /proc/self/exe: %s\n", r, strerror(errno));
            _exit(127);
        }
    }
    fprintf(stderr, "flowhn train: started %d ranks (pids", n);
    for (int r = 0; r < n; r++) fprintf(stderr, " %d", (int)pid[r]);
    fprintf(stderr, "), rendezvous %s\n", rv);
    int rc = 0, running = n;
    while (running) {
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p < 0) {
            if (errno == EINTR && got_signal) {
                fprintf(stderr, "flowhn train: %s: stopping the ranks\n", strsignal(got_signal));
                stop_all(pid, done, n);
                rc = 128 + got_signal;
                break;
            }
            if (errno == EINTR) continue;
            break;
        }
        int r = 0;
        while (r < n && pid[r] != p) r++;
        if (r == n) continue;
        done[r] = 1;
        running--;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
        char how[96];
        describe(how, sizeof how, st);
        fprintf(stderr, "flowhn train: rank %d (pid %d) %s; stopping the other ranks\n", r, (int)p, how);
        stop_all(pid, done, n);
        rc = 1;
        break;
    }
    /* a rank that died before publishing leaves no file; rank 0 removes it after joining */
    unlink(rv + 5);
    free(av); free(pid); free(done);
    return rc;
}
