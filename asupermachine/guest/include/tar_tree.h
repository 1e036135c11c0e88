/*
 * A tree (or one file) as a POSIX tar stream, out and in, for the agent's TAR_OUT and TAR_IN.
 * Both run blocking in a child the agent forks, the stream on a pipe, and report a failure
 * as a line on stderr and the errno as the exit code.
 *
 * The agent writes and reads tar itself rather than running the image's tar: an image may
 * have none (distroless, scratch), or one with other options. Entries are named relative to
 * the tree: "." is its root, "./a/b" below it; the receiver decides where the root lands
 * (docker cp's rule). Headers are ustar (POSIX.1-1988); a name, link or size that does not
 * fit goes in a pax extended header before it (POSIX.1-2001), as Python's tarfile writes.
 * Ownership is not kept (files land owned by the agent's user, root, as docker cp does) unless
 * tar_keep_owners is set (a layer, layer_tar.h).
 */
#ifndef TAR_TREE_H
#define TAR_TREE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TAR_BLOCK 512
#define TAR_USTAR_NAME 100
#define TAR_USTAR_SIZE_MAX 077777777777ULL /* 11 octal digits */

/* Write each entry's uid and gid (a layer) rather than root's (docker cp's rule). */
static int tar_keep_owners;

struct tar_header {
    char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8], typeflag, linkname[100];
    char magic[6], version[2], uname[32], gname[32], devmajor[8], devminor[8], prefix[155], pad[12];
};

/* Fail: say what on stderr (the host shows it) and exit with the errno. */
static void tar_fail(const char *what, const char *path) {
    int code = errno ? errno : EIO;
    fprintf(stderr, "%s %s: %s\n", what, path, strerror(code));
    _exit(code & 0xff ? code & 0xff : EIO);
}

static void tar_write_all(int fd, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) tar_fail("write", "the tar stream");
        p += n;
        len -= (size_t)n;
    }
}

/* Read exactly LEN bytes; 0 at a clean end before the first byte, else -1 on a cut. */
static int tar_read_all(int fd, void *data, size_t len) {
    uint8_t *p = data;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) tar_fail("read", "the tar stream");
        if (n == 0) return got == 0 ? 0 : -1;
        got += (size_t)n;
    }
    return 1;
}

static void tar_octal(char *field, size_t width, unsigned long long value) {
    snprintf(field, width, "%0*llo", (int)width - 1, value);
}

/* One pax record "LEN key=value\n", LEN counting itself. */
static size_t tar_pax_record(char *out, size_t room, const char *key, const char *value) {
    size_t body = strlen(key) + strlen(value) + 3, len = body + 1;
    while (len != body + (size_t)snprintf(NULL, 0, "%zu", len)) len = body + (size_t)snprintf(NULL, 0, "%zu", len);
    return (size_t)snprintf(out, room, "%zu %s=%s\n", len, key, value);
}

static void tar_put_header(int fd, const char *name, const struct stat *st, char type, const char *link,
                           unsigned long long size) {
    struct tar_header h;
    memset(&h, 0, sizeof h);
    snprintf(h.name, sizeof h.name, "%s", name);
    snprintf(h.linkname, sizeof h.linkname, "%s", link);
    tar_octal(h.mode, sizeof h.mode, st->st_mode & 07777);
    tar_octal(h.uid, sizeof h.uid, tar_keep_owners ? st->st_uid : 0);
    tar_octal(h.gid, sizeof h.gid, tar_keep_owners ? st->st_gid : 0);
    tar_octal(h.size, sizeof h.size, size);
    tar_octal(h.mtime, sizeof h.mtime, st->st_mtime > 0 ? (unsigned long long)st->st_mtime : 0);
    h.typeflag = type;
    memcpy(h.magic, "ustar", 6);
    memcpy(h.version, "00", 2);
    if (type == '3' || type == '4') {
        tar_octal(h.devmajor, sizeof h.devmajor, major(st->st_rdev));
        tar_octal(h.devminor, sizeof h.devminor, minor(st->st_rdev));
    }
    memset(h.chksum, ' ', sizeof h.chksum);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof h; i++) sum += ((unsigned char *)&h)[i];
    snprintf(h.chksum, sizeof h.chksum, "%06o", sum);
    tar_write_all(fd, &h, sizeof h);
}

