"""A guest's Ethernet frames as the egress filter reads them, and the refusals it answers with: sans-IO.

Only what passt carries is parsed: Ethernet II holding ARP or IPv4, and in IPv4
(a 20-byte header, not fragmented) TCP, UDP and ICMP. Anything else is an
:class:`Oddity`, which a filtering VM refuses rather than guess at: a frame
that is not read cannot be judged.

A refused TCP connection gets a reset (RFC 9293, 3.10.7.1: the SYN's sequence
number plus one acknowledged), anything else an ICMP destination unreachable,
"communication administratively prohibited" (RFC 1812, 5.2.7.1), so the
guest's call fails at once instead of timing out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ..native import ones_complement_sum
from .stream_framing import ETH_HLEN, BytesLike

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV4_HLEN = 20  # no options
TCP_HLEN = 20
UDP_HLEN = 8
ICMP_HLEN = 8
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
ICMP_UNREACHABLE = 3
ICMP_ADMIN_PROHIBITED = 13
ICMP_QUOTED = 8  # bytes of the offending datagram's payload an ICMP error carries (RFC 792)
IP_MORE_FRAGMENTS = 0x2000
IP_OFFSET_MASK = 0x1FFF
DEFAULT_TTL = 64

_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_SEQUENCE = struct.Struct("!I")


class Oddity(enum.StrEnum):
    """Why a frame was refused unread; the values name the counts in ``vm.network.refused``."""

    ETHERTYPE = "ethertype"
    """Neither IPv4 nor ARP: IPv6, an 802.1Q VLAN tag, anything else."""
    IP_OPTIONS = "ip options"
    FRAGMENT = "fragment"
    PROTOCOL = "protocol"
    """An IPv4 protocol other than TCP, UDP and ICMP (raw IP, GRE, ...)."""
    MALFORMED = "malformed"
    """A header cut short or at odds with the frame's length."""


@dataclass(frozen=True, slots=True)
class Packet:
    """An outbound IPv4 packet that may start a flow in passt: a TCP SYN without ACK, any UDP datagram
    or ICMP message."""

    protocol: int
    destination: bytes
    """The destination's four address bytes."""
    destination_port: int
    """TCP or UDP; 0 for ICMP."""


def read_outbound(frame: BytesLike) -> Packet | Oddity | None:
    """The packet ``frame`` carries if it may start a flow, an :class:`Oddity` if unreadable, else None.

    None is ARP and the TCP segments that do not open a connection: they belong to one
    passt already has (it drops those of none), which the policy let open or the
    host opened to a published port.
    """
    view = memoryview(frame)
    if len(view) < ETH_HLEN:
        return Oddity.MALFORMED
    (ethertype,) = _ETHERTYPE.unpack_from(view, 12)
    if ethertype == ETH_P_ARP:
        return None
    if ethertype != ETH_P_IP:
        return Oddity.ETHERTYPE
    if len(view) < ETH_HLEN + IPV4_HLEN:
        return Oddity.MALFORMED
    version_ihl, _, total, _, fragment, _, protocol, _, _, destination = _IPV4.unpack_from(view, ETH_HLEN)
    if version_ihl >> 4 != 4:
        return Oddity.MALFORMED
    if version_ihl & 0xF != IPV4_HLEN // 4:
        return Oddity.IP_OPTIONS if version_ihl & 0xF > IPV4_HLEN // 4 else Oddity.MALFORMED
    if fragment & (IP_MORE_FRAGMENTS | IP_OFFSET_MASK):
        return Oddity.FRAGMENT
    if not IPV4_HLEN <= total <= len(view) - ETH_HLEN:
        return Oddity.MALFORMED
    payload = ETH_HLEN + IPV4_HLEN
    if protocol == IPPROTO_TCP:
        if total < IPV4_HLEN + TCP_HLEN:
            return Oddity.MALFORMED
        if view[payload + 13] & (TCP_SYN | TCP_ACK) != TCP_SYN:
            return None
        _, port = _PORTS.unpack_from(view, payload)
        return Packet(protocol, destination, port)
    if protocol == IPPROTO_UDP:
        if total < IPV4_HLEN + UDP_HLEN:
            return Oddity.MALFORMED
        _, port = _PORTS.unpack_from(view, payload)
        return Packet(protocol, destination, port)
    if protocol == IPPROTO_ICMP:
        if total < IPV4_HLEN + ICMP_HLEN:
            return Oddity.MALFORMED
        return Packet(protocol, destination, 0)
    return Oddity.PROTOCOL


