"""The egress filter on hand-made frames: what it lets through, refuses and answers, and what it learns."""

from __future__ import annotations

import ipaddress
import struct

import dns.message
import dns.rrset
import pytest

from asupermachine import Network
from asupermachine._core.net.egress import MAX_LEARNED_ADDRESSES, EgressFilter, EgressPolicy, dns_answers
from asupermachine._core.net.packets import (
    ICMP_ADMIN_PROHIBITED,
    ICMP_UNREACHABLE,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    internet_checksum,
)

GUEST_MAC = bytes.fromhex("525400123456")
GATEWAY_MAC = bytes.fromhex("9a5510aabbcc")
GUEST = "10.0.2.15"
GATEWAY = "10.0.2.2"
RESOLVER = "10.0.2.3"
DENY_ALL = ("0.0.0.0/0",)


def ipv4(source: str, destination: str, protocol: int, payload: bytes, *, fragment: int = 0x4000,
         options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    header = bytearray(struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 1, fragment, 64, protocol, 0,
        ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed,
    ) + options)
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header) + payload


def ethernet(payload: bytes, ethertype: int = 0x0800, *, to_guest: bool = False) -> bytes:
    destination, source = (GUEST_MAC, GATEWAY_MAC) if to_guest else (GATEWAY_MAC, GUEST_MAC)
    return destination + source + struct.pack("!H", ethertype) + payload


def tcp(destination: str, port: int, flags: int, *, sequence: int = 1000, data: bytes = b"") -> bytes:
    segment = struct.pack("!HHIIBBHHH", 40000, port, sequence, 0, 5 << 4, flags, 64240, 0, 0) + data
    return ethernet(ipv4(GUEST, destination, IPPROTO_TCP, segment))


def udp(destination: str, port: int, data: bytes = b"hello", *, source: str = GUEST, source_port: int = 40000,
        to_guest: bool = False) -> bytes:
    datagram = struct.pack("!HHHH", source_port, port, 8 + len(data), 0) + data
    return ethernet(ipv4(source, destination, IPPROTO_UDP, datagram), to_guest=to_guest)


def ping(destination: str) -> bytes:
    return ethernet(ipv4(GUEST, destination, IPPROTO_ICMP, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"x" * 8))


def dns_response(name: str, *records: tuple[str, str, str]) -> bytes:
    response = dns.message.make_response(dns.message.make_query(name, "A"))
    for owner, kind, value in records:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", kind, value))
    return response.to_wire()


def answer_from(resolver: str, message: bytes) -> bytes:
    return udp(GUEST, 40000, message, source=resolver, source_port=53, to_guest=True)


def make_filter(allow_out: tuple[str, ...] = (), deny_out: tuple[str, ...] = DENY_ALL) -> EgressFilter:
    return EgressFilter(EgressPolicy(allow_out, deny_out), gateway=GATEWAY, resolver=RESOLVER)


def test_an_empty_policy_lets_everything_through_unread() -> None:
    egress = make_filter(deny_out=())
    for frame in (tcp("1.2.3.4", 80, TCP_SYN), ethernet(b"\x60" + bytes(60), 0x86DD), b"\x00" * 3):
        assert egress.outbound(frame) is None
    assert egress.refused == {}


def test_a_denied_connection_is_reset_at_once_and_counted() -> None:
    egress = make_filter()
    frame = tcp("93.184.216.34", 443, TCP_SYN, sequence=0xFFFFFFFF)
    answer = egress.outbound(frame)
    assert answer
    assert answer[:6] == GUEST_MAC and answer[6:12] == GATEWAY_MAC and answer[12:14] == b"\x08\x00"
    ip = answer[14:34]
    assert internet_checksum(ip) == 0
    assert ip[12:20] == ipaddress.IPv4Address("93.184.216.34").packed + ipaddress.IPv4Address(GUEST).packed
    segment = answer[34:]
    source_port, destination_port, sequence, acknowledged, offset, flags = struct.unpack_from("!HHIIBB", segment)
    assert (source_port, destination_port) == (443, 40000)
    assert acknowledged == 0, "the SYN's sequence number plus one, wrapped"
    assert flags == TCP_RST | TCP_ACK and offset >> 4 == 5
    pseudo = ip[12:20] + struct.pack("!BBH", 0, IPPROTO_TCP, len(segment))
    assert internet_checksum(pseudo + segment) == 0
    assert egress.refused == {"tcp": 1}


