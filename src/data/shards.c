/* shards.c - llm.c token shards (see shards.h). Bytes are converted
 * explicitly to and from little-endian, so the files are the same on any
 * host. */
#include "shards.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.h"

/* tokens are converted through a fixed buffer of this many, not one malloc per read */
#define CHUNK 4096

int shard_version_for_vocab(int vocab_size) { return vocab_size > 65536 ? 2 : 1; }

static void put_le32(unsigned char *p, uint32_t v) {
    for (int b = 0; b < 4; b++) p[b] = (unsigned char)(v >> (8 * b));
}

static uint32_t get_le(const unsigned char *p, int width) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    if (width == 4) v |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return v;
}

/* fsync the directory holding path so the rename itself survives a crash */
static void sync_dir_of(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    int fd = open(dirname(buf), O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }
}

int shard_write(const char *path, const int *tokens, long n, int vocab_size) {
    if (vocab_size <= 0) return fh_error("%s: cannot write a shard for vocabulary size %d", path, vocab_size);
    if (n < 0 || n > INT32_MAX)
        return fh_error("%s: %ld tokens do not fit one shard (the header counts at most %d); use smaller shards", path, n, INT32_MAX);
    for (long i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab_size)
            return fh_error("%s: token %ld has id %d, outside the vocabulary of %d; nothing was written", path, i, tokens[i], vocab_size);
    int version = shard_version_for_vocab(vocab_size), width = version == 1 ? 2 : 4;

    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return fh_error("cannot create %s: %s (does the directory exist and is it writable?)", tmp, strerror(errno));
    unsigned char buf[CHUNK * 4];
    memset(buf, 0, SHARD_HEADER_BYTES);
    put_le32(buf, SHARD_MAGIC);
    put_le32(buf + 4, (uint32_t)version);
    put_le32(buf + 8, (uint32_t)n);
    int ok = fwrite(buf, 1, SHARD_HEADER_BYTES, f) == SHARD_HEADER_BYTES;
    for (long start = 0; ok && start < n; start += CHUNK) {
        long cnt = n - start < CHUNK ? n - start : CHUNK;
        for (long i = 0; i < cnt; i++) {
            uint32_t v = (uint32_t)tokens[start + i];
            buf[i * width] = (unsigned char)v;
            buf[i * width + 1] = (unsigned char)(v >> 8);
            if (width == 4) { buf[i * width + 2] = (unsigned char)(v >> 16); buf[i * width + 3] = (unsigned char)(v >> 24); }
        }
        ok = fwrite(buf, (size_t)width, (size_t)cnt, f) == (size_t)cnt;
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) { ok = 0; err = errno; }
    if (ok && rename(tmp, path) != 0) { ok = 0; err = errno; }
    if (!ok) {
        unlink(tmp);
        return fh_error("writing shard %s failed: %s (disk full or not writable?)", path, strerror(err));
    }
    sync_dir_of(path);
    return 0;
}

/* Reads count tokens from the current file position, converting to int;
 * with vocab_size > 0 returns the index of the first id >= vocab_size in
 * *bad (or -1). */
static int read_tokens(Shard *s, long count, int *out, int vocab_size, long *bad, uint32_t *bad_id) {
    unsigned char buf[CHUNK * 4];
    *bad = -1;
    for (long done = 0; done < count;) {
        long cnt = count - done < CHUNK ? count - done : CHUNK;
        if (fread(buf, (size_t)s->width, (size_t)cnt, s->f) != (size_t)cnt)
            return fh_error("%s: read error after %ld tokens: %s", s->path, done, ferror(s->f) ? strerror(errno) : "unexpected end of file");
        for (long i = 0; i < cnt; i++) {
            uint32_t v = get_le(buf + i * s->width, s->width);
            if (vocab_size > 0 && *bad < 0 && v >= (uint32_t)vocab_size) { *bad = done + i; *bad_id = v; }
            if (out) out[done + i] = (int)v;
        }
        if (*bad >= 0) return 0;
        done += cnt;
    }
    return 0;
}

int shard_open(Shard *s, const char *path, int vocab_size) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->f = fopen(path, "rb");
    if (!s->f) return fh_error("cannot open shard %s: %s (shards are made by `flowhn prepare`)", path, strerror(errno));
    struct stat st;
    long size = fstat(fileno(s->f), &st) == 0 ? (long)st.st_size : -1;
    unsigned char h[12];
    int rc = 0;
    if (size < SHARD_HEADER_BYTES || fread(h, 1, sizeof h, s->f) != sizeof h) {
        rc = fh_error("%s: %ld bytes, shorter than the %d-byte shard header: truncated or not a token shard; re-run "
                      "flowhn prepare", path, size, SHARD_HEADER_BYTES);
        goto fail;
    }
    int32_t magic = (int32_t)get_le(h, 4), version = (int32_t)get_le(h + 4, 4), n = (int32_t)get_le(h + 8, 4);
    if (magic != SHARD_MAGIC) {
        rc = fh_error("%s: not an llm.c token shard (magic %d, expected %d); pass the .bin files written by flowhn "
                      "prepare or llm.c", path, magic, SHARD_MAGIC);
        goto fail;
    }
    if (version != 1 && version != 2) {
        rc = fh_error("%s: shard version %d is not supported (1 = uint16 tokens, 2 = uint32 tokens); re-make it with "
                      "flowhn prepare", path, version);
        goto fail;
    }
    if (n < 0) { rc = fh_error("%s: header says %d tokens; the shard is corrupt, re-run flowhn prepare", path, n); goto fail; }
    s->version = version;
    s->width = version == 1 ? 2 : 4;
    s->n_tokens = n;
    long want = SHARD_HEADER_BYTES + (long)s->width * n;
    if (size != want) {
        rc = fh_error("%s: header says %d tokens of %d bytes (%ld bytes in all) but the file has %ld bytes: %s; re-run "
                      "flowhn prepare", path, n, s->width, want, size,
                      size < want ? "truncated (an interrupted copy or write?)" : "extra bytes after the tokens");
        goto fail;
    }
    if (vocab_size > 0) {
        long bad;
        uint32_t bad_id = 0;
        if (fseeko(s->f, SHARD_HEADER_BYTES, SEEK_SET) || read_tokens(s, n, NULL, vocab_size, &bad, &bad_id)) { rc = -1; goto fail; }
        if (bad >= 0) {
            rc = fh_error("%s: token at offset %ld has id %u, outside the vocabulary of %d: the shard was made with a "
                          "different tokenizer; re-run flowhn prepare with the model's tokenizer", path, bad, bad_id, vocab_size);
            goto fail;
        }
    }
    return 0;
fail:
    fclose(s->f);
    s->f = NULL;
    return rc;
}

int shard_read(Shard *s, long offset, long count, int *out) {
    if (!s->f) return fh_error("%s: shard is not open", s->path);
    if (offset < 0 || count < 0 || offset + count > s->n_tokens)
        return fh_error("%s: tokens [%ld, %ld) asked for, but the shard holds %ld", s->path, offset, offset + count, s->n_tokens);
    if (fseeko(s->f, SHARD_HEADER_BYTES + (off_t)offset * s->width, SEEK_SET))
        return fh_error("%s: seek to token %ld failed: %s", s->path, offset, strerror(errno));
    long bad;
    uint32_t bad_id;
    return read_tokens(s, count, out, 0, &bad, &bad_id);
}

void shard_close(Shard *s) {
    if (s->f) fclose(s->f);
    s->f = NULL;
}
