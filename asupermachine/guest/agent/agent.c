/*
 * asupermachine guest agent, built static. Listens on vsock port 1024; each
 * connection runs one process:
 *
 *   agent -> host  HELLO   u32 protocol version, u32 vector state (vector_state.h; init's argv[1])
 *   host  -> agent EXEC    u32 argc, u32 envc, cwd\0, user\0, argv[i]\0..., env[i]\0...
 *                          (empty cwd or user: the image's, which init gives the agent as
 *                          argv[2] and argv[3]; user as in spawn_process.h; env adds to the
 *                          image's, the agent's own environment; PATH, if neither has it,
 *                          is the default; HOME, if neither has it, comes from the user's
 *                          passwd entry; where vector state leaks, vector_state_safe_env
 *                          fills gaps)
 *   agent -> host  STARTED u32 pid          | ERROR i32 errno, message
 *   host  -> agent STDIN data (empty: close stdin) | SIGNAL u32 signo
 *   agent -> host  STDOUT data | STDERR data ... then EXITED i32 status, i32 signal
 *
 * or moves one file:
 *
 *   host  -> agent WRITE_FILE u32 mode, path\0; then STDIN data..., empty STDIN
 *   host  -> agent READ_FILE path\0;            the agent answers STDOUT data...
 *   agent -> host  STARTED u32 0 | ERROR i32 errno, path; at the end EXITED 0, 0 (or ERROR)
 *
 * or moves a tree (or one file) as tar (tar_tree.h), in a child it forks, as a process:
 *
 *   host  -> agent TAR_OUT path\0;           the agent answers STDOUT tar...
 *   host  -> agent TAR_IN path\0, name\0;    then STDIN tar..., empty STDIN. The tree lands at
 *                                           path/name if path is a directory, else at path.
 *   agent -> host  STARTED u32 pid | ERROR i32 errno, path; STDERR says what failed, and
 *                  EXITED status, 0 ends it (the status: 0, or the errno of the failure)
 *
 * or writes the root overlay's changes as an OCI layer (layer_tar.h; a build step's), as a process:
 *
 *   host  -> agent LAYER;  the agent answers STARTED u32 pid, STDOUT tar..., EXITED as TAR_OUT does
 *
 * or mounts a volume (mount_volume.h) on a drive the host has just filled, in a child, as a process:
 *
 *   host  -> agent MOUNT   DEVICE,FS,ro|rw,TARGET\0; the child waits for the drive's medium, then
 *                          mounts it. STARTED u32 pid | ERROR; STDERR says what failed, and
 *                          EXITED status, 0 ends it (the status: 0, or the errno of the failure)
 *
 * or writes every filesystem's dirty data through to its disk (sync(2)), in a child, as a process:
 *
 *   host  -> agent SYNC;   STARTED u32 pid, then EXITED 0, 0 once done
 *
 * A command outlives a connection reset under it (the VM was restored from a snapshot taken while it
 * ran; a connection the host closes kills it): it runs on detached, its output queued (up to a
 * bound, then it waits), until a connection takes it over by its pid:
 *
 *   host  -> agent ATTACH  u32 pid; STARTED u32 pid and the command's frames as above | ERROR ESRCH
 *   host  -> agent LIST    STARTED 0, a STDOUT record per command (u32 pid, u32 flags: 1 detached,
 *                          2 ended; u32 length, its argv NUL-separated), then EXITED 0, 0
 *
 * Before its request, a connection may name the guest (a restored clone's new id):
 *
 *   host  -> agent HOSTNAME name (1..64 bytes, no NUL); no answer (/etc/hosts follows:
 *                           the old name's entries take the new one)
 *
 * and before an EXEC it may ask for a terminal:
 *
 *   host  -> agent TTY    u16 rows, u16 cols; no answer. The process then runs in a
 *                         new session on a pty (its controlling terminal) with stdin,
 *                         stdout and stderr on it: its output comes as STDOUT only,
 *                         STDIN goes through the line discipline (so ^C is SIGINT to
 *                         the foreground group), and the end of STDIN is a VEOF (^D).
 *   host  -> agent RESIZE u16 rows, u16 cols while it runs: the pty's new size (the
 *                         kernel sends SIGWINCH to the foreground group)
 *
 * Every frame is u32 payload length, u16 kind, u16 zero, then the payload
 * (little-endian). asupermachine/agent/protocol.py is the host's side of this.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "mount_volume.h"
#include "replace_file.h"
#include "spawn_process.h"
#include "layer_tar.h"
#include "tar_tree.h"
#include "vector_state.h"

/* include/uapi/linux/vm_sockets.h (musl ships no kernel UAPI headers) */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xFFFFFFFFu
struct sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) - sizeof(unsigned short) - 2 * sizeof(unsigned int)];
};