def test_a_reset_acknowledges_the_data_a_syn_carries() -> None:
    answer = make_filter().outbound(tcp("1.2.3.4", 80, TCP_SYN, sequence=10, data=b"fast open"))
    assert answer is not None
    assert struct.unpack_from("!I", answer, 34 + 8)[0] == 10 + 1 + len(b"fast open")


@pytest.mark.parametrize(("frame", "kind"), [(udp("8.8.4.4", 123), "udp"), (ping("1.1.1.1"), "icmp")])
def test_a_denied_datagram_gets_icmp_unreachable_quoting_it(frame: bytes, kind: str) -> None:
    egress = make_filter()
    answer = egress.outbound(frame)
    assert answer
    ip, icmp = answer[14:34], answer[34:]
    assert internet_checksum(ip) == 0 and ip[9] == IPPROTO_ICMP
    assert (icmp[0], icmp[1]) == (ICMP_UNREACHABLE, ICMP_ADMIN_PROHIBITED)
    assert internet_checksum(icmp) == 0
    assert icmp[8:] == frame[14 : 14 + 20 + 8], "the offending header and 8 bytes of its payload"
    assert egress.refused == {kind: 1}


def test_segments_of_open_connections_pass_and_only_a_bare_syn_opens_one() -> None:
    egress = make_filter()
    for flags in (TCP_ACK, TCP_SYN | TCP_ACK, TCP_RST, TCP_ACK | 0x08):
        assert egress.outbound(tcp("1.2.3.4", 80, flags)) is None, flags
    assert egress.refused == {}


def test_allow_wins_over_deny_and_unnamed_destinations_are_allowed() -> None:
    egress = make_filter(allow_out=("1.2.3.0/24",), deny_out=("1.2.0.0/16",))
    assert egress.outbound(tcp("1.2.3.4", 80, TCP_SYN)) is None
    assert egress.outbound(tcp("1.2.4.4", 80, TCP_SYN))
    assert egress.outbound(tcp("9.9.9.9", 80, TCP_SYN)) is None


def test_dns_to_the_resolver_and_dhcp_pass_a_locked_down_guest() -> None:
    egress = make_filter()
    assert egress.outbound(udp(RESOLVER, 53)) is None
    assert egress.outbound(tcp(RESOLVER, 53, TCP_SYN)) is None
    assert egress.outbound(udp("255.255.255.255", 67)) is None
    assert egress.outbound(udp("8.8.8.8", 53)), "only the VM's resolver"


def test_the_host_is_host_internal() -> None:
    egress = make_filter(allow_out=("host.internal",))
    assert egress.outbound(tcp(GATEWAY, 8000, TCP_SYN)) is None
    assert egress.outbound(tcp("10.0.2.4", 8000, TCP_SYN))


def test_names_match_the_addresses_the_resolver_gave_through_cnames() -> None:
    egress = make_filter(allow_out=("pypi.org", "*.pythonhosted.org"))
    assert egress.outbound(tcp("151.101.0.223", 443, TCP_SYN)), "not yet resolved"
    egress.inbound(answer_from(RESOLVER, dns_response(
        "pypi.org", ("pypi.org.", "CNAME", "d.fastly.net."), ("d.fastly.net.", "A", "151.101.0.223"),
    )))
    files = dns_response("files.pythonhosted.org", ("files.pythonhosted.org.", "A", "146.75.1.1"))
    egress.inbound(answer_from(RESOLVER, files))
    egress.inbound(answer_from(RESOLVER, dns_response("pythonhosted.org", ("pythonhosted.org.", "A", "7.7.7.7"))))
    assert egress.outbound(tcp("151.101.0.223", 443, TCP_SYN)) is None
    assert egress.outbound(tcp("146.75.1.1", 443, TCP_SYN)) is None
    assert egress.outbound(tcp("7.7.7.7", 443, TCP_SYN)), "*.name is below the name, not the name"


