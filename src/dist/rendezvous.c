/* rendezvous.c - the file and TCP rendezvous (see rendezvous.h). */
#include "rendezvous.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/error.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- file ---- */

static int file_publish(const char *path, const void *blob, size_t len) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return fh_error("rendezvous: cannot create %s: %s (is the directory writable?)", tmp, strerror(errno));
    ssize_t w = write(fd, blob, len);
    int bad = w != (ssize_t)len || fsync(fd);
    close(fd);
    /* the rename makes the whole blob appear at once: a reader never sees half of it */
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return fh_error("rendezvous: cannot write %s: %s", path, strerror(errno));
    }
    return 0;
}

static int file_fetch(const char *path, int rank, void *blob, size_t len, double timeout_s) {
    double deadline = now_s() + timeout_s;
    for (;;) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t got = read(fd, blob, len);
            close(fd);
            if (got == (ssize_t)len) return 0;
        }
        if (now_s() > deadline)
            return fh_error("rank %d: rank 0 did not publish the rendezvous file %s within %g s (is rank 0 running, "
                            "and do all ranks see the same filesystem?)", rank, path, timeout_s);
        nap_ms(10);
    }
}

/* ---- tcp ---- */

static int split_host_port(const char *hp, char *host, size_t cap, char *port, size_t pcap) {
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || !colon[1] || (size_t)(colon - hp) >= cap || strlen(colon + 1) >= pcap)
        return fh_error("rendezvous tcp:%s: expected tcp:HOST:PORT", hp);
    memcpy(host, hp, colon - hp);
    host[colon - hp] = 0;
    snprintf(port, pcap, "%s", colon + 1);
    return 0;
}

/* Waits until fd is ready for `events` or the deadline passes: 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 0;
    }
}

static int send_all(int fd, const void *buf, size_t len, double deadline) {
    const char *p = buf;
    while (len) {
        if (!wait_fd(fd, POLLOUT, deadline)) return -1;
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, void *buf, size_t len, double deadline) {
    char *p = buf;
    while (len) {
        if (!wait_fd(fd, POLLIN, deadline)) return -1;
        ssize_t r = recv(fd, p, len, 0);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int tcp_serve(const char *hp, int world, const void *blob, size_t len, double timeout_s) {
    char host[256], port[32];
    if (split_host_port(hp, host, sizeof host, port, sizeof port)) return -1;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    /* listen on every interface: HOST is how the other ranks reach this one */
    if (getaddrinfo(NULL, port, &hints, &ai) || !ai) return fh_error("rendezvous tcp:%s: bad port '%s'", hp, port);
    int fd = socket(ai->ai_family, ai->ai_socktype, 0), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, world)) {
        int e = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return fh_error("rendezvous tcp:%s: rank 0 cannot listen on port %s: %s (choose a free port)", hp, port,
                        strerror(e));
    }
    freeaddrinfo(ai);
    double deadline = now_s() + timeout_s;
    int served = 0;
    while (served < world - 1) {
        if (!wait_fd(fd, POLLIN, deadline)) {
            close(fd);
            return fh_error("rank 0: only %d of the %d other ranks connected to the tcp:%s rendezvous within %g s "
                            "(did every rank start, with the same FLOWHN_RENDEZVOUS?)", served, world - 1, hp, timeout_s);
        }
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        int ok = send_all(c, blob, len, deadline) == 0;
        close(c);
        served += ok;
    }
    close(fd);
    return 0;
}

static int tcp_fetch(const char *hp, int rank, void *blob, size_t len, double timeout_s) {
    char host[256], port[32];
    if (split_host_port(hp, host, sizeof host, port, sizeof port)) return -1;
    double deadline = now_s() + timeout_s;
    for (;;) {   /* rank 0 may not be listening yet: retry until the deadline */
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        if (!getaddrinfo(host, port, &hints, &ai) && ai) {
            int fd = socket(ai->ai_family, ai->ai_socktype, 0);
            int ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 && recv_all(fd, blob, len, deadline) == 0;
            if (fd >= 0) close(fd);
            freeaddrinfo(ai);
            if (ok) return 0;
        }
        if (now_s() > deadline)
            return fh_error("rank %d: could not get the rendezvous blob from rank 0 at tcp:%s within %g s (is rank 0 "
                            "running, and is HOST the address of rank 0's machine?)", rank, hp, timeout_s);
        nap_ms(50);
    }
}

int rendezvous_exchange(const char *spec, int rank, int world, void *blob, size_t len, double timeout_s) {
    if (!strncmp(spec, "file:", 5) && spec[5]) {
        if (rank == 0) return file_publish(spec + 5, blob, len);
        return file_fetch(spec + 5, rank, blob, len, timeout_s);
    }
    if (!strncmp(spec, "tcp:", 4)) {
        if (rank == 0) return tcp_serve(spec + 4, world, blob, len, timeout_s);
        return tcp_fetch(spec + 4, rank, blob, len, timeout_s);
    }
    if (!strcmp(spec, "mpi")) return rendezvous_mpi(rank, world, blob, len);
    return fh_error("rendezvous '%s': expected file:PATH, tcp:HOST:PORT or mpi (FLOWHN_RENDEZVOUS)", spec);
}

void rendezvous_cleanup(const char *spec, int rank) {
    if (rank == 0 && !strncmp(spec, "file:", 5)) unlink(spec + 5);
}
