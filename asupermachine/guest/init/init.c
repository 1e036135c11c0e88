/*
 * asupermachine guest init (PID 1), built static.
 *
 * Mounts /proc, /sys and /dev, prints the ready line with the guest's uptime,
 * starts the agent, runs the command that follows COMMAND_MARKER in its argv (the kernel command
 * line ends "-- COMMAND_MARKER COMMAND..."), reaps every
 * child, and ends the VM reporting the command's exit status through
 * reboot(2) RESTART2 "exit=N" (the project's kernel turns that into a write to
 * the VMM's exit-status port). Without a command it stays up, a sandbox for
 * the agent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* include/uapi/linux/reboot.h (musl ships no kernel UAPI headers) */
#define LINUX_REBOOT_MAGIC1 0xfee1deadU
#define LINUX_REBOOT_MAGIC2 672274793U
#define LINUX_REBOOT_CMD_RESTART2 0xA1B2C3D4U
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321FEDCU

#define READY_MARKER "asupermachine-init: ready"
/* arch/x86_64/cmdline.py INIT_COMMAND_MARKER */
#define COMMAND_MARKER "asupermachine-init-command"
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

/* Run argv and reap every child until it ends; returns a shell-style status. */
static int run_command(char **argv) {
    pid_t child;
    int err = posix_spawnp(&child, argv[0], NULL, NULL, argv, environ);
    if (err != 0) {
        char message[256];
        snprintf(message, sizeof message, "asupermachine-init: cannot run %s: %s\n", argv[0], strerror(err));
        say(message);
        return err == ENOENT ? STATUS_COMMAND_NOT_FOUND : STATUS_INIT_FAILURE;
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
static void start_agent(void) {
    pid_t pid;
    char *argv[] = { AGENT_PATH, NULL };
    if (access(AGENT_PATH, X_OK) == 0) posix_spawn(&pid, AGENT_PATH, NULL, NULL, argv, environ);
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

int main(int argc, char **argv) {
    int status = 0;
    (void)argc;
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
    setenv("HOME", "/", 0);
    mount_or_warn("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_warn("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mount_or_warn("devtmpfs", "/dev", "devtmpfs", MS_NOSUID);
    print_ready_line();
    start_agent();
    /* The kernel also hands init unknown command-line words: the command is
       only what follows the VMM's marker. */
    char **command = NULL;
    for (char **word = argv + 1; *word != NULL; word++)
        if (strcmp(*word, COMMAND_MARKER) == 0) {
            command = word + 1;
            break;
        }
    if (command == NULL || *command == NULL) serve_forever();
    status = run_command(command);
    end_vm(status);
    return 0;
}
