/*
 * asupermachine guest init (PID 1), built static.
 *
 * Mounts /proc, /sys and /dev; with a root device, mounts it read-only
 * (erofs or ext4) under a writable tmpfs overlay and moves into it; mounts
 * the volumes in it; prints
 * the ready line with the guest's uptime; starts the agent (which stays in
 * the initramfs, never in the user's root); runs the command that
 * its configuration names; reaps every child; and ends the VM reporting
 * the command's exit status through reboot(2) RESTART2 "exit=N" (the
 * project's kernel turns that into a write to the VMM's exit-status port).
 * Without a command it stays up, a sandbox for the agent. Before the agent
 * starts it checks that AVX state survives a context switch (vector_state.h)
 * and hands the agent the result, and sets up the network (guest_network.h):
 * lo always, eth0 and the root's /etc/hosts and /etc/resolv.conf when asked.
 *
 * Its configuration is CONFIG_PATH, a file the VMM appends to the initramfs
 * for each boot (asupermachine/_core/init_config.py writes it), which init
 * reads and deletes first: NUL-terminated KEY=VALUE records, the first
 * CONFIG_FORMAT, then
 *   root=DEVICE        the root filesystem
 *   changes=DEVICE     an ext4 disk for the root overlay's upper (what the
 *                      guest changes in its root) instead of memory
 *   mount=DEVICE,FS,ro|rw,TARGET
 *                      a volume to mount at TARGET in the root, made if
 *                      missing (repeatable, mounted in order); init fails
 *                      rather than run the command without it
 *   hostname=NAME      the guest's hostname
 *   net=ADDRESS/PREFIX,GATEWAY,MTU[,DNS]
 *                      eth0's IPv4 address, default route and MTU, and the
 *                      resolver, e.g. 10.0.2.15/24,10.0.2.2,32744,10.0.2.3
 *   workdir=DIR        the command's working directory
 *   user=USER          the command's user: name, uid, user:group, uid:gid
 *   env=NAME=VALUE     the command's environment (repeatable, a later one wins)
 *   arg=WORD           the command, a word per record (none: serve the agent)
 * workdir, user and env are also every exec's defaults: the agent gets them as
 * its argv[2], argv[3] and environment. Of what the kernel hands init as argv
 * and environment, only TERM is used (for the command); PATH and HOME, where
 * the image sets neither, are completed as for an exec (spawn_complete_env).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest_network.h"
#include "mount_volume.h"
#include "root_upper.h"
#include "spawn_process.h"
#include "vector_state.h"

/* include/uapi/linux/reboot.h (musl ships no kernel UAPI headers) */
#define LINUX_REBOOT_MAGIC1 0xfee1deadU
#define LINUX_REBOOT_MAGIC2 672274793U
#define LINUX_REBOOT_CMD_RESTART2 0xA1B2C3D4U
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321FEDCU

#define READY_MARKER "asupermachine-init: ready"
/* asupermachine/_core/init_config.py CONFIG_NAME and FORMAT */
#define CONFIG_PATH "/.asupermachine-init"
#define CONFIG_FORMAT "asupermachine-init=1"
#define AGENT_PATH "/agent"
#define STATUS_COMMAND_NOT_FOUND 127
#define STATUS_INIT_FAILURE 125

extern char **environ;