#define AGENT_PORT 1024
#define PROTOCOL_VERSION 8
#define MAX_FRAME (1u << 20)
#define MAX_SESSIONS 64
/* How long a MOUNT waits for its drive's medium, and how often it looks. */
#define MOUNT_WAIT_MS 30000
#define MOUNT_POLL_MS 2
/* Bytes queued toward the host or a process beyond which the side feeding them is not read. */
#define HIGH_WATER (256u << 10)
#define HOSTS_PATH "/etc/hosts"
/* A bigger /etc/hosts is not one init wrote: leave it be rather than cut it. */
#define MAX_HOSTS_FILE (64u << 10)
/* HOST_NAME_MAX; the kernel's name before anyone sets one */
#define MAX_HOSTNAME 64
#define UNSET_HOSTNAME "(none)"
enum {
    HELLO = 1, EXEC = 2, STARTED = 3, ERROR = 4, STDIN = 5, SIGNAL = 6, STDOUT = 7, STDERR = 8, EXITED = 9,
    WRITE_FILE = 10, READ_FILE = 11, HOSTNAME = 12, TTY = 13, RESIZE = 14, TAR_IN = 15, TAR_OUT = 16, MOUNT = 17, ATTACH = 18, SYNC = 19, LIST = 20, LAYER = 21,
};

/* Bytes waiting for a non-blocking fd that was not ready. */
struct buffer {
    uint8_t *data;
    size_t len;
};

struct session {
    int sock, out, err, in;
    pid_t pid;
    int exited, status;
    int file;      /* a file transfer, not a process: in or out is the file */
    int in_eof;    /* close `in` once `to_in` is written */
    int finished;  /* EXITED is queued: end once `to_host` is written */
    int tty;       /* TTY asked for: the next EXEC runs on a pty; `out` and `in` are its master */
    int command;   /* an EXEC's process: it outlives a reset connection (detached), see detach() */
    int detached;  /* no connection: waiting for an ATTACH, its output queued in `to_host` */
    pid_t started; /* the pid STARTED gave, which ATTACH names */
    size_t head_sent; /* bytes of the first frame in `to_host` already written */
    struct winsize size;
    struct buffer from_host, to_host, to_in;
};
static struct session sessions[MAX_SESSIONS];
static uint32_t vector_state = VECTOR_STATE_UNCHECKED; /* from init: argv[1] */
/* Every exec's defaults, the image's, from init: argv[2], argv[3] and the environment. */
static const char *default_workdir = "", *default_user = "";
extern char **environ;

