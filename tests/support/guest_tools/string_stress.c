/*
 * string_stress PROCESSES ROUNDS  (built static against glibc, whose string
 * functions pick AVX/EVEX code by CPUID)
 *
 * PROCESSES processes each run ROUNDS rounds of: copy a pattern of their own
 * with memcpy into freshly mapped pages (each first touch is a page fault, a
 * chance for the kernel to switch tasks mid-copy), check it with memcmp,
 * strlen and memchr, and pass a token round a ring of pipes so the processes
 * interleave. Prints one line of counts; exits 0 only if every check held.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define COPY_BYTES (64 * 1024)
#define MAX_PROCESSES 16

static long run(int index, int rounds, int token_in, int token_out) {
    static char pattern[COPY_BYTES], text[4096];
    long mismatches = 0;
    char token = 0;
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (char)(index * 37 + i * 7 + 1);
    memset(text, 'a' + index, sizeof text - 1 - index);
    for (int round = 0; round < rounds; round++) {
        char *copy = mmap(NULL, COPY_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (copy == MAP_FAILED) return -1;
        memcpy(copy, pattern, COPY_BYTES);
        mismatches += memcmp(copy, pattern, COPY_BYTES) != 0;
        mismatches += strlen(text) != sizeof text - 1 - (size_t)index;
        mismatches += memchr(copy, pattern[COPY_BYTES - 1], COPY_BYTES) == NULL;
        munmap(copy, COPY_BYTES);
        if (read(token_in, &token, 1) != 1 || write(token_out, &token, 1) != 1) return -1;
    }
    return mismatches;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: string_stress PROCESSES ROUNDS\n");
        return 2;
    }
    int processes = atoi(argv[1]), rounds = atoi(argv[2]), ring[MAX_PROCESSES][2], results[2];
    if (processes < 1 || processes > MAX_PROCESSES || rounds < 1 || pipe(results) < 0) return 2;
    for (int i = 0; i < processes; i++)
        if (pipe(ring[i]) < 0) return 2;
    for (int i = 0; i < processes; i++)
        if (fork() == 0) {
            long mismatches = run(i, rounds, ring[i][0], ring[(i + 1) % processes][1]);
            _exit(write(results[1], &mismatches, sizeof mismatches) == sizeof mismatches ? 0 : 1);
        }
    char token = 't';
    if (write(ring[0][1], &token, 1) != 1) return 2;
    close(results[1]);
    long total = 0, one, reported = 0, failed = 0;
    while (read(results[0], &one, sizeof one) == sizeof one) {
        reported++;
        if (one < 0) failed++;
        else total += one;
    }
    int status, crashed = 0;
    while (wait(&status) > 0) crashed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    printf("string_stress: rounds=%ld mismatches=%ld crashed=%d failed=%ld\n", reported * rounds, total, crashed,
           failed);
    return total == 0 && crashed == 0 && failed == 0 && reported == processes ? 0 : 1;
}
