/*
 * A guest-side vsock peer for the tests, built static with the guest's compiler.
 *
 *   vsock_tool echo PORT            accept one connection on PORT, echo it back until EOF
 *   vsock_tool sink PORT FILE       accept one connection, write it to FILE until EOF, print BYTES
 *   vsock_tool send PORT FILE N     connect to the host's PORT and send FILE's bytes N times
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define AF_VSOCK_FAMILY 40
#define VMADDR_CID_ANY 0xFFFFFFFFu
#define VMADDR_CID_HOST 2u

struct sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[4];
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int accept_one(unsigned port) {
    struct sockaddr_vm address = { .svm_family = AF_VSOCK_FAMILY, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
    int listener = socket(AF_VSOCK_FAMILY, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1))
        die("listen");
    printf("listening\n");
    fflush(stdout);
    int sock = accept(listener, NULL, NULL);
    if (sock < 0) die("accept");
    close(listener);
    return sock;
}

static void write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write");
        data += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    static char buffer[1 << 20];
    if (argc == 3 && strcmp(argv[1], "echo") == 0) {
        int sock = accept_one((unsigned)atoi(argv[2]));
        ssize_t n;
        while ((n = read(sock, buffer, sizeof buffer)) > 0) write_all(sock, buffer, (size_t)n);
        return n < 0;
    }
    if (argc == 4 && strcmp(argv[1], "sink") == 0) {
        int out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0) die("open");
        int sock = accept_one((unsigned)atoi(argv[2]));
        uint64_t total = 0;
        ssize_t n;
        while ((n = read(sock, buffer, sizeof buffer)) > 0) {
            write_all(out, buffer, (size_t)n);
            total += (uint64_t)n;
        }
        printf("%llu\n", (unsigned long long)total);
        return n < 0 || close(out) != 0;
    }
    if (argc == 5 && strcmp(argv[1], "send") == 0) {
        struct sockaddr_vm address = { .svm_family = AF_VSOCK_FAMILY, .svm_cid = VMADDR_CID_HOST,
                                       .svm_port = (unsigned)atoi(argv[2]) };
        int fd = open(argv[3], O_RDONLY);
        ssize_t size = fd < 0 ? -1 : read(fd, buffer, sizeof buffer);
        if (size < 0) die("read");
        int sock = socket(AF_VSOCK_FAMILY, SOCK_STREAM, 0);
        if (sock < 0 || connect(sock, (struct sockaddr *)&address, sizeof address)) die("connect");
        for (int i = atoi(argv[4]); i > 0; i--) write_all(sock, buffer, (size_t)size);
        return close(sock) != 0;
    }
    fprintf(stderr, "usage: vsock_tool echo PORT | sink PORT FILE | send PORT FILE N\n");
    return 2;
}
