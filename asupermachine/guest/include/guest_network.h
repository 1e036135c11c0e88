/*
 * The guest's network as init sets it up before anything else runs: lo up
 * always (127.0.0.1 must work in every VM); and, given
 * asupermachine.net=ADDRESS/PREFIX,GATEWAY,MTU[,DNS] (the host's passt
 * decides them), eth0 addressed (IPv4 only) and up, a default route through GATEWAY, and
 * /etc/resolv.conf (only with DNS) and /etc/hosts to match. Plain ioctls: the
 * image's tools are not ours to rely on. Every step that fails is reported
 * and the rest still run: a VM with a broken network is still useful.
 * Header-only, like spawn_process.h.
 */
#ifndef ASUPERMACHINE_GUEST_NETWORK_H
#define ASUPERMACHINE_GUEST_NETWORK_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replace_file.h"

#define NETWORK_LOOPBACK "lo"
#define NETWORK_IPV6_OFF "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"
#define NETWORK_INTERFACE "eth0"
/* The name by which the guest reaches its host: passt maps GATEWAY to the host's loopback. */
#define NETWORK_HOST_NAME "host.internal"
/* RFC 791: every IPv4 link carries 68 bytes. */
#define NETWORK_MIN_MTU 68
#define NETWORK_MAX_MTU 65535
#define NETWORK_OPTION_MAX 128

struct network_config {
    struct in_addr address, netmask, gateway, dns;
    int prefix, mtu, has_dns;
};

/* How the caller reports a failed step: what was tried, on what, and errno. */
typedef void network_report(const char *what, const char *detail, int err);

static int network_parse_number(const char *text, int low, int high, int *number) {
    char *end;
    if (*text < '0' || *text > '9' || (*text == '0' && text[1]) || strlen(text) > 5) return 0;
    long value = strtol(text, &end, 10);
    if (*end != '\0' || value < low || value > high) return 0;
    *number = (int)value;
    return 1;
}

/* Parse "ADDRESS/PREFIX,GATEWAY,MTU[,DNS]" (IPv4, dotted quads); returns 0 or EINVAL. */
static int network_parse(const char *text, struct network_config *config) {
    char copy[NETWORK_OPTION_MAX], *fields[5], *slash;
    int count = 0;
    if (strlen(text) >= sizeof copy) return EINVAL;
    strcpy(copy, text);
    for (char *cursor = copy; count < 5; count++) {
        fields[count] = cursor;
        cursor = strchr(cursor, ',');
        if (cursor == NULL) {
            count++;
            break;
        }
        *cursor++ = '\0';
    }
    if (count < 3 || count > 4 || (slash = strchr(fields[0], '/')) == NULL) return EINVAL;
    *slash = '\0';
    memset(config, 0, sizeof *config);
    if (inet_pton(AF_INET, fields[0], &config->address) != 1 ||
        !network_parse_number(slash + 1, 0, 32, &config->prefix) ||
        inet_pton(AF_INET, fields[1], &config->gateway) != 1 ||
        !network_parse_number(fields[2], NETWORK_MIN_MTU, NETWORK_MAX_MTU, &config->mtu))
        return EINVAL;
    config->has_dns = count == 4;
    if (config->has_dns && inet_pton(AF_INET, fields[3], &config->dns) != 1) return EINVAL;
    config->netmask.s_addr = config->prefix == 0 ? 0 : htonl(0xffffffffu << (32 - config->prefix));
    return 0;
}

static struct sockaddr network_sockaddr(struct in_addr address) {
    struct sockaddr generic;
    struct sockaddr_in inet = { .sin_family = AF_INET, .sin_addr = address };
    memset(&generic, 0, sizeof generic);
    memcpy(&generic, &inet, sizeof inet);
    return generic;
}

static int network_interface_up(int sock, const char *name) {
    struct ifreq request = { 0 };
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(sock, SIOCGIFFLAGS, &request) < 0) return errno;
    request.ifr_flags |= IFF_UP;
    return ioctl(sock, SIOCSIFFLAGS, &request) < 0 ? errno : 0;
}

/* One ioctl on eth0; reports a failure, returns whether it worked. */
static int network_interface_set(int sock, unsigned long command, struct ifreq *request, const char *what,
                                 network_report *report) {
    strncpy(request->ifr_name, NETWORK_INTERFACE, IFNAMSIZ - 1);
    if (ioctl(sock, command, request) == 0) return 1;
    report(what, NETWORK_INTERFACE, errno);
    return 0;
}