static void say(const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(STDOUT_FILENO, text, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

static void mount_or_warn(const char *source, const char *target, const char *type, unsigned long flags) {
    char message[160];
    mkdir(target, 0755);
    if (mount(source, target, type, flags, NULL) < 0 && errno != EBUSY) {
        snprintf(message, sizeof message, "asupermachine-init: mount %s on %s: %s\n", type, target,
                 strerror(errno));
        say(message);
    }
}

static void print_ready_line(void) {
    char uptime[64] = "?", line[128];
    int fd = open("/proc/uptime", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, uptime, sizeof uptime - 1);
        close(fd);
        uptime[n > 0 ? n : 0] = '\0';
        uptime[strcspn(uptime, " \n")] = '\0';
    }
    snprintf(line, sizeof line, READY_MARKER " uptime=%ss\n", uptime);
    say(line);
}

struct options {
    const char *root, *changes, *workdir, *user, *hostname, *network;
    char **env;         /* the command's: the kernel's TERM, then the image's */
    char **image_env;   /* the image's alone: the agent's defaults for exec */
    char **command;
    char **mounts;      /* mount= values, NULL-terminated */
    int env_count, image_env_count;
};

static void report(const char *what, const char *detail, int err) {
    char message[256];
    snprintf(message, sizeof message, "asupermachine-init: %s %s: %s\n", what, detail, strerror(err));
    say(message);
}

/* Set NAME=VALUE in env[0..*count), replacing an earlier NAME (env has room for one more). */
static void put_env(char **env, int *count, char *entry) {
    size_t name_len = strcspn(entry, "=");
    for (int i = 0; i < *count; i++)
        if (strncmp(env[i], entry, name_len + 1) == 0) {
            env[i] = entry;
            return;
        }
    env[(*count)++] = entry;
}

/* The configuration file's bytes, NUL-terminated, with *size set; the file is gone after. NULL: none. */
static char *read_config(size_t *size) {
    struct stat st;
    char *data = NULL;
    int fd = open(CONFIG_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    if (fstat(fd, &st) == 0 && (data = malloc((size_t)st.st_size + 1)) != NULL) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        data[got] = '\0';
        *size = got;
    }
    close(fd);
    unlink(CONFIG_PATH);  /* it holds the image's environment, secrets too */
    return data;
}

/* Fill options from the configuration (records point into it); returns 0 or an errno value. */
static int parse_config(char *data, size_t size, struct options *options) {
    size_t records = 0, args = 0, mounts = 0;
    char *end = data + size;
    if (size < sizeof CONFIG_FORMAT || strcmp(data, CONFIG_FORMAT) != 0) return EINVAL;
    for (char *p = data; p < end; p += strlen(p) + 1) records++;
    options->env = calloc(records + VECTOR_STATE_SAFE_ENV_COUNT + 4, sizeof *options->env);
    options->image_env = calloc(records + 1, sizeof *options->image_env);
    options->command = calloc(records + 1, sizeof *options->command);
    options->mounts = calloc(records + 1, sizeof *options->mounts);
    if (!options->env || !options->image_env || !options->command || !options->mounts) return ENOMEM;
    for (char **entry = environ; *entry; entry++)
        if (strncmp(*entry, "TERM=", 5) == 0) put_env(options->env, &options->env_count, *entry);
    for (char *p = data + sizeof CONFIG_FORMAT, *next; p < end; p = next) {
        char *value = strchr(p, '=');
        next = p + strlen(p) + 1;
        if (value == NULL) continue;
        *value++ = '\0';
        if (strcmp(p, "root") == 0) options->root = value;
        else if (strcmp(p, "changes") == 0) options->changes = value;
        else if (strcmp(p, "hostname") == 0) options->hostname = value;
        else if (strcmp(p, "net") == 0) options->network = value;
        else if (strcmp(p, "workdir") == 0) options->workdir = value;
        else if (strcmp(p, "user") == 0) options->user = value;
        else if (strcmp(p, "arg") == 0) options->command[args++] = value;
        else if (strcmp(p, "mount") == 0) options->mounts[mounts++] = value;
        else if (strcmp(p, "env") == 0 && strchr(value, '=')) {
            put_env(options->env, &options->env_count, value);
            put_env(options->image_env, &options->image_env_count, value);
        }
    }
    return 0;
}

/* Where vector state leaks between tasks, say so and keep the command's runtimes off AVX. */
static enum vector_state check_vector_state(struct options *options) {
    enum vector_state state = vector_state_check();
    if (state != VECTOR_STATE_LEAKS) return state;
    say("asupermachine-init: AVX registers leak between tasks on this CPU; AVX-free settings are in the environment\n");
    for (const char *const *entry = vector_state_safe_env; *entry; entry++)
        if (spawn_env_lacks(options->env, options->env_count, *entry))
            options->env[options->env_count++] = (char *)*entry;
    return state;
}

/* Run the command and reap every child until it ends; returns a shell-style status. */
static int run_command(char **argv, struct options *options) {
    struct spawn_user user;
    char home[sizeof user.home + 5];
    struct spawn_request request = { .argv = argv, .envp = options->env, .cwd = options->workdir,
                                     .stdio = { -1, -1, -1 }, .exec_fd = -1 };
    const char *step = "user";
    pid_t child;
    int err = options->user ? spawn_resolve_user(options->user, &user) : 0;
    request.user = options->user ? &user : NULL;
    options->env_count = spawn_complete_env(options->env, options->env_count, request.user, home, sizeof home);
    if (err == 0) err = spawn_process(&request, &child, &step);
    if (err != 0) {
        report(step, argv[0], err);
        return err == ENOENT && strcmp(step, "exec") == 0 ? STATUS_COMMAND_NOT_FOUND : STATUS_INIT_FAILURE;
    }
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            return STATUS_INIT_FAILURE;
        }
        if (pid != child) continue;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    }
}

