/*
 * Does a task's AVX register state survive a context switch on this CPU?
 *
 * Under software KVM (kvm_pvm) the guest kernel runs FXSAVE-only while user
 * code uses the real AVX registers; unless the VMM switches the rest of the
 * state (guest/kernel/patches/0006-vmm-switched-xstate.patch), the upper halves
 * of ymm0-15, zmm16-31 and k0-7 are shared by every task on a vCPU. Two
 * threads pinned to one CPU each keep a pattern in ymm0 across a blocking
 * pipe read (a context switch to the other) and compare what they get back.
 * On other architectures there is nothing to check (VECTOR_STATE_NO_AVX).
 * Header-only, like spawn_process.h.
 */
#ifndef ASUPERMACHINE_VECTOR_STATE_H
#define ASUPERMACHINE_VECTOR_STATE_H

#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

enum vector_state {
    VECTOR_STATE_NO_AVX = 0,   /* nothing to check: user code cannot use AVX */
    VECTOR_STATE_ISOLATED = 1, /* every switch kept each task's registers */
    VECTOR_STATE_LEAKS = 2,    /* a task saw another's register contents */
    VECTOR_STATE_UNCHECKED = 3 /* the check itself could not run */
};

#if defined(__x86_64__)
#define VECTOR_STATE_ROUNDS 8
static sigjmp_buf vector_state_probe_jump;

static void vector_state_on_sigill(int signo) {
    (void)signo;
    siglongjmp(vector_state_probe_jump, 1);
}

/* Whether user code can run AVX instructions: tried, not read from CPUID. Under
   kvm_pvm on an Intel host the guest's CPUID is KVM's table (OSXSAVE clear, as
   the guest kernel never sets CR4.OSXSAVE) while the instructions run natively
   all the same; on an AMD host CPUID shows the host's bits. Either way, what
   counts is whether a task's ymm registers can hold anything. */
static inline int vector_state_avx_usable(void) {
    struct sigaction probe = { .sa_handler = vector_state_on_sigill }, saved;
    volatile int usable = 0;
    sigemptyset(&probe.sa_mask);
    if (sigaction(SIGILL, &probe, &saved) < 0) return 0;
    if (sigsetjmp(vector_state_probe_jump, 1) == 0) {
        __asm__ volatile("vpxor %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
        usable = 1;
    }
    sigaction(SIGILL, &saved, NULL);
    return usable;
}

/* Load ymm0, write a byte to out_fd, read one from in_fd (where the switch
   happens), store ymm0: all in one asm block, so nothing else touches ymm0. */
static inline void vector_state_hold_across_switch(const uint64_t in[4], uint64_t out[4], int out_fd, int in_fd) {
    char byte = 0;
    __asm__ volatile(
        "vmovdqu (%[in]), %%ymm0\n\t"
        "mov $1, %%eax\n\t" /* SYS_write */
        "mov %[out_fd], %%edi\n\t"
        "lea %[byte], %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "xor %%eax, %%eax\n\t" /* SYS_read */
        "mov %[in_fd], %%edi\n\t"
        "lea %[byte], %%rsi\n\t"
        "mov $1, %%edx\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm0, (%[out])\n\t"
        : [byte] "+m"(byte)
        : [in] "r"(in), [out] "r"(out), [out_fd] "r"(out_fd), [in_fd] "r"(in_fd)
        : "rax", "rdi", "rsi", "rdx", "rcx", "r11", "xmm0", "memory");
}

struct vector_state_side {
    int out_fd, in_fd;
    uint64_t seed;
    int mismatches;
};

static inline void vector_state_pin_to_cpu0(void) {
    cpu_set_t cpu0;
    CPU_ZERO(&cpu0);
    CPU_SET(0, &cpu0);
    sched_setaffinity(0, sizeof cpu0, &cpu0); /* this thread only */
}

static inline void *vector_state_run_side(void *argument) {
    struct vector_state_side *side = argument;
    vector_state_pin_to_cpu0();
    for (int round = 0; round < VECTOR_STATE_ROUNDS; round++) {
        uint64_t in[4], out[4];
        for (int i = 0; i < 4; i++) in[i] = side->seed * (uint64_t)(i + 1) + (uint64_t)round;
        vector_state_hold_across_switch(in, out, side->out_fd, side->in_fd);
        side->mismatches += memcmp(in, out, sizeof in) != 0;
    }
    return NULL;
}
#endif

/*
 * Where the state leaks, these keep common runtimes off AVX code (each only where
 * the environment does not set it already). glibc's string functions are what
 * crashed busybox pipelines (its EVEX memcpy keeps data in ymm16/17); Go's
 * runtime memmove and OpenBLAS's kernels pick AVX by CPUID the same way.
 */
static const char *const vector_state_safe_env[] = {
    "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-FMA,-FMA4,"
    "-AVX_Fast_Unaligned_Load,-XSAVEC",
    "GODEBUG=cpu.avx=off,cpu.avx2=off", /* not cpu.avx512f: Go 1.19 (bookworm) warns of it */
    "OPENBLAS_CORETYPE=Nehalem",
    NULL,
};
#define VECTOR_STATE_SAFE_ENV_COUNT (sizeof vector_state_safe_env / sizeof *vector_state_safe_env - 1)

/* Runs the check on CPU 0 (the caller's affinity is put back). */
static inline enum vector_state vector_state_check(void) {
#if !defined(__x86_64__)
    return VECTOR_STATE_NO_AVX;
#else
    int a_to_b[2], b_to_a[2];
    pthread_t peer;
    cpu_set_t saved;
    enum vector_state result = VECTOR_STATE_UNCHECKED;
    if (!vector_state_avx_usable()) return VECTOR_STATE_NO_AVX;
    if (sched_getaffinity(0, sizeof saved, &saved) < 0) return result;
    if (pipe(a_to_b) < 0) return result;
    if (pipe(b_to_a) < 0) goto close_a_to_b;
    struct vector_state_side a = { a_to_b[1], b_to_a[0], 0x1111111111111111ull, 0 };
    struct vector_state_side b = { b_to_a[1], a_to_b[0], 0x2222222222222222ull, 0 };
    if (pthread_create(&peer, NULL, vector_state_run_side, &b) != 0) goto close_b_to_a;
    vector_state_run_side(&a);
    pthread_join(peer, NULL);
    sched_setaffinity(0, sizeof saved, &saved);
    result = a.mismatches + b.mismatches ? VECTOR_STATE_LEAKS : VECTOR_STATE_ISOLATED;
close_b_to_a:
    close(b_to_a[0]);
    close(b_to_a[1]);
close_a_to_b:
    close(a_to_b[0]);
    close(a_to_b[1]);
    return result;
#endif
}

#endif
