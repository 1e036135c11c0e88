/* Sends frames the kernel's own stack never would, through an AF_PACKET socket on
 * eth0: what a hostile guest can put on its NIC. One frame per argument after the
 * destination address: ipv6, vlan, fragment, options, gre, syn (a TCP SYN to the
 * destination, from no socket of the guest's). Prints "sent N". */
#include <arpa/inet.h>
#include <netpacket/packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static size_t ipv4(uint8_t *p, uint8_t ihl, uint16_t fragment, uint8_t protocol, uint32_t dst, size_t payload) {
    memset(p, 0, ihl * 4);
    p[0] = 0x40 | ihl;
    uint16_t total = htons(ihl * 4 + payload);
    memcpy(p + 2, &total, 2);
    fragment = htons(fragment);
    memcpy(p + 6, &fragment, 2);
    p[8] = 64;
    p[9] = protocol;
    uint32_t src = htonl(0x0a00020f); /* 10.0.2.15 */
    memcpy(p + 12, &src, 4);
    memcpy(p + 16, &dst, 4);
    if (ihl > 5) p[20] = 1; /* NOP options */
    return ihl * 4;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int fd = socket(AF_PACKET, SOCK_RAW, htons(0x0800));
    if (fd < 0) { perror("socket"); return 1; }
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = if_nametoindex("eth0"), .sll_halen = 6};
    memcpy(to.sll_addr, "\x02\x00\x00\x00\x00\x01", 6);
    uint32_t dst;
    inet_pton(AF_INET, argv[1], &dst);
    int sent = 0;
    for (int i = 2; i < argc; i++) {
        uint8_t frame[128] = {0};
        memcpy(frame, to.sll_addr, 6);
        memcpy(frame + 6, "\x52\x54\x00\x12\x34\x56", 6);
        uint8_t *p = frame + 14;
        size_t length = 14;
        uint16_t ethertype = 0x0800;
        if (!strcmp(argv[i], "ipv6")) {
            ethertype = 0x86dd;
            p[0] = 0x60;
            length += 40 + 8;
        } else if (!strcmp(argv[i], "vlan")) {
            ethertype = 0x8100;
            p[1] = 5;
            p[2] = 0x08;
            length += 4 + ipv4(p + 4, 5, 0, 17, dst, 8) + 8;
        } else if (!strcmp(argv[i], "fragment")) {
            length += ipv4(p, 5, 0x2000, 17, dst, 16) + 16;
        } else if (!strcmp(argv[i], "options")) {
            length += ipv4(p, 6, 0, 17, dst, 8) + 8;
        } else if (!strcmp(argv[i], "gre")) {
            length += ipv4(p, 5, 0, 47, dst, 8) + 8;
        } else if (!strcmp(argv[i], "syn")) {
            size_t header = ipv4(p, 5, 0, 6, dst, 20);
            uint8_t *tcp = p + header;
            tcp[0] = 0x9c; tcp[1] = 0x40;  /* 40000 */
            tcp[2] = 0x00; tcp[3] = 80;
            tcp[12] = 5 << 4;
            tcp[13] = 0x02;
            length += header + 20;
        } else {
            fprintf(stderr, "unknown frame %s\n", argv[i]);
            return 2;
        }
        frame[12] = ethertype >> 8;
        frame[13] = ethertype & 0xff;
        if (sendto(fd, frame, length < 60 ? 60 : length, 0, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("sendto");
            return 1;
        }
        sent++;
    }
    printf("sent %d\n", sent);
    return 0;
}