static int append(struct buffer *b, const void *data, size_t len) {
    uint8_t *grown = realloc(b->data, b->len + len);
    if (!grown && b->len + len) return -1;
    b->data = grown;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static void consume(struct buffer *b, size_t len) {
    memmove(b->data, b->data + len, b->len - len);
    b->len -= len;
}

/* Write what the fd takes now; returns -1 on a real error (not on EAGAIN). */
static int flush(int fd, struct buffer *b) {
    while (b->len) {
        ssize_t n = write(fd, b->data, b->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        if (n <= 0) return -1;
        consume(b, (size_t)n);
    }
    return 0;
}

static size_t head_frame_size(const struct buffer *b, size_t at) {
    uint32_t len;
    memcpy(&len, b->data + at, 4);
    return 8 + (size_t)len;
}

/* Write queued frames to the host; a frame leaves the queue once written whole, so that a
   detached session keeps whole frames only. Returns -1 on a real error (not on EAGAIN). */
static int flush_frames(struct session *s) {
    struct buffer *b = &s->to_host;
    while (b->len > s->head_sent) {
        ssize_t n = write(s->sock, b->data + s->head_sent, b->len - s->head_sent);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        if (n <= 0) return -1;
        s->head_sent += (size_t)n;
        size_t whole = 0;
        while (b->len - whole >= 8 && whole + head_frame_size(b, whole) <= s->head_sent)
            whole += head_frame_size(b, whole);
        consume(b, whole);
        s->head_sent -= whole;
    }
    return 0;
}

/* Queue a frame for the host; it goes out as the socket takes it. */
static void send_frame(struct session *s, uint16_t kind, const void *payload, uint32_t len) {
    uint8_t header[8];
    memcpy(header, &len, 4);
    memcpy(header + 4, &kind, 2);
    memset(header + 6, 0, 2);
    append(&s->to_host, header, 8);
    append(&s->to_host, payload, len);
}

static void end_session(struct session *s) {
    if (s->pid > 0 && !s->exited) kill(s->pid, SIGKILL);  /* the host went away */
    if (s->out >= 0) close(s->out);
    if (s->err >= 0) close(s->err);
    if (s->in >= 0) close(s->in);
    close(s->sock);
    free(s->from_host.data);
    free(s->to_host.data);
    free(s->to_in.data);
    memset(s, 0, sizeof *s);
    s->sock = s->out = s->err = s->in = -1;
    /* A still-running child keeps s->pid in no session: the reaper collects it. */
}

static int in_use(const struct session *s) {
    return s->sock >= 0 || s->detached;
}

/* The connection was reset under a running command: the host went away without closing it, as when
   the VM was restored from a snapshot taken while it ran. Keep the command running and its output
   queued (to HIGH_WATER, then it waits), without what the old host had half received, for an ATTACH. */
static void detach(struct session *s) {
    if (s->head_sent) consume(&s->to_host, head_frame_size(&s->to_host, 0));
    s->head_sent = 0;
    close(s->sock);
    s->sock = -1;
    s->from_host.len = 0;
    s->detached = 1;
}

/* The connection failed with ERR (0: the host closed it): a command is detached if it was reset, else
   the session ends (a command is killed: the host closed it, as it does to stop one). */
static void lose_host(struct session *s, int err) {
    if ((err == ENOTCONN || err == ECONNRESET) && s->command) detach(s);
    else end_session(s);
}

static void send_error(struct session *s, int err, const char *what) {
    uint8_t payload[260];
    int32_t code = err;
    size_t len = strlen(what);
    if (len > sizeof payload - 4) len = sizeof payload - 4;
    memcpy(payload, &code, 4);
    memcpy(payload + 4, what, len);
    send_frame(s, ERROR, payload, (uint32_t)(4 + len));
}

static void set_nonblocking(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* The process's stdio as three pipes (ends [0] read, [1] write); NULL, or what failed. */
static const char *open_pipes(int out[2], int err[2], int in[2]) {
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) return "pipe";
    return NULL;
}

/* The process's stdio as one pty: the slave is its stdin, stdout and stderr; the master is read
   for its output and written with its input (two fds, so each closes on its own). No stderr pipe. */
static const char *open_pty(struct session *s, int out[2], int err[2], int in[2]) {
    char slave_path[64];
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return "posix_openpt";
    int slave = -1;
    const char *failed = NULL;
    if (grantpt(master) || unlockpt(master)) failed = "unlockpt";
    else if (ptsname_r(master, slave_path, sizeof slave_path)) failed = "ptsname";
    else if ((slave = open(slave_path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) failed = slave_path;
    else if (ioctl(master, TIOCSWINSZ, &s->size) < 0) failed = "TIOCSWINSZ";
    else if ((in[1] = fcntl(master, F_DUPFD_CLOEXEC, 0)) < 0) failed = "dup";
    if (failed) {
        int saved = errno;
        close(master);
        if (slave >= 0) close(slave);
        errno = saved;
        return failed;
    }
    out[0] = master;
    out[1] = err[1] = in[0] = slave;
    err[0] = -1;
    return NULL;
}

/* Parse EXEC and spawn; on failure report ERROR. */
static void start(struct session *s, const uint8_t *p, uint32_t len) {
    uint32_t argc, envc;
    if (len < 8) { send_error(s, EINVAL, "short EXEC"); return; }
    memcpy(&argc, p, 4);
    memcpy(&envc, p + 4, 4);
    if (argc == 0 || argc > 4096 || envc > 4096) { send_error(s, EINVAL, "bad EXEC counts"); return; }
    size_t image_envc = 0;
    while (environ[image_envc]) image_envc++;
    /* cwd, user, argv, NULL, env, the image's env, PATH and HOME if missing, the AVX-free settings, NULL */
    char **strings = calloc(argc + envc + image_envc + 6 + VECTOR_STATE_SAFE_ENV_COUNT, sizeof *strings);
    if (!strings) { send_error(s, ENOMEM, "EXEC"); return; }
    const char *cursor = (const char *)p + 8, *end = (const char *)p + len;
    for (uint32_t i = 0; i < 2 + argc + envc; i++) {
        const char *nul = memchr(cursor, 0, (size_t)(end - cursor));
        if (!nul) { free(strings); send_error(s, EINVAL, "EXEC strings not terminated"); return; }
        strings[i] = (char *)cursor;
        cursor = nul + 1;
    }
    const char *cwd = strings[0][0] ? strings[0] : default_workdir;
    const char *user_spec = strings[1][0] ? strings[1] : default_user;
    char **argv = strings + 2, **envp = strings + 2 + argc + 1;
    memmove(envp, strings + 2 + argc, envc * sizeof *strings);
    argv[argc] = NULL;
    int count = (int)envc;
    for (size_t i = 0; i < image_envc; i++)
        if (spawn_env_lacks(envp, (int)envc, environ[i])) envp[count++] = environ[i];

    struct spawn_user user;
    int err = user_spec[0] ? spawn_resolve_user(user_spec, &user) : 0;
    if (err) {
        char detail[300];
        snprintf(detail, sizeof detail, "user %s", user_spec);
        free(strings);
        send_error(s, err, detail);
        return;
    }
    char home[sizeof user.home + 5];
    count = spawn_complete_env(envp, count, user_spec[0] ? &user : NULL, home, sizeof home);
    if (vector_state == VECTOR_STATE_LEAKS)
        for (const char *const *entry = vector_state_safe_env; *entry; entry++)
            if (spawn_env_lacks(envp, count, *entry)) envp[count++] = (char *)*entry;
    envp[count] = NULL;

    int out[2], err_pipe[2], in[2];
    const char *failed = s->tty ? open_pty(s, out, err_pipe, in) : open_pipes(out, err_pipe, in);
    if (failed) {
        free(strings); send_error(s, errno, failed); return;
    }
    /* As login does: the terminal belongs to whoever runs on it (mode 0620, for write(1)). */
    if (s->tty && user_spec[0] && fchown(out[1], user.uid, (gid_t)-1) == 0) fchmod(out[1], 0620);
    struct spawn_request request = { .argv = argv, .envp = envp, .cwd = cwd, .user = user_spec[0] ? &user : NULL,
                                     .stdio = { in[0], out[1], err_pipe[1] }, .exec_fd = -1,
                                     .controlling_tty = s->tty };
    const char *step;
    int rc = spawn_process(&request, &s->pid, &step);
    close(out[1]);
    if (err_pipe[1] != out[1]) close(err_pipe[1]);
    if (in[0] != out[1]) close(in[0]);
    if (rc != 0) {
        close(out[0]); close(in[1]);
        if (err_pipe[0] >= 0) close(err_pipe[0]);
        s->pid = 0;
        char detail[256];
        snprintf(detail, sizeof detail, "%s: %s", step, strcmp(step, "chdir") == 0 ? cwd : argv[0]);
        send_error(s, rc, detail);
    } else {
        s->out = out[0]; s->err = err_pipe[0]; s->in = in[1];
        set_nonblocking(s->out);
        if (s->err >= 0) set_nonblocking(s->err);
        set_nonblocking(s->in);
        s->command = 1;
        s->started = s->pid;
        uint32_t pid = (uint32_t)s->pid;
        send_frame(s, STARTED, &pid, 4);
    }
    free(strings);
}

/* Open the file of a WRITE_FILE or READ_FILE; the transfer then runs as a process would. */
static void open_file(struct session *s, uint16_t kind, const uint8_t *p, uint32_t len) {
    uint32_t mode = 0;
    if (kind == WRITE_FILE) {
        if (len < 4) { send_error(s, EINVAL, "short WRITE_FILE"); return; }
        memcpy(&mode, p, 4);
        p += 4;
        len -= 4;
    }
    const char *path = (const char *)p;
    if (len == 0 || memchr(path, 0, len) != path + len - 1) { send_error(s, EINVAL, "path not terminated"); return; }
    int fd = kind == WRITE_FILE ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777)
                                : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { send_error(s, errno, path); return; }
    if (kind == WRITE_FILE && fchmod(fd, mode & 07777) < 0) {  /* the umask must not narrow it */
        send_error(s, errno, path);
        close(fd);
        return;
    }
    s->file = 1;
    if (kind == WRITE_FILE) s->in = fd;
    else s->out = fd;
    uint32_t zero = 0;
    send_frame(s, STARTED, &zero, 4);
    if (kind == READ_FILE) s->exited = 1;  /* done once the content is drained */
}

/* Fork a child with the session's stdio as pipes, as a process the host sees start and end; returns
   0 in the child (which must _exit), its pid in the agent, or -1 after reporting ERROR. */
static pid_t fork_child(struct session *s) {
    int out[2], err_pipe[2], in[2];
    if (open_pipes(out, err_pipe, in)) { send_error(s, errno, "pipe"); return -1; }
    pid_t pid = fork();
    if (pid == 0) {
        /* Only the pipes: the other sessions' connections must close when the agent closes them. */
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err_pipe[1], 2) < 0) _exit(EIO);
        for (int fd = 3; fd < 1024; fd++) close(fd);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        umask(0);
        return 0;
    }
    int saved = errno;
    close(out[1]); close(err_pipe[1]); close(in[0]);
    if (pid < 0) {
        close(out[0]); close(err_pipe[0]); close(in[1]);
        send_error(s, saved, "fork");
        return -1;
    }
    s->pid = pid;
    s->out = out[0]; s->err = err_pipe[0]; s->in = in[1];
    set_nonblocking(s->out);
    set_nonblocking(s->err);
    set_nonblocking(s->in);
    uint32_t started = (uint32_t)pid;
    send_frame(s, STARTED, &started, 4);
    return pid;
}

/* Fork the child that writes the tar of a TAR_OUT's tree, or extracts a TAR_IN's; it runs as a process. */
static void start_tree(struct session *s, uint16_t kind, const uint8_t *p, uint32_t len) {
    const char *path = (const char *)p, *end = path + len, *nul = memchr(path, 0, len);
    const char *name = nul ? nul + 1 : end, *name_end = name < end ? memchr(name, 0, (size_t)(end - name)) : NULL;
    if (!nul || !path[0] || (kind == TAR_IN ? !name_end || name_end + 1 != end || !name[0] || strchr(name, '/')
                                                || !strcmp(name, "..")
                                            : name != end)) {
        send_error(s, EINVAL, kind == TAR_IN ? "bad TAR_IN" : "bad TAR_OUT");
        return;
    }
    static char root[PATH_MAX];
    struct stat st;
    if (kind == TAR_OUT && lstat(path, &st) < 0) { send_error(s, errno, path); return; }
    int is_directory = kind == TAR_IN && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (snprintf(root, sizeof root, "%s%s%s", path, is_directory ? "/" : "", is_directory ? name : "") >= PATH_MAX) {
        send_error(s, ENAMETOOLONG, path);
        return;
    }
    if (fork_child(s) == 0) {
        if (kind == TAR_OUT) tar_write_tree(1, path);
        else tar_extract(0, root);
        _exit(0);
    }
}

/* Wait up to MOUNT_WAIT_MS for DEVICE (/dev/NAME) to have sectors: a drive the host filled while
   the VM runs has them once the kernel has handled the config-change interrupt. */
static int wait_for_medium(const char *device, size_t len) {
    char path[96];
    if (len <= 5 || len > 32 || strncmp(device, "/dev/", 5) || memchr(device + 5, '/', len - 5)) return EINVAL;
    snprintf(path, sizeof path, "/sys/class/block/%.*s/size", (int)(len - 5), device + 5);
    for (int waited = 0; waited < MOUNT_WAIT_MS; waited += MOUNT_POLL_MS) {
        char size[32] = "";
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno;
        ssize_t n = read(fd, size, sizeof size - 1);
        close(fd);
        if (n > 0 && strtoull(size, NULL, 10) > 0) return 0;
        usleep(MOUNT_POLL_MS * 1000);
    }
    return ENOMEDIUM;
}

/* MOUNT: in a child, as a process, wait for the drive's medium and mount the volume. */
static void start_mount(struct session *s, const uint8_t *p, uint32_t len) {
    static char spec[PATH_MAX + 64];
    const char *comma = memchr(p, ',', len);
    if (len == 0 || len >= sizeof spec || memchr(p, 0, len) != (const char *)p + len - 1 || !comma) {
        send_error(s, EINVAL, "bad MOUNT");
        return;
    }
    memcpy(spec, p, len);
    if (fork_child(s) == 0) {
        int err = wait_for_medium(spec, (size_t)(comma - (const char *)p));
        if (err == 0) err = mount_volume(spec);
        if (err != 0) fprintf(stderr, "mount %s: %s\n", (const char *)p, strerror(err));
        _exit(err);
    }
}

/* Rename OLD to NEW wherever it is a name field of /etc/hosts, every other byte as it was. */
static void rename_in_hosts(const char *old, const char *new) {
    static char text[MAX_HOSTS_FILE];
    struct buffer out = { 0 };
    size_t old_len = strlen(old), len = 0;
    int changed = 0, failed = 0, fd = open(HOSTS_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    for (ssize_t n = 1; n > 0 && len < sizeof text;) {
        n = read(fd, text + len, sizeof text - len);
        if (n > 0) len += (size_t)n;
        else if (n < 0 && errno == EINTR) n = 1;
        else if (n < 0) len = sizeof text;  /* unreadable: change nothing */
    }
    close(fd);
    if (len == sizeof text) return;
    for (size_t at = 0, end, names = 0; at < len; at = end) {
        int separator = memchr(" \t\n#", text[at], 4) != NULL;
        end = at + 1;
        if (text[at] == '#')  /* a comment, to the end of its line */
            while (end < len && text[end] != '\n') end++;
        else if (!separator)  /* a field: the address, then its names */
            while (end < len && !memchr(" \t\n#", text[end], 4)) end++;
        int is_old = !separator && names++ > 0 && end - at == old_len && memcmp(text + at, old, old_len) == 0;
        if (text[at] == '\n') names = 0;
        failed |= append(&out, is_old ? new : text + at, is_old ? strlen(new) : end - at);
        changed |= is_old;
    }
    if (changed && !failed) replace_file(HOSTS_PATH, (const char *)out.data, out.len);
    free(out.data);
}

/* Take the host's name for this clone, and the entries that carried the old one. */
static void rename_guest(const uint8_t *name, uint32_t len) {
    char old[MAX_HOSTNAME + 1] = "", new[MAX_HOSTNAME + 1] = "";
    memcpy(new, name, len);
    if (gethostname(old, sizeof old - 1) < 0) old[0] = '\0';
    if (strcmp(old, new) == 0 || sethostname(new, len) < 0) return;
    /* localhost and the kernel's unset name are nobody's own entries */
    if (old[0] && strcmp(old, UNSET_HOSTNAME) != 0 && strcmp(old, "localhost") != 0) rename_in_hosts(old, new);
}

/* LIST: a STDOUT record per command the agent has (u32 pid, u32 flags: 1 detached, 2 ended; u32 length,
   its argv NUL-separated as /proc has it, empty once it ended), then EXITED 0, 0. */
static void list_commands(struct session *s) {
    uint32_t zero = 0;
    send_frame(s, STARTED, &zero, 4);
    for (int i = 0; i < MAX_SESSIONS; i++) {
        const struct session *c = &sessions[i];
        if (!in_use(c) || !c->command || c == s) continue;
        uint8_t record[12 + 4096];
        ssize_t n = 0;
        char path[32];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)c->started);
        int fd = c->exited || c->finished ? -1 : open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            n = read(fd, record + 12, sizeof record - 12);
            close(fd);
        }
        uint32_t fields[3] = { (uint32_t)c->started, (uint32_t)(c->detached | (c->exited || c->finished) << 1),
                               (uint32_t)(n > 0 ? n : 0) };
        memcpy(record, fields, sizeof fields);
        send_frame(s, STDOUT, record, (uint32_t)(12 + fields[2]));
    }
    int32_t done[2] = { 0, 0 };
    send_frame(s, EXITED, done, sizeof done);
    s->finished = 1;
}

