/*
 * Give a file in the root new content, as init and the agent do to
 * /etc/hosts and /etc/resolv.conf: written beside it, then renamed over it.
 * rename(2) replaces the name itself, so an image's symlink there (say to
 * ../run/systemd/resolve/stub-resolv.conf, dangling in a VM) becomes a plain
 * file instead of being followed, and a reader never sees half a file.
 * Header-only, like spawn_process.h.
 */
#ifndef ASUPERMACHINE_REPLACE_FILE_H
#define ASUPERMACHINE_REPLACE_FILE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define REPLACE_FILE_SUFFIX ".asupermachine-new"
#define REPLACE_FILE_MODE 0644

/* Make PATH hold LEN bytes of CONTENT (mode 0644); returns 0 or an errno value. */
static int replace_file(const char *path, const char *content, size_t len) {
    char temporary[PATH_MAX];
    if ((size_t)snprintf(temporary, sizeof temporary, "%s" REPLACE_FILE_SUFFIX, path) >= sizeof temporary)
        return ENAMETOOLONG;
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, REPLACE_FILE_MODE);
    if (fd < 0) return errno;
    int err = 0;
    while (len > 0 && err == 0) {
        ssize_t n = write(fd, content, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) err = n < 0 ? errno : EIO;
        else content += n, len -= (size_t)n;
    }
    if (close(fd) < 0 && err == 0) err = errno;
    if (err == 0 && rename(temporary, path) < 0) err = errno;
    if (err != 0) unlink(temporary);
    return err;
}

#endif