static void tar_pad(int fd, unsigned long long written) {
    static const uint8_t zeros[TAR_BLOCK];
    if (written % TAR_BLOCK) tar_write_all(fd, zeros, TAR_BLOCK - written % TAR_BLOCK);
}

/* NAME (relative) as a ustar entry, behind a pax header with what does not fit and EXTRA_LEN bytes
   of other pax records (an entry's xattrs). */
static void tar_put_entry_with(int fd, const char *name, const struct stat *st, char type, const char *link,
                               unsigned long long size, const char *extra, size_t extra_len) {
    static char pax[3 * PATH_MAX + 65536];
    size_t len = 0;
    char digits[24];
    if (strlen(name) >= TAR_USTAR_NAME) len += tar_pax_record(pax + len, sizeof pax - len, "path", name);
    if (strlen(link) >= TAR_USTAR_NAME) len += tar_pax_record(pax + len, sizeof pax - len, "linkpath", link);
    if (size > TAR_USTAR_SIZE_MAX) {
        snprintf(digits, sizeof digits, "%llu", size);
        len += tar_pax_record(pax + len, sizeof pax - len, "size", digits);
    }
    if (extra_len && extra_len <= sizeof pax - len) {
        memcpy(pax + len, extra, extra_len);
        len += extra_len;
    }
    if (len) {
        struct stat plain = { .st_mode = 0644, .st_mtime = st->st_mtime };
        tar_put_header(fd, "././@PaxHeader", &plain, 'x', "", len);
        tar_write_all(fd, pax, len);
        tar_pad(fd, len);
    }
    tar_put_header(fd, name, st, type, link, size > TAR_USTAR_SIZE_MAX ? 0 : size);
}

static void tar_put_entry(int fd, const char *name, const struct stat *st, char type, const char *link,
                          unsigned long long size) {
    tar_put_entry_with(fd, name, st, type, link, size, NULL, 0);
}

/* A regular file's entry (with EXTRA pax records) and its data. */
static void tar_put_file_with(int out, const char *path, const char *name, const struct stat *st,
                              const char *extra, size_t extra_len) {
    static uint8_t chunk[65536];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) tar_fail("open", path);
    unsigned long long size = (unsigned long long)st->st_size, done = 0;
    tar_put_entry_with(out, name, st, '0', "", size, extra, extra_len);
    while (done < size) {
        size_t want = size - done < sizeof chunk ? (size_t)(size - done) : sizeof chunk;
        ssize_t n = read(fd, chunk, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) tar_fail("read", path);
        if (n == 0) memset(chunk, 0, want), n = (ssize_t)want;  /* it shrank: the header's size holds */
        tar_write_all(out, chunk, (size_t)n);
        done += (unsigned long long)n;
    }
    close(fd);
    tar_pad(out, size);
}

static void tar_put_file(int out, const char *path, const char *name, const struct stat *st) {
    tar_put_file_with(out, path, name, st, NULL, 0);
}

/* Call VISIT on each entry of the directory PATH, with PATH and NAME (PATH_MAX buffers; NAME "" names
   the entries bare) extended in place by the entry's name, and put back after. */
static void tar_walk_directory(int out, char *path, char *name, void (*visit)(int, char *, char *)) {
    DIR *dir = opendir(path);
    if (!dir) tar_fail("opendir", path);
    size_t path_len = strlen(path), name_len = strlen(name);
    struct dirent *entry;
    while ((errno = 0, entry = readdir(dir))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        size_t len = strlen(entry->d_name);
        if (path_len + len + 2 > PATH_MAX || name_len + len + 2 > PATH_MAX) {
            errno = ENAMETOOLONG;
            tar_fail("walk", path);
        }
        snprintf(path + path_len, PATH_MAX - path_len, "%s%s", path[path_len - 1] == '/' ? "" : "/", entry->d_name);
        snprintf(name + name_len, PATH_MAX - name_len, "%s%s", name_len ? "/" : "", entry->d_name);
        visit(out, path, name);
        path[path_len] = name[name_len] = '\0';
    }
    if (errno) tar_fail("readdir", path);
    closedir(dir);
}