/* ATTACH: this connection takes over the detached command PID, STARTED first, then what it queued. */
static void attach(struct session *s, const uint8_t *p, uint32_t len) {
    uint32_t pid = 0;
    if (len == 4) memcpy(&pid, p, 4);
    struct session *found = NULL;
    for (int i = 0; i < MAX_SESSIONS && pid; i++)
        if (sessions[i].detached && sessions[i].started == (pid_t)pid) found = &sessions[i];
    if (!found) { send_error(s, ESRCH, "no detached process with that pid"); return; }
    struct buffer queued = found->to_host;
    found->to_host = s->to_host;  /* this connection's HELLO, perhaps not all written yet */
    found->head_sent = s->head_sent;
    send_frame(found, STARTED, &pid, 4);
    append(&found->to_host, queued.data, queued.len);
    free(queued.data);
    found->sock = s->sock;
    found->from_host = s->from_host;  /* being parsed by read_host: it stays this slot's */
    found->detached = 0;
    *s = *found;
    memset(found, 0, sizeof *found);
    found->sock = found->out = found->err = found->in = -1;
}

static void set_size(struct session *s, const uint8_t *p) {
    uint16_t rows, cols;
    memcpy(&rows, p, 2);
    memcpy(&cols, p + 2, 2);
    s->size = (struct winsize){ .ws_row = rows, .ws_col = cols };
}

