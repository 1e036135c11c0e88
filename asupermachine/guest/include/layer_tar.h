/*
 * The root overlay's upper directory as an OCI image layer (a build step's changes), for the
 * agent's LAYER. init keeps the upper open as UPPER_FD; the agent reaches it as /proc/1/fd/N.
 *
 * overlayfs marks a deleted file with a 0/0 character device and a directory that hides the
 * lower one with the xattr trusted.overlay.opaque=y; the OCI layer format says ".wh.NAME" and
 * "DIR/.wh..wh..opq" (image-spec layer.md). Owners, modes, times, xattrs (but overlayfs' own)
 * and hardlinks are kept. Left out, as docker leaves them out of a commit: what init writes for
 * the network (etc/resolv.conf, etc/hosts, etc/hostname) and the mount points dev, proc, sys.
 */
#ifndef LAYER_TAR_H
#define LAYER_TAR_H

#include <sys/xattr.h>

#include "root_upper.h"
#include "tar_tree.h"

#define OVERLAY_XATTR_PREFIX "trusted.overlay."
#define LAYER_MAX_LINKS 65536

static const char *const layer_left_out[] = { "etc/resolv.conf", "etc/hosts", "etc/hostname", "dev", "proc", "sys" };

struct layer_link { dev_t dev; ino_t ino; char *name; };
static struct layer_link layer_links[LAYER_MAX_LINKS];
static size_t layer_link_count;

/* One pax record whose value may hold any byte: "LEN key=value\n". */
static size_t layer_pax_bytes(char *out, size_t room, const char *key, const char *value, size_t value_len) {
    size_t body = strlen(key) + value_len + 3, len = body + 1;
    while (len != body + (size_t)snprintf(NULL, 0, "%zu", len)) len = body + (size_t)snprintf(NULL, 0, "%zu", len);
    int digits = snprintf(NULL, 0, "%zu %s=", len, key);
    if (len > room) return 0;
    snprintf(out, room, "%zu %s=", len, key);
    memcpy(out + digits, value, value_len);
    out[len - 1] = '\n';
    return len;
}

/* PATH's xattrs as SCHILY.xattr pax records in OUT (overlayfs' own left out); returns their length. */
static size_t layer_xattrs(const char *path, char *out, size_t room) {
    static char names[65536], value[65536], key[512];
    ssize_t names_len = llistxattr(path, names, sizeof names);
    size_t len = 0;
    for (ssize_t at = 0; names_len > 0 && at < names_len; at += (ssize_t)strlen(names + at) + 1) {
        const char *name = names + at;
        if (!strncmp(name, OVERLAY_XATTR_PREFIX, strlen(OVERLAY_XATTR_PREFIX))) continue;
        ssize_t value_len = lgetxattr(path, name, value, sizeof value);
        if (value_len < 0) continue;
        snprintf(key, sizeof key, "SCHILY.xattr.%s", name);
        len += layer_pax_bytes(out + len, room - len, key, value, (size_t)value_len);
    }
    return len;
}

static int layer_is_opaque(const char *path) {
    char flag[2];
    return lgetxattr(path, OVERLAY_XATTR_PREFIX "opaque", flag, sizeof flag) == 1 && flag[0] == 'y';
}

/* An empty regular file NAME: a whiteout or the opaque marker. */
static void layer_put_marker(int out, const char *name, const struct stat *like) {
    struct stat marker = { .st_mode = S_IFREG, .st_uid = 0, .st_gid = 0, .st_mtime = like->st_mtime };
    tar_put_entry(out, name, &marker, '0', "", 0);
}

/* A regular file seen before under another name goes as a hardlink to it; returns 1 if it did. */
static int layer_put_hardlink(int out, const char *name, const struct stat *st) {
    for (size_t i = 0; i < layer_link_count; i++)
        if (layer_links[i].dev == st->st_dev && layer_links[i].ino == st->st_ino) {
            tar_put_entry(out, name, st, '1', layer_links[i].name, 0);
            return 1;
        }
    char *copy = layer_link_count < LAYER_MAX_LINKS ? strdup(name) : NULL;
    if (copy) layer_links[layer_link_count++] = (struct layer_link){ st->st_dev, st->st_ino, copy };
    return 0;
}

/* PATH (a PATH_MAX buffer, extended for children) as the layer entry NAME ("" is the root), and below. */
static void layer_put_tree(int out, char *path, char *name) {
    static char xattrs[65536];
    struct stat st;
    for (size_t i = 0; i < sizeof layer_left_out / sizeof *layer_left_out; i++)
        if (!strcmp(name, layer_left_out[i])) return;
    if ((name[0] ? lstat(path, &st) : stat(path, &st)) < 0) tar_fail("lstat", path);  /* the root: a /proc link */
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
        char whiteout[PATH_MAX];
        if (snprintf(whiteout, sizeof whiteout, "%.*s.wh.%s", (int)(base - name), name, base) >= PATH_MAX) {
            errno = ENAMETOOLONG;
            tar_fail("whiteout", path);
        }
        layer_put_marker(out, whiteout, &st);
        return;
    }
    size_t xattrs_len = name[0] ? layer_xattrs(path, xattrs, sizeof xattrs) : 0;
    if (S_ISREG(st.st_mode)) {
        if (st.st_nlink > 1 && layer_put_hardlink(out, name, &st)) return;
        tar_put_file_with(out, path, name, &st, xattrs, xattrs_len);
    } else if (S_ISLNK(st.st_mode)) {
        char link[PATH_MAX];
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0) tar_fail("readlink", path);
        link[n] = '\0';
        tar_put_entry_with(out, name, &st, '2', link, 0, xattrs, xattrs_len);
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
        tar_put_entry_with(out, name, &st, S_ISCHR(st.st_mode) ? '3' : S_ISBLK(st.st_mode) ? '4' : '6', "", 0,
                           xattrs, xattrs_len);
    } else if (S_ISDIR(st.st_mode)) {
        size_t name_len = strlen(name);
        if (name[0]) {
            tar_put_entry_with(out, name, &st, '5', "", 0, xattrs, xattrs_len);
            if (layer_is_opaque(path)) {
                snprintf(name + name_len, PATH_MAX - name_len, "/.wh..wh..opq");
                layer_put_marker(out, name, &st);
                name[name_len] = '\0';
            }
        }
        tar_walk_directory(out, path, name, layer_put_tree);
    } /* a socket has no tar form: left out */
}

/* Write the layer of the upper directory init keeps open to OUT, then the end-of-archive blocks. */
static void layer_write(int out) {
    static char path[PATH_MAX], name[PATH_MAX];
    static const uint8_t end[2 * TAR_BLOCK];
    tar_keep_owners = 1;
    snprintf(path, sizeof path, "/proc/1/fd/%d", UPPER_FD);
    name[0] = '\0';
    layer_put_tree(out, path, name);
    tar_write_all(out, end, sizeof end);
}

#endif