def test_only_the_resolver_teaches_names_and_only_on_the_question_chain() -> None:
    egress = make_filter(allow_out=("pypi.org",))
    egress.inbound(answer_from("6.6.6.6", dns_response("pypi.org", ("pypi.org.", "A", "6.6.6.1"))))
    egress.inbound(answer_from(RESOLVER, dns_response("evil.example", ("evil.example.", "A", "6.6.6.2"),
                                                      ("pypi.org.", "A", "6.6.6.3"))))
    for address in ("6.6.6.1", "6.6.6.2", "6.6.6.3"):
        assert egress.outbound(tcp(address, 443, TCP_SYN)), address


def test_denied_names_are_refused_where_the_rest_is_allowed() -> None:
    egress = make_filter(deny_out=("*.example.org",))
    egress.inbound(answer_from(RESOLVER, dns_response("www.example.org", ("www.example.org.", "A", "5.5.5.5"))))
    assert egress.outbound(tcp("5.5.5.5", 80, TCP_SYN))
    assert egress.outbound(tcp("5.5.5.6", 80, TCP_SYN)) is None


def test_learned_names_are_bounded() -> None:
    egress = make_filter(allow_out=("*.example.org",))
    for index in range(MAX_LEARNED_ADDRESSES + 1):
        address = str(ipaddress.IPv4Address(0x0B000000 + index))
        name = f"h{index}.example.org"
        egress.inbound(answer_from(RESOLVER, dns_response(name, (f"{name}.", "A", address))))
    assert egress.outbound(tcp("11.0.0.0", 80, TCP_SYN)), "the oldest is forgotten"
    assert egress.outbound(tcp(str(ipaddress.IPv4Address(0x0B000000 + MAX_LEARNED_ADDRESSES)), 80, TCP_SYN)) is None


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (ethernet(b"\x60" + bytes(60), 0x86DD), "ethertype"),
        (ethernet(b"\x00\x05\x08\x00" + ipv4(GUEST, "1.2.3.4", IPPROTO_UDP, bytes(8)), 0x8100), "ethertype"),
        (ethernet(ipv4(GUEST, "1.2.3.4", IPPROTO_UDP, bytes(16), fragment=0x2000)), "fragment"),
        (ethernet(ipv4(GUEST, "1.2.3.4", IPPROTO_UDP, bytes(16), fragment=0x0001)), "fragment"),
        (ethernet(ipv4(GUEST, "1.2.3.4", IPPROTO_UDP, bytes(16), options=b"\x01\x01\x01\x00")), "ip options"),
        (ethernet(ipv4(GUEST, "1.2.3.4", 47, bytes(16))), "protocol"),
        (ethernet(ipv4(GUEST, "1.2.3.4", IPPROTO_TCP, bytes(8))), "malformed"),
        (ethernet(ipv4(GUEST, "1.2.3.4", IPPROTO_UDP, bytes(8)))[:30], "malformed"),
        (b"\x00" * 10, "malformed"),
    ],
)
def test_frames_it_does_not_read_are_dropped_and_counted(frame: bytes, why: str) -> None:
    egress = make_filter(allow_out=("0.0.0.0/0",))
    assert egress.outbound(frame) == b""
    assert egress.refused == {why: 1}


def test_arp_passes() -> None:
    assert make_filter().outbound(ethernet(bytes(28), 0x0806)) is None


def test_dns_answers_ignores_what_is_not_a_response() -> None:
    assert dns_answers(b"\x00" * 5) == {}
    assert dns_answers(dns.message.make_query("pypi.org", "A").to_wire()) == {}


@pytest.mark.parametrize("entry", ["300.1.1.1", "10.0.0.0/33", "-bad-.org", "a..b", "*", ""])
def test_bad_entries_are_refused_when_the_network_is_made(entry: str) -> None:
    with pytest.raises(ValueError, match="deny_out"):
        Network(deny_out=[entry])


def test_a_string_is_not_a_list_of_entries() -> None:
    with pytest.raises(TypeError, match="allow_out"):
        Network(allow_out="pypi.org")  # type: ignore[arg-type]
