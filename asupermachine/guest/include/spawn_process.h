/*
 * Start a process as init and the agent need it: its own session, an empty
 * signal mask, chosen stdio, working directory and user, and execvpe
 * semantics with PATH taken from the process's own environment. Header-only
 * (each guest program is one static translation unit); vfork keeps it cheap
 * under software KVM, where fork copies page tables at emulated speed.
 */
#ifndef ASUPERMACHINE_SPAWN_PROCESS_H
#define ASUPERMACHINE_SPAWN_PROCESS_H

#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SPAWN_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define SPAWN_MAX_GROUPS 64

struct spawn_user {
    int set;
    uid_t uid;
    gid_t gid;
    gid_t groups[SPAWN_MAX_GROUPS];
    int group_count;
    char home[256];
};

struct spawn_request {
    char **argv;
    char **envp;
    const char *cwd;        /* NULL or "": inherit */
    const struct spawn_user *user;  /* NULL: inherit */
    int stdio[3];           /* -1: inherit */
    int exec_fd;            /* >= 0: run this open executable instead of searching argv[0] */
    int controlling_tty;    /* make stdin (a terminal) the new session's controlling terminal */
};

static int spawn_parse_id(const char *text, unsigned long *id) {
    char *end;
    if (*text < '0' || *text > '9') return 0;
    errno = 0;
    *id = strtoul(text, &end, 10);
    return *end == '\0' && errno == 0 && *id < UINT_MAX;
}

/*
 * Resolve "user", "uid", "user:group" or "uid:gid" against the root's
 * /etc/passwd and /etc/group, as docker does: a name must exist; a numeric
 * uid need not, and then runs with gid 0 (or the given gid) and no extra groups.
 * Returns 0 or an errno value (ENOENT: no such user or group).
 */
static int spawn_resolve_user(const char *spec, struct spawn_user *user) {
    char name[256];
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    unsigned long id;
    if (name_len == 0 || name_len >= sizeof name) return EINVAL;
    memcpy(name, spec, name_len);
    name[name_len] = '\0';
    memset(user, 0, sizeof *user);
    user->set = 1;
    strcpy(user->home, "/");
    struct passwd *pw = spawn_parse_id(name, &id) ? getpwuid((uid_t)id) : getpwnam(name);
    if (pw) {
        user->uid = pw->pw_uid;
        user->gid = pw->pw_gid;
        if (strlen(pw->pw_dir) < sizeof user->home) strcpy(user->home, pw->pw_dir);
    } else if (spawn_parse_id(name, &id)) {
        user->uid = (uid_t)id;
    } else {
        return ENOENT;
    }
    if (colon) {
        const char *group = colon + 1;
        struct group *gr = spawn_parse_id(group, &id) ? NULL : getgrnam(group);
        if (gr) user->gid = gr->gr_gid;
        else if (spawn_parse_id(group, &id)) user->gid = (gid_t)id;
        else return ENOENT;
        user->groups[0] = user->gid;
        user->group_count = 1;
    } else if (pw) {
        user->group_count = SPAWN_MAX_GROUPS;
        if (getgrouplist(pw->pw_name, user->gid, user->groups, &user->group_count) < 0) {
            user->groups[0] = user->gid;
            user->group_count = 1;
        }
    } else {
        user->groups[0] = user->gid;
        user->group_count = 1;
    }
    return 0;
}

/* Whether envp[0..count) lacks a variable named as `entry` ("NAME=value" or "NAME="). */
static inline int spawn_env_lacks(char *const *envp, int count, const char *entry) {
    size_t name_len = strcspn(entry, "=") + 1;
    for (int i = 0; i < count; i++)
        if (strncmp(envp[i], entry, name_len) == 0) return 0;
    return 1;
}

/* As docker does, where envp[0..count) lacks them: PATH the default, HOME the user's home (else /).
   envp has room for two more; `home` (HOME's entry) must outlive it. Returns the new count. */
static inline int spawn_complete_env(char **envp, int count, const struct spawn_user *user, char *home, size_t size) {
    if (spawn_env_lacks(envp, count, "PATH=")) envp[count++] = "PATH=" SPAWN_DEFAULT_PATH;
    if (spawn_env_lacks(envp, count, "HOME=")) {
        snprintf(home, size, "HOME=%s", user && user->home[0] ? user->home : "/");
        envp[count++] = home;
    }
    return count;
}

static const char *spawn_env_path(char **envp) {
    for (char **entry = envp; *entry; entry++)
        if (strncmp(*entry, "PATH=", 5) == 0) return *entry + 5;
    return SPAWN_DEFAULT_PATH;
}

/* In the vfork child: search PATH (from envp) like execvpe; returns the errno to report. */
static int spawn_exec_search(char **argv, char **envp) {
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return errno;
    }
    char candidate[PATH_MAX];
    int result = ENOENT;
    size_t file_len = strlen(file);
    for (const char *dir = spawn_env_path(envp);; ) {
        const char *end = strchr(dir, ':');
        size_t dir_len = end ? (size_t)(end - dir) : strlen(dir);
        if (dir_len + 1 + file_len < sizeof candidate) {
            memcpy(candidate, dir, dir_len);
            candidate[dir_len] = '/';
            memcpy(candidate + dir_len + 1, file, file_len + 1);
            execve(dir_len ? candidate : file, argv, envp);
            if (errno == EACCES) result = EACCES;  /* keep looking, but report it if nothing runs */
            else if (errno != ENOENT && errno != ENOTDIR) return errno;
        }
        if (!end) return result;
        dir = end + 1;
    }
}

/*
 * Start the process; returns 0 with *pid set, or an errno value with *step
 * naming what failed ("exec", "chdir", "setuid", ...). A failed child is reaped.
 */
static int spawn_process(const struct spawn_request *request, pid_t *pid, const char **step) {
    /* vfork shares memory: the child reports a failure through these before _exit. */
    volatile int child_error = 0;
    const char *volatile child_step = NULL;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);  /* no handler may run in the child on our stack */
    pid_t child = vfork();
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        for (int signo = 1; signo < _NSIG; signo++) signal(signo, SIG_DFL);
        const struct spawn_user *user = request->user;
        const char *failed = NULL;
        if (setsid() < 0) failed = "setsid";
        for (int fd = 0; !failed && fd < 3; fd++)
            if (request->stdio[fd] >= 0 && dup2(request->stdio[fd], fd) < 0) failed = "dup2";
        if (!failed && request->controlling_tty && ioctl(0, TIOCSCTTY, 0) < 0) failed = "TIOCSCTTY";
        if (!failed && request->cwd && request->cwd[0] && chdir(request->cwd) < 0) failed = "chdir";
        if (!failed && user && user->set) {
            if (setgroups((size_t)user->group_count, user->groups) < 0) failed = "setgroups";
            else if (setgid(user->gid) < 0) failed = "setgid";
            else if (setuid(user->uid) < 0) failed = "setuid";
        }
        if (!failed) {
            sigprocmask(SIG_SETMASK, &none, NULL);
            if (request->exec_fd >= 0) {
                fexecve(request->exec_fd, request->argv, request->envp);
                child_error = errno;
            } else {
                child_error = spawn_exec_search(request->argv, request->envp);
            }
            failed = "exec";
        } else {
            child_error = errno;
        }
        child_step = failed;
        _exit(127);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (child < 0) {
        *step = "vfork";
        return saved;
    }
    if (child_step) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        *step = child_step;
        return child_error ? child_error : EINVAL;
    }
    *pid = child;
    return 0;
}

#endif