def udp_payload_from(frame: BytesLike, source: bytes, source_port: int) -> memoryview | None:
    """The payload of ``frame`` if it is an unfragmented IPv4 UDP datagram from ``source``:``source_port``."""
    view = memoryview(frame)
    if len(view) < ETH_HLEN + IPV4_HLEN + UDP_HLEN or _ETHERTYPE.unpack_from(view, 12)[0] != ETH_P_IP:
        return None
    version_ihl, _, total, _, fragment, _, protocol, _, sender, _ = _IPV4.unpack_from(view, ETH_HLEN)
    if protocol != IPPROTO_UDP or sender != source or fragment & (IP_MORE_FRAGMENTS | IP_OFFSET_MASK):
        return None
    header = (version_ihl & 0xF) * 4
    start = ETH_HLEN + header
    if header < IPV4_HLEN or total > len(view) - ETH_HLEN or total < header + UDP_HLEN:
        return None
    port, _, length = struct.unpack_from("!HHH", view, start)
    if port != source_port or not UDP_HLEN <= length <= total - header:
        return None
    return view[start + UDP_HLEN : start + length]


def refusal(frame: BytesLike, packet: Packet) -> bytes:
    """What the guest gets back for ``packet`` (read from ``frame``): a TCP reset, else ICMP unreachable."""
    view = memoryview(frame)
    guest, peer = view[6:12], view[0:6]
    ip = view[ETH_HLEN : ETH_HLEN + IPV4_HLEN]
    source, destination = bytes(ip[12:16]), bytes(ip[16:20])
    if packet.protocol == IPPROTO_TCP:
        return _ethernet(guest, peer, _tcp_reset(view, source, destination))
    quoted = view[ETH_HLEN : ETH_HLEN + IPV4_HLEN + ICMP_QUOTED]
    icmp = bytearray(struct.pack("!BBHI", ICMP_UNREACHABLE, ICMP_ADMIN_PROHIBITED, 0, 0)) + quoted
    struct.pack_into("!H", icmp, 2, internet_checksum(icmp))
    return _ethernet(guest, peer, _ipv4(destination, source, IPPROTO_ICMP, bytes(icmp)))


def _tcp_reset(view: memoryview, source: bytes, destination: bytes) -> bytes:
    """A reset from the SYN's destination acknowledging it (RFC 9293, 3.10.7.1)."""
    segment = ETH_HLEN + IPV4_HLEN
    source_port, destination_port = _PORTS.unpack_from(view, segment)
    (sequence,) = _SEQUENCE.unpack_from(view, segment + 4)
    (total,) = struct.unpack_from("!H", view, ETH_HLEN + 2)
    data_offset = (view[segment + 12] >> 4) * 4
    acknowledged = (sequence + 1 + max(0, total - IPV4_HLEN - data_offset)) & 0xFFFFFFFF
    tcp = bytearray(
        struct.pack("!HHIIBBHHH", destination_port, source_port, 0, acknowledged, TCP_HLEN // 4 << 4,
                    TCP_RST | TCP_ACK, 0, 0, 0)
    )
    pseudo = destination + source + struct.pack("!BBH", 0, IPPROTO_TCP, len(tcp))
    struct.pack_into("!H", tcp, 16, internet_checksum(pseudo + tcp))
    return _ipv4(destination, source, IPPROTO_TCP, bytes(tcp))


def _ipv4(source: bytes, destination: bytes, protocol: int, payload: bytes) -> bytes:
    header = bytearray(
        _IPV4.pack(0x45, 0, IPV4_HLEN + len(payload), 0, 0x4000, DEFAULT_TTL, protocol, 0, source, destination)
    )
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header) + payload


def _ethernet(destination: memoryview, source: memoryview, payload: bytes) -> bytes:
    return bytes(destination) + bytes(source) + _ETHERTYPE.pack(ETH_P_IP) + payload


def internet_checksum(data: BytesLike) -> int:
    """The ones' complement of the ones' complement sum of ``data``'s 16-bit words (RFC 1071): 0 over a
    header whose checksum field holds it."""
    return ~ones_complement_sum(data) & 0xFFFF