static void handle_frame(struct session *s, uint16_t kind, const uint8_t *p, uint32_t len) {
    int idle = s->pid == 0 && !s->file;
    if (kind == EXEC && idle) {
        start(s, p, len);
    } else if ((kind == WRITE_FILE || kind == READ_FILE) && idle) {
        open_file(s, kind, p, len);
    } else if ((kind == TAR_IN || kind == TAR_OUT) && idle) {
        start_tree(s, kind, p, len);
    } else if (kind == MOUNT && idle) {
        start_mount(s, p, len);
    } else if (kind == ATTACH && idle) {
        attach(s, p, len);
    } else if (kind == LIST && idle) {
        list_commands(s);
    } else if (kind == LAYER && idle && len == 0) {
        if (fork_child(s) == 0) {
            layer_write(1);
            _exit(0);
        }
    } else if (kind == SYNC && idle) {
        if (fork_child(s) == 0) {
            sync();
            _exit(0);
        }
    } else if (kind == HOSTNAME && idle && len >= 1 && len <= MAX_HOSTNAME && !memchr(p, 0, len)) {
        rename_guest(p, len);
    } else if (kind == TTY && idle && len == 4) {
        s->tty = 1;
        set_size(s, p);
    } else if (kind == RESIZE && len == 4 && s->tty && s->out >= 0) {
        set_size(s, p);
        ioctl(s->out, TIOCSWINSZ, &s->size);
    } else if (kind == STDIN && s->in >= 0 && !s->in_eof) {
        if (len == 0) s->in_eof = 1;
        else append(&s->to_in, p, len);
    } else if (kind == SIGNAL && len == 4 && s->pid > 0 && !s->exited) {
        uint32_t signo;
        memcpy(&signo, p, 4);
        kill(s->pid, (int)signo);
    }
}