/* PATH (a buffer of PATH_MAX, extended in place for children) as the entry NAME, and below it. */
static void tar_put_tree(int out, char *path, char *name) {
    struct stat st;
    if (lstat(path, &st) < 0) tar_fail("lstat", path);
    if (S_ISREG(st.st_mode)) {
        tar_put_file(out, path, name, &st);
    } else if (S_ISLNK(st.st_mode)) {
        char link[PATH_MAX];
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0) tar_fail("readlink", path);
        link[n] = '\0';
        tar_put_entry(out, name, &st, '2', link, 0);
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
        tar_put_entry(out, name, &st, S_ISCHR(st.st_mode) ? '3' : S_ISBLK(st.st_mode) ? '4' : '6', "", 0);
    } else if (S_ISDIR(st.st_mode)) {
        tar_put_entry(out, name, &st, '5', "", 0);
        tar_walk_directory(out, path, name, tar_put_tree);
    } /* a socket has no tar form: left out */
}

/* Write the tree at ROOT to OUT as tar, then the end-of-archive blocks. */
static void tar_write_tree(int out, const char *root) {
    static char path[PATH_MAX], name[PATH_MAX];
    static const uint8_t end[2 * TAR_BLOCK];
    snprintf(path, sizeof path, "%s", root);
    snprintf(name, sizeof name, ".");
    tar_put_tree(out, path, name);
    tar_write_all(out, end, sizeof end);
}

static unsigned long long tar_number(const char *field, size_t width) {
    unsigned long long value = 0;
    for (size_t i = 0; i < width && field[i] >= '0' && field[i] <= '7'; i++) value = value * 8 + (unsigned)(field[i] - '0');
    return value;
}

static void tar_skip(int in, unsigned long long len) {
    static uint8_t chunk[65536];
    while (len) {
        size_t n = len < sizeof chunk ? (size_t)len : sizeof chunk;
        if (tar_read_all(in, chunk, n) != 1) { errno = EPIPE; tar_fail("read", "the tar stream (cut)"); }
        len -= n;
    }
}

static unsigned long long tar_padded(unsigned long long len) {
    return (len + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
}

/* Pax records of an 'x' header that matter here: path, linkpath, size. */
static void tar_read_pax(int in, unsigned long long len, char *path, char *link, unsigned long long *size) {
    static char records[3 * PATH_MAX + 1];
    if (len >= sizeof records) { errno = E2BIG; tar_fail("pax header", "of the tar stream"); }
    if (tar_read_all(in, records, len) != 1) { errno = EPIPE; tar_fail("read", "the tar stream (cut)"); }
    tar_skip(in, tar_padded(len) - len);
    records[len] = '\0';
    for (char *at = records; at < records + len;) {
        char *key = strchr(at, ' '), *end;
        unsigned long record = strtoul(at, &end, 10);
        if (!key || record == 0 || at + record > records + len) break;
        char *value = strchr(key, '='), *stop = at + record - 1;  /* the record's '\n' */
        if (value && value < stop) {
            *value++ = '\0';
            *stop = '\0';
            key++;
            if (!strcmp(key, "path")) snprintf(path, PATH_MAX, "%s", value);
            else if (!strcmp(key, "linkpath")) snprintf(link, PATH_MAX, "%s", value);
            else if (!strcmp(key, "size")) *size = strtoull(value, NULL, 10);
        }
        at += record;
    }
}

/* ROOT joined with NAME ("." or "./a/b", as tar_write_tree names them) into OUT; refuses what leaves ROOT. */
static void tar_target(const char *root, const char *name, char *out) {
    if (name[0] == '/') { errno = EPERM; tar_fail("absolute entry refused:", name); }
    for (const char *part = name; *part;) {
        size_t len = strcspn(part, "/");
        if (len == 2 && part[0] == '.' && part[1] == '.') { errno = EPERM; tar_fail("'..' entry refused:", name); }
        part += len + (part[len] == '/');
    }
    while (name[0] == '.' && (name[1] == '/' || name[1] == '\0')) name += name[1] ? 2 : 1;
    while (name[0] == '/') name++;
    if (snprintf(out, PATH_MAX, "%s%s%s", root, name[0] ? "/" : "", name) >= PATH_MAX) {
        errno = ENAMETOOLONG;
        tar_fail("entry", name);
    }
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') out[--len] = '\0';
}

/* Remove what is at PATH unless it is a directory (which an entry then merges into). */
static void tar_clear(const char *path) {
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISDIR(st.st_mode) && unlink(path) < 0) tar_fail("unlink", path);
}

