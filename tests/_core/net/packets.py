"""Hand-built Ethernet frames a guest would send, and just enough parsing to read passt's answers."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800  # Linux include/uapi/linux/if_ether.h
ETH_P_ARP = 0x0806
ARPOP_REQUEST, ARPOP_REPLY = 1, 2  # RFC 826
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TCP_SYN, TCP_ACK = 0x02, 0x10  # RFC 9293 section 3.1
BOOTP_CLIENT, BOOTP_SERVER = 68, 67
DHCP_MAGIC = b"\x63\x82\x53\x63"  # RFC 2131 section 3
DHCP_MESSAGE_TYPE, DHCP_DISCOVER, DHCP_OFFER = 53, 1, 2  # RFC 2132 section 9.6
DHCP_SUBNET_MASK, DHCP_ROUTER, DHCP_DNS, DHCP_MTU, DHCP_END = 1, 3, 6, 26, 255  # RFC 2132

BROADCAST = b"\xff" * 6
GUEST_MAC = bytes.fromhex("525400123456")  # a locally administered address, as qemu's default
GUEST_IP = "10.0.2.15"
GATEWAY_IP = "10.0.2.2"


def ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(destination: bytes, source: bytes, ethertype: int, payload: bytes) -> bytes:
    return destination + source + struct.pack("!H", ethertype) + payload


def arp_request(sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    """Who has ``target_ip``? Tell ``sender_ip`` (RFC 826, Ethernet and IPv4)."""
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARPOP_REQUEST)
    body += sender_mac + ip(sender_ip) + b"\0" * 6 + ip(target_ip)
    return ethernet(BROADCAST, sender_mac, ETH_P_ARP, body)


def ipv4(source: str, destination: str, protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, protocol, 0, ip(source), ip(destination)
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def dhcp_discover(mac: bytes, transaction: int) -> bytes:
    """A DHCPDISCOVER broadcast from ``mac`` asking for mask, router, DNS and MTU (RFC 2131)."""
    bootp = struct.pack("!BBBBIHH", 1, 1, 6, 0, transaction, 0, 0x8000) + b"\0" * 16 + mac + b"\0" * (10 + 64 + 128)
    options = bytes([DHCP_MESSAGE_TYPE, 1, DHCP_DISCOVER, 55, 4, DHCP_SUBNET_MASK, DHCP_ROUTER, DHCP_DNS, DHCP_MTU])
    message = bootp + DHCP_MAGIC + options + bytes([DHCP_END])
    udp = struct.pack("!HHHH", BOOTP_CLIENT, BOOTP_SERVER, 8 + len(message), 0) + message
    return ethernet(BROADCAST, mac, ETH_P_IP, ipv4("0.0.0.0", "255.255.255.255", IPPROTO_UDP, udp))


@dataclass(frozen=True)
class Arp:
    operation: int
    sender_mac: bytes
    sender_ip: str
    target_mac: bytes
    target_ip: str


@dataclass(frozen=True)
class Ipv4:
    source: str
    destination: str
    protocol: int
    payload: bytes


@dataclass(frozen=True)
class Tcp:
    source_port: int
    destination_port: int
    flags: int


def ethertype(frame: bytes) -> int:
    return int.from_bytes(frame[12:14], "big")


def parse_arp(frame: bytes) -> Arp | None:
    if ethertype(frame) != ETH_P_ARP or len(frame) < 42:
        return None
    (operation,) = struct.unpack_from("!H", frame, 20)
    return Arp(operation, frame[22:28], str(ipaddress.IPv4Address(frame[28:32])), frame[32:38],
               str(ipaddress.IPv4Address(frame[38:42])))


def parse_ipv4(frame: bytes) -> Ipv4 | None:
    if ethertype(frame) != ETH_P_IP or len(frame) < 34:
        return None
    header_length = (frame[14] & 0x0F) * 4
    (total_length,) = struct.unpack_from("!H", frame, 16)
    return Ipv4(str(ipaddress.IPv4Address(frame[26:30])), str(ipaddress.IPv4Address(frame[30:34])), frame[23],
                frame[14 + header_length : 14 + total_length])


def parse_tcp(packet: Ipv4) -> Tcp:
    source, destination = struct.unpack_from("!HH", packet.payload)
    return Tcp(source, destination, packet.payload[13])


def parse_dhcp(packet: Ipv4) -> tuple[str, dict[int, bytes]] | None:
    """The offered address (``yiaddr``) and the options of a DHCP message from the server."""
    if packet.protocol != IPPROTO_UDP or struct.unpack_from("!H", packet.payload)[0] != BOOTP_SERVER:
        return None
    message = packet.payload[8:]
    if message[236:240] != DHCP_MAGIC:
        return None
    options: dict[int, bytes] = {}
    position = 240
    while position < len(message) and message[position] != DHCP_END:
        code = message[position]
        if code == 0:
            position += 1
            continue
        length = message[position + 1]
        options[code] = message[position + 2 : position + 2 + length]
        position += 2 + length
    return str(ipaddress.IPv4Address(message[16:20])), options