/* Write queued input to the process (or file); close it after the host's end of input. */
static void pump_in(struct session *s) {
    if (flush(s->in, &s->to_in) < 0) {
        if (s->file) {
            send_error(s, errno, "write");
            close(s->in);
            s->in = -1;
            s->file = 0;  /* nothing more to report: end_session on the host's close */
            return;
        }
        s->to_in.len = 0;  /* the process closed its stdin: drop what it will never read */
        s->in_eof = 1;
    }
    if (s->in_eof && s->to_in.len == 0) {
        if (s->tty) {
            struct termios modes;
            char eof = tcgetattr(s->in, &modes) == 0 ? (char)modes.c_cc[VEOF] : 4;
            if (write(s->in, &eof, 1) < 0) {}  /* a full pty drops it: the process reads on regardless */
        }
        int closed = close(s->in);
        s->in = -1;
        if (s->file) {
            if (closed < 0) send_error(s, errno, "close");
            else s->exited = 1;
        }
    }
}

/* Read from the host; returns 0, or -1 once the connection is gone (see lose_host) with errno
   set (0: closed, or a frame too long). */
static int read_host(struct session *s) {
    uint8_t chunk[65536];
    ssize_t n = read(s->sock, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (n == 0) errno = 0;
    if (n <= 0) return -1;
    if (append(&s->from_host, chunk, (size_t)n)) return -1;
    while (s->from_host.len >= 8) {
        uint32_t len;
        uint16_t kind;
        memcpy(&len, s->from_host.data, 4);
        memcpy(&kind, s->from_host.data + 4, 2);
        if (len > MAX_FRAME) { errno = 0; return -1; }
        if (s->from_host.len < 8 + (size_t)len) break;
        handle_frame(s, kind, s->from_host.data + 8, len);
        consume(&s->from_host, 8 + (size_t)len);
    }
    if (s->in >= 0) pump_in(s);
    return 0;
}

/* Forward one pipe's output; closes it at end of file. */
static void pump(struct session *s, int *fd, uint16_t kind) {
    uint8_t buffer[65536];
    ssize_t n = read(*fd, buffer, sizeof buffer);
    if (n > 0) {
        send_frame(s, kind, buffer, (uint32_t)n);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(*fd);
        *fd = -1;
    }
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < MAX_SESSIONS; i++)
            if (in_use(&sessions[i]) && sessions[i].pid == pid) {
                sessions[i].exited = 1;
                sessions[i].status = status;
            }
}