/* The agent serves exec and files over vsock; the VM works without it, only less. */
static void start_agent(int agent, enum vector_state vectors, const struct options *options) {
    char state[2] = { (char)('0' + vectors), '\0' };
    char *argv[] = { AGENT_PATH, state, (char *)(options->workdir ? options->workdir : ""),
                     (char *)(options->user ? options->user : ""), NULL };
    struct spawn_request request = { .argv = argv, .envp = options->image_env, .stdio = { -1, -1, -1 },
                                     .exec_fd = agent };
    const char *step;
    pid_t pid;
    int err = agent < 0 ? errno : spawn_process(&request, &pid, &step);
    if (err != 0 && err != ENOENT) report("start", AGENT_PATH, err);
}

/* Mount the root read-only under an overlay whose changes go to CHANGES (an ext4 disk) or, without one,
   memory, and make it "/"; returns 0 or an errno value. */
static int enter_root(const char *device, const char *changes) {
    static const char *const moved[] = { "/dev", "/proc", "/sys" };
    char target[32];
    mkdir("/overlay", 0755);
    mkdir("/root", 0755);
    /* noinit_itable: no kernel thread zeroing a fresh disk's inode tables while the guest works */
    if (changes ? mount(changes, "/overlay", "ext4", MS_NOSUID | MS_NODEV, "noinit_itable") < 0
                : mount("tmpfs", "/overlay", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        return errno;
    mkdir("/overlay/lower", 0755);
    mkdir("/overlay/upper", 0755);
    mkdir("/overlay/work", 0755);
    if (mount(device, "/overlay/lower", "erofs", MS_RDONLY, NULL) < 0 &&
        mount(device, "/overlay/lower", "ext4", MS_RDONLY, NULL) < 0)
        return errno;
    if (mount("overlay", "/root", "overlay", 0,
              "lowerdir=/overlay/lower,upperdir=/overlay/upper,workdir=/overlay/work") < 0)
        return errno;
    int upper = open("/overlay/upper", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (upper >= 0 && upper != UPPER_FD) {
        dup3(upper, UPPER_FD, O_CLOEXEC);
        close(upper);
    }
    for (size_t i = 0; i < sizeof moved / sizeof *moved; i++) {
        snprintf(target, sizeof target, "/root%s", moved[i]);
        mkdir(target, 0755);
        if (mount(moved[i], target, NULL, MS_MOVE, NULL) < 0) return errno;
    }
    if (chdir("/root") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
        return errno;
    return 0;
}

/* No command: stay up as a sandbox for the agent, reaping orphans as PID 1 must. */
static void serve_forever(void) {
    for (;;)
        if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD) pause();
}

static void end_vm(int status) {
    char command[32];
    snprintf(command, sizeof command, "exit=%d", status & 0xff);
    sync();
    syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART2, command);
    /* Only reached if the kernel refused: power off instead. */
    syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, NULL);
    for (;;) pause();
}

int main(void) {
    static char no_config[] = CONFIG_FORMAT;
    struct options options = { 0 };
    size_t size = sizeof no_config;
    char *config = read_config(&size);
    int err = parse_config(config ? config : no_config, size, &options);
    if (err != 0) {
        report("read", CONFIG_PATH, err);
        end_vm(STATUS_INIT_FAILURE);
    }
    mount_or_warn("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_warn("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_warn("devtmpfs", "/dev", "devtmpfs", MS_NOSUID);
    mkdir("/dev/pts", 0755);  /* ptys for the agent's terminals; it moves with /dev into the root */
    mount_or_warn("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC);
    /* Opened before the root changes: the agent runs from the initramfs. */
    int agent = open(AGENT_PATH, O_RDONLY | O_CLOEXEC);
    if (options.root) {
        int err = enter_root(options.root, options.changes);
        if (err != 0) {
            report("mount root", options.root, err);
            end_vm(STATUS_INIT_FAILURE);
        }
    }
    for (char **volume = options.mounts; *volume; volume++) {
        int err = mount_volume(*volume);
        if (err != 0) {
            report("mount volume", *volume, err);
            end_vm(STATUS_INIT_FAILURE);
        }
    }
    if (options.hostname && sethostname(options.hostname, strlen(options.hostname)) < 0)
        report("set hostname", options.hostname, errno);
    /* In the root, so /etc's files land in its overlay; before anything runs that might dial out. */
    network_set_up(options.network, options.hostname, report);
    enum vector_state vectors = check_vector_state(&options);
    print_ready_line();
    start_agent(agent, vectors, &options);
    if (*options.command == NULL) serve_forever();
    end_vm(run_command(options.command, &options));
    return 0;
}
