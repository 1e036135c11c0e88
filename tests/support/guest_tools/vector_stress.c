/*
 * vector_stress PROCESSES THREADS ROUNDS
 *
 * Stresses what a guest kernel must keep per task across context switches:
 * PROCESSES processes of THREADS threads each, under a SIGALRM timer, run
 * ROUNDS rounds of: load a pattern of their own into ymm0-3 (and zmm16 and
 * k1 where AVX-512 is usable), make a syscall that switches (sched_yield,
 * or a pipe ping-pong with a partner thread), read the registers back;
 * check the thread's TLS contents and FS base; and now and then vfork+exec
 * or fork a short-lived child. Prints one line of counts and exits 0 only if
 * every check held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vector_state.h"

/* arch/x86/include/uapi/asm/prctl.h (musl ships no kernel UAPI headers) */
#define ARCH_GET_FS 0x1003

#define MAX_THREADS 64
#define CHILD_EVERY 50

struct counts {
    long rounds, switches, vector_leaks, tls_errors, fs_errors, signals, children;
};

struct worker {
    int index, rounds, pipe_out, pipe_in;
    struct counts counts;
};

static __thread uint64_t tls_marker;
static volatile sig_atomic_t alarms;
static int avx512;

static void on_alarm(int signal_number) {
    (void)signal_number;
    alarms++;
}

static int avx512_usable(void) {
    unsigned eax, ebx, ecx, edx, low, high;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(ebx & (1u << 16))) return 0;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return (low & 0xe6) == 0xe6;
}

/* One syscall with the vector registers holding `in`; what they hold after goes to `out`. */
static void hold_ymm(const uint64_t in[16], uint64_t out[16], long number, long fd, void *buffer) {
    register long rdi __asm__("rdi") = fd;
    register void *rsi __asm__("rsi") = buffer;
    register long rdx __asm__("rdx") = 1;
    long rax = number;
    __asm__ volatile(
        "vmovdqu 0(%[in]), %%ymm0\n\t"
        "vmovdqu 32(%[in]), %%ymm1\n\t"
        "vmovdqu 64(%[in]), %%ymm2\n\t"
        "vmovdqu 96(%[in]), %%ymm3\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm0, 0(%[out])\n\t"
        "vmovdqu %%ymm1, 32(%[out])\n\t"
        "vmovdqu %%ymm2, 64(%[out])\n\t"
        "vmovdqu %%ymm3, 96(%[out])\n\t"
        : "+a"(rax), "+r"(rdi), "+r"(rsi), "+r"(rdx)
        : [in] "r"(in), [out] "r"(out)
        : "rcx", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "memory");
}

/* The same for zmm16, zmm0 and k1; returns whether k1 came back intact. */
static int hold_zmm(const uint64_t in[16], uint64_t out[16], long number, long fd, void *buffer) {
    register long rdi __asm__("rdi") = fd;
    register void *rsi __asm__("rsi") = buffer;
    register long rdx __asm__("rdx") = 1;
    long rax = number;
    uint16_t mask_in = (uint16_t)in[0], mask_out;
    __asm__ volatile(
        "vmovdqu64 0(%[in]), %%zmm16\n\t"
        "vmovdqu64 64(%[in]), %%zmm0\n\t"
        "kmovw %[mask_in], %%k1\n\t"
        "syscall\n\t"
        "vmovdqu64 %%zmm16, 0(%[out])\n\t"
        "vmovdqu64 %%zmm0, 64(%[out])\n\t"
        "kmovw %%k1, %[mask_out]\n\t"
        : "+a"(rax), "+r"(rdi), "+r"(rsi), "+r"(rdx), [mask_out] "=m"(mask_out)
        : [in] "r"(in), [out] "r"(out), [mask_in] "m"(mask_in)
        : "rcx", "r11", "xmm0", "memory"); /* zmm16 and k1: unknown to a non-AVX-512 target, unused by it */
    return mask_out == mask_in;
}

static void check_round(struct worker *worker, int round, uint64_t fs_base) {
    uint64_t in[16], out[16], fs_now = 0;
    char byte = 0;
    int ping_pong = worker->pipe_out >= 0 && round % 2;
    for (int i = 0; i < 16; i++)
        in[i] = ((uint64_t)getpid() << 40) ^ ((uint64_t)worker->index << 24) ^ ((uint64_t)round << 8) ^ (uint64_t)i;
    if (ping_pong) {
        /* write to the partner, then block reading from it: a switch with the registers live */
        if (write(worker->pipe_out, &byte, 1) != 1) worker->counts.vector_leaks += 1000000;
        hold_ymm(in, out, SYS_read, worker->pipe_in, &byte);
    } else {
        hold_ymm(in, out, SYS_sched_yield, 0, NULL);
    }
    worker->counts.vector_leaks += memcmp(in, out, 128) != 0;
    if (avx512) {
        int mask_kept = hold_zmm(in, out, SYS_sched_yield, 0, NULL);
        worker->counts.vector_leaks += memcmp(in, out, 128) != 0 || !mask_kept;
    }
    if (tls_marker != fs_base * 31 + (uint64_t)worker->index) worker->counts.tls_errors++;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs_now);
    if (fs_now != fs_base) worker->counts.fs_errors++;
    worker->counts.rounds++;
}