static void accept_session(int listener) {
    int sock = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    int free_slot = 0;
    for (int i = 0; i < MAX_SESSIONS; i++) free_slot |= !in_use(&sessions[i]);
    for (int i = 0; i < MAX_SESSIONS && !free_slot; i++)
        if (sessions[i].detached && sessions[i].finished) {  /* ended, never attached: its output goes */
            end_session(&sessions[i]);
            free_slot = 1;
        }
    for (int i = 0; sock >= 0 && i < MAX_SESSIONS; i++)
        if (!in_use(&sessions[i])) {
            sessions[i].sock = sock;
            uint32_t hello[2] = { PROTOCOL_VERSION, vector_state };
            send_frame(&sessions[i], HELLO, hello, sizeof hello);
            return;
        }
    if (sock >= 0) close(sock);  /* every session slot is busy */
}

/* Queue EXITED once the process has exited and its output is drained; end after it is sent. */
static void finish_if_done(struct session *s) {
    if (s->exited && s->tty && s->out >= 0) {
        /* What the process wrote before it ended is in the pty; anything it left running
           in the background may hold the terminal open, but the session ends with it. */
        uint8_t buffer[65536];
        ssize_t n;
        while ((n = read(s->out, buffer, sizeof buffer)) > 0) send_frame(s, STDOUT, buffer, (uint32_t)n);
        close(s->out);
        s->out = -1;
    }
    if (s->exited && !s->finished && s->out < 0 && s->err < 0) {
        int32_t result[2] = { WIFEXITED(s->status) ? WEXITSTATUS(s->status) : -1,
                              WIFSIGNALED(s->status) ? WTERMSIG(s->status) : 0 };
        send_frame(s, EXITED, result, sizeof result);
        s->pid = 0;
        s->finished = 1;
    }
    if (s->detached) return;  /* what it queued waits for an ATTACH */
    if (flush_frames(s) < 0) lose_host(s, errno);
    else if (s->finished && s->to_host.len == 0) end_session(s);
}

