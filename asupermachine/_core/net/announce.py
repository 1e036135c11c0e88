"""The guest, announced to its network backend: a gratuitous ARP from the guest's MAC and IPv4 address (sans-IO).

passt learns the guest's MAC from the frames the guest sends and addresses its
own to 00:00:00:00:00:00 until then, which the guest's NIC drops. A guest that
has sent nothing yet (just booted, or restored to a fresh passt, and not
chatty now that IPv6 is off on eth0) could not be reached on a published port.
The VMM knows both addresses, so it announces them when the link starts.
"""

from __future__ import annotations

import ipaddress
import struct

BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARP_ETHER_IPV4 = struct.Struct("!HHBBH6s4s6s4s")
"""RFC 826: hardware type, protocol type, their lengths, operation, sender and target addresses."""


def gratuitous_arp(mac: bytes, address: str) -> bytes:
    """The ARP request a host sends for its own ``address`` (RFC 5227, 3: an announcement), broadcast."""
    if len(mac) != 6:
        raise ValueError(f"a MAC is 6 bytes, not {len(mac)}")
    ip = ipaddress.IPv4Address(address).packed
    body = ARP_ETHER_IPV4.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST, mac, ip, bytes(6), ip)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + body