static void run_child(int round) {
    static char *const argv[] = { "/bin/true", NULL };
    static char *const envp[] = { NULL };
    pid_t pid = round % 2 ? vfork() : fork();
    if (pid == 0) {
        if (round % 2) execve(argv[0], argv, envp);
        _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
}

static void *run_worker(void *argument) {
    struct worker *worker = argument;
    uint64_t fs_base = 0;
    struct rusage usage;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs_base);
    tls_marker = fs_base * 31 + (uint64_t)worker->index;
    for (int round = 0; round < worker->rounds; round++) {
        check_round(worker, round, fs_base);
        if (worker->index == 0 && round % CHILD_EVERY == CHILD_EVERY - 1) {
            run_child(round / CHILD_EVERY);
            worker->counts.children++;
        }
    }
    getrusage(RUSAGE_THREAD, &usage);
    worker->counts.switches = usage.ru_nvcsw + usage.ru_nivcsw;
    return NULL;
}

/* Runs THREADS workers in this process (pairs share a pipe) and returns their summed counts. */
static struct counts run_process(int threads, int rounds) {
    struct worker workers[MAX_THREADS] = { 0 };
    pthread_t ids[MAX_THREADS];
    struct counts total = { 0 };
    struct itimerval every_50ms = { { 0, 50000 }, { 0, 50000 } };
    signal(SIGALRM, on_alarm);
    setitimer(ITIMER_REAL, &every_50ms, NULL);
    for (int i = 0; i < threads; i++) {
        workers[i] = (struct worker){ .index = i, .rounds = rounds, .pipe_out = -1, .pipe_in = -1 };
        if (i % 2 == 1) {
            int there[2], back[2];
            if (pipe(there) == 0 && pipe(back) == 0) {
                workers[i - 1].pipe_out = there[1], workers[i].pipe_in = there[0];
                workers[i].pipe_out = back[1], workers[i - 1].pipe_in = back[0];
            }
        }
    }
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, run_worker, &workers[i]);
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        total.rounds += workers[i].counts.rounds;
        total.switches += workers[i].counts.switches;
        total.vector_leaks += workers[i].counts.vector_leaks;
        total.tls_errors += workers[i].counts.tls_errors;
        total.fs_errors += workers[i].counts.fs_errors;
        total.children += workers[i].counts.children;
    }
    struct itimerval off = { 0 };
    setitimer(ITIMER_REAL, &off, NULL);
    total.signals = alarms;
    return total;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: vector_stress PROCESSES THREADS ROUNDS\n");
        return 2;
    }
    int processes = atoi(argv[1]), threads = atoi(argv[2]), rounds = atoi(argv[3]);
    if (processes < 1 || threads < 1 || threads > MAX_THREADS || rounds < 1) return 2;
    if (!vector_state_avx_usable()) {
        printf("vector_stress: no AVX\n");
        return 3;
    }
    avx512 = avx512_usable();
    int results[2];
    if (pipe(results) < 0) return 2;
    for (int p = 0; p < processes; p++) {
        if (fork() == 0) {
            struct counts counts = run_process(threads, rounds);
            _exit(write(results[1], &counts, sizeof counts) == sizeof counts ? 0 : 1);
        }
    }
    close(results[1]);
    struct counts total = { 0 }, one;
    while (read(results[0], &one, sizeof one) == sizeof one) {
        total.rounds += one.rounds, total.switches += one.switches, total.vector_leaks += one.vector_leaks;
        total.tls_errors += one.tls_errors, total.fs_errors += one.fs_errors;
        total.signals += one.signals, total.children += one.children;
    }
    while (wait(NULL) > 0) {}
    printf("vector_stress: avx512=%d rounds=%ld switches=%ld vector_leaks=%ld tls_errors=%ld fs_errors=%ld "
           "signals=%ld children=%ld\n", avx512, total.rounds, total.switches, total.vector_leaks, total.tls_errors,
           total.fs_errors, total.signals, total.children);
    long expected = (long)processes * threads * rounds;
    return total.rounds == expected && !total.vector_leaks && !total.tls_errors && !total.fs_errors ? 0 : 1;
}