static void tar_put_data(int in, const char *path, mode_t mode, unsigned long long size) {
    static uint8_t chunk[65536];
    tar_clear(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) tar_fail("create", path);
    for (unsigned long long left = size; left;) {
        size_t n = left < sizeof chunk ? (size_t)left : sizeof chunk;
        if (tar_read_all(in, chunk, n) != 1) { errno = EPIPE; tar_fail("read", "the tar stream (cut)"); }
        const uint8_t *p = chunk;
        for (size_t todo = n; todo;) {
            ssize_t w = write(fd, p, todo);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) tar_fail("write", path);
            p += w;
            todo -= (size_t)w;
        }
        left -= n;
    }
    if (fchmod(fd, mode) < 0 || close(fd) < 0) tar_fail("close", path);
    tar_skip(in, tar_padded(size) - size);
}

/* Extract the tar on IN under ROOT (its "." entry is ROOT itself) until its end. */
static void tar_extract(int in, const char *root) {
    static char name[PATH_MAX], target[PATH_MAX], path[PATH_MAX], source[PATH_MAX];
    static const struct tar_header zero;
    struct tar_header h;
    int pax = 0;  /* the last entry was a pax header: its values stand over the next ustar ones */
    unsigned long long size = 0;
    for (;;) {
        int got = tar_read_all(in, &h, sizeof h);
        if (got == 0 || (got > 0 && !memcmp(&h, &zero, sizeof h))) return;  /* end blocks, or an end right after an entry */
        if (got < 0) { errno = EPIPE; tar_fail("read", "the tar stream (cut in a header)"); }
        unsigned sum = 0, want = (unsigned)tar_number(h.chksum, sizeof h.chksum);
        memset(h.chksum, ' ', sizeof h.chksum);
        for (size_t i = 0; i < sizeof h; i++) sum += ((unsigned char *)&h)[i];
        if (sum != want) { errno = EBADMSG; tar_fail("checksum", "of a tar header"); }
        unsigned long long header_size = tar_number(h.size, sizeof h.size);
        if (h.typeflag == 'x') {
            name[0] = target[0] = '\0';
            size = ~0ULL;  /* no size record (yet) */
            tar_read_pax(in, header_size, name, target, &size);
            pax = 1;
            continue;
        }
        if (h.typeflag == 'g') { tar_skip(in, tar_padded(header_size)); continue; }
        if (!pax || !name[0])
            snprintf(name, sizeof name, "%.*s%s%.*s", (int)sizeof h.prefix, h.prefix, h.prefix[0] ? "/" : "",
                     (int)sizeof h.name, h.name);
        if (!pax || !target[0]) snprintf(target, sizeof target, "%.*s", (int)sizeof h.linkname, h.linkname);
        if (!pax || size == ~0ULL) size = header_size;
        pax = 0;
        mode_t mode = (mode_t)tar_number(h.mode, sizeof h.mode) & 07777;
        tar_target(root, name, path);
        if (h.typeflag == '0' || h.typeflag == '\0' || h.typeflag == '7') {
            tar_put_data(in, path, mode, size);
            continue;
        }
        tar_skip(in, tar_padded(size));
        if (h.typeflag == '5') {
            if (mkdir(path, 0700) < 0 && errno != EEXIST) tar_fail("mkdir", path);
            if (chmod(path, mode) < 0) tar_fail("chmod", path);
        } else if (h.typeflag == '2') {
            tar_clear(path);
            if (symlink(target, path) < 0) tar_fail("symlink", path);
        } else if (h.typeflag == '1') {
            tar_target(root, target, source);
            tar_clear(path);
            if (link(source, path) < 0) tar_fail("link", path);
        } else if (h.typeflag == '6') {
            tar_clear(path);
            if (mkfifo(path, mode) < 0) tar_fail("mkfifo", path);
        } else {
            errno = EOPNOTSUPP;
            tar_fail("entry type refused:", path);
        }
    }
}

#endif