static void network_add_route(int sock, struct in_addr destination, struct in_addr genmask, unsigned short flags,
                              const struct network_config *config, const char *what, network_report *report) {
    char device[] = NETWORK_INTERFACE, gateway[INET_ADDRSTRLEN];
    struct rtentry route = { .rt_dst = network_sockaddr(destination), .rt_genmask = network_sockaddr(genmask),
                             .rt_gateway = network_sockaddr(config->gateway), .rt_flags = flags, .rt_dev = device };
    if (ioctl(sock, SIOCADDRT, &route) < 0 && errno != EEXIST)
        report(what, inet_ntop(AF_INET, &config->gateway, gateway, sizeof gateway), errno);
}

/* Address eth0, set its MTU, bring it up and route everything through the gateway. */
static void network_configure_interface(int sock, const struct network_config *config, network_report *report) {
    struct ifreq request = { 0 };
    struct in_addr any = { 0 }, host = { 0xffffffffu };
    request.ifr_addr = network_sockaddr(config->address);
    if (!network_interface_set(sock, SIOCSIFADDR, &request, "set address of", report)) return;
    request.ifr_netmask = network_sockaddr(config->netmask);
    network_interface_set(sock, SIOCSIFNETMASK, &request, "set netmask of", report);
    request.ifr_mtu = config->mtu;
    network_interface_set(sock, SIOCSIFMTU, &request, "set MTU of", report);
    /* IPv4 only: without this the kernel's IPv6 autoconfiguration (duplicate address detection,
       router solicitations) keeps timers running, and a restored clone spent 0.6 s of emulated
       kernel time on them before it answered anything. */
    int ipv6 = open(NETWORK_IPV6_OFF, O_WRONLY | O_CLOEXEC);
    if (ipv6 < 0 || write(ipv6, "1\n", 2) != 2) report("write", NETWORK_IPV6_OFF, errno);
    if (ipv6 >= 0) close(ipv6);
    int err = network_interface_up(sock, NETWORK_INTERFACE);
    if (err != 0) {
        report("bring up", NETWORK_INTERFACE, err);
        return;
    }
    /* A gateway outside the prefix is still on the link: the kernel needs telling. */
    if ((config->gateway.s_addr & config->netmask.s_addr) != (config->address.s_addr & config->netmask.s_addr))
        network_add_route(sock, config->gateway, host, RTF_UP | RTF_HOST, config, "add route to gateway", report);
    network_add_route(sock, any, any, RTF_UP | RTF_GATEWAY, config, "add default route via", report);
}

static void network_write(const char *path, const char *content, network_report *report) {
    int err = replace_file(path, content, strlen(content));
    if (err != 0) report("write", path, err);
}

/* Name resolution to match: the DNS forwarder, the guest's own name and the host's. */
static void network_write_names(const struct network_config *config, const char *hostname, network_report *report) {
    char address[INET_ADDRSTRLEN], gateway[INET_ADDRSTRLEN], dns[INET_ADDRSTRLEN], line[128];
    char hosts[512] = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
    inet_ntop(AF_INET, &config->address, address, sizeof address);
    inet_ntop(AF_INET, &config->gateway, gateway, sizeof gateway);
    if (mkdir("/etc", 0755) < 0 && errno != EEXIST) report("create", "/etc", errno);
    if (config->has_dns) {
        snprintf(line, sizeof line, "nameserver %s\n", inet_ntop(AF_INET, &config->dns, dns, sizeof dns));
        network_write("/etc/resolv.conf", line, report);
    }
    /* A name a hosts line cannot hold (spaces, a comment) is left out rather than mangled. */
    if (hostname && *hostname && strlen(hostname) < 64 && hostname[strcspn(hostname, " \t\n#")] == '\0') {
        snprintf(line, sizeof line, "%s\t%s\n", address, hostname);
        strcat(hosts, line);
    }
    snprintf(line, sizeof line, "%s\t" NETWORK_HOST_NAME "\n", gateway);
    strcat(hosts, line);
    network_write("/etc/hosts", hosts, report);
}

/* Bring lo up; with OPTION (asupermachine.net's value, or NULL), eth0 and the name files too. */
static void network_set_up(const char *option, const char *hostname, network_report *report) {
    struct network_config config;
    char detail[NETWORK_OPTION_MAX + 32];
    int configured = option != NULL && network_parse(option, &config) == 0;
    if (option != NULL && !configured) {
        snprintf(detail, sizeof detail, "asupermachine.net=%s (want ADDRESS/PREFIX,GATEWAY,MTU[,DNS])", option);
        report("ignored", detail, EINVAL);
    }
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        report("open", "network socket", errno);
        return;
    }
    int err = network_interface_up(sock, NETWORK_LOOPBACK);
    if (err != 0) report("bring up", NETWORK_LOOPBACK, err);
    if (configured) {
        network_configure_interface(sock, &config, report);
        network_write_names(&config, hostname, report);
    }
    close(sock);
}

#endif
