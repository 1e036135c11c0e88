/*
 * Mount a volume, as init does at boot and the agent does while the VM runs.
 * A spec is DEVICE,FS,ro|rw,TARGET (the target last: it may hold commas).
 * Writable volumes commit their journal every second (WRITABLE_OPTIONS): the VMM
 * has the agent sync before it stops or pauses a guest, and a guest stopped
 * without that (its process killed) loses at most the last second's writes,
 * its filesystem whole once the next mount replays the journal. A read-only one is made read-only at the block layer too:
 * a drive filled while the VM runs was offered writable (virtio's read-only
 * feature is fixed when the driver binds), and the host refuses its writes.
 * Header-only, like spawn_process.h.
 */
#ifndef ASUPERMACHINE_MOUNT_VOLUME_H
#define ASUPERMACHINE_MOUNT_VOLUME_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define WRITABLE_OPTIONS "commit=1"

/* Make every missing directory of the absolute path; returns 0 or an errno value. */
static int make_path(char *path) {
    for (char *slash = strchr(path + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash) *slash = '\0';
        int err = mkdir(path, 0755) < 0 && errno != EEXIST ? errno : 0;
        if (slash) *slash = '/';
        if (err != 0) return err;
        if (!slash) return 0;
    }
}

/* Set the block device read-only for the kernel (BLKROSET); returns 0 or an errno value. */
static int set_read_only(const char *device) {
    int fd = open(device, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    int on = 1, err = ioctl(fd, BLKROSET, &on) < 0 ? errno : 0;
    close(fd);
    return err;
}

/* Mount one spec (modified in place); returns 0 or an errno value. */
static int mount_volume(char *spec) {
    char *fs = strchr(spec, ',');
    char *mode = fs ? strchr(fs + 1, ',') : NULL;
    char *target = mode ? strchr(mode + 1, ',') : NULL;
    if (!target || target[1] != '/' || strncmp(spec, "/dev/", 5) != 0) return EINVAL;
    *fs++ = *mode++ = *target++ = '\0';
    int read_only = strcmp(mode, "ro") == 0;
    unsigned long flags = MS_NOATIME | (read_only ? MS_RDONLY : 0);
    int err = read_only ? set_read_only(spec) : 0;
    if (err == 0) err = make_path(target);
    if (err == 0 && mount(spec, target, fs, flags, read_only ? NULL : WRITABLE_OPTIONS) < 0) err = errno;
    return err;
}

#endif