int main(int argc, char **argv) {
    enum { SOCK, OUT, ERR, IN };
    if (argc > 1) vector_state = (uint32_t)atoi(argv[1]);
    if (argc > 3) default_workdir = argv[2], default_user = argv[3];
    for (int i = 0; i < MAX_SESSIONS; i++) sessions[i].sock = sessions[i].out = sessions[i].err = sessions[i].in = -1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child, NULL);
    int children = signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
    int listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = AGENT_PORT };
    if (children < 0 || listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 16)) {
        perror("asupermachine-agent: vsock listen");
        return 1;
    }
    for (;;) {
        struct pollfd fds[2 + 4 * MAX_SESSIONS];
        struct { struct session *s; int which; } owners[2 + 4 * MAX_SESSIONS];
        int count = 0;
        fds[count] = (struct pollfd){ .fd = listener, .events = POLLIN }; owners[count++].s = NULL;
        fds[count] = (struct pollfd){ .fd = children, .events = POLLIN }; owners[count++].s = NULL;
        for (int i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = &sessions[i];
            if (!in_use(s)) continue;
            /* Backpressure: stop reading a side whose destination has a backlog, so
               one slow reader stalls only its own session (and, by vsock credit, its host writer). */
            short wants[4] = {
                (short)((s->to_in.len < HIGH_WATER ? POLLIN : 0) | (s->to_host.len ? POLLOUT : 0)),
                s->to_host.len < HIGH_WATER ? POLLIN : 0,
                s->to_host.len < HIGH_WATER ? POLLIN : 0,
                s->to_in.len ? POLLOUT : 0,
            };
            int streams[4] = { s->sock, s->out, s->err, s->in };
            for (int which = SOCK; which <= IN; which++)
                if (streams[which] >= 0 && wants[which]) {
                    fds[count] = (struct pollfd){ .fd = streams[which], .events = wants[which] };
                    owners[count].s = s; owners[count++].which = which;
                }
        }
        if (poll(fds, (nfds_t)count, -1) < 0) continue;
        if (fds[1].revents) {
            struct signalfd_siginfo info;
            while (read(children, &info, sizeof info) > 0) {}
            reap();
        }
        if (fds[0].revents & POLLIN) accept_session(listener);
        for (int i = 2; i < count; i++) {
            struct session *s = owners[i].s;
            if (!fds[i].revents || !in_use(s)) continue;
            int which = owners[i].which;
            if (which == SOCK && (s->sock < 0 || !(fds[i].revents & ~POLLOUT))) continue;  /* detached meanwhile */
            if (which == SOCK && read_host(s)) lose_host(s, errno);
            else if (which == OUT && s->out >= 0) pump(s, &s->out, STDOUT);
            else if (which == ERR && s->err >= 0) pump(s, &s->err, STDERR);
            else if (which == IN && s->in >= 0) pump_in(s);
        }
        for (int i = 0; i < MAX_SESSIONS; i++)
            if (in_use(&sessions[i])) finish_if_done(&sessions[i]);
    }
}
