"""Egress policy: which destinations a guest may open flows to, judged on its frames: sans-IO.

Entries are IPv4 networks (``10.0.0.0/8``), addresses, or host names
(``pypi.org``; ``*.pythonhosted.org`` for any name below it). As in E2B,
:attr:`EgressPolicy.allow_out` wins over :attr:`EgressPolicy.deny_out`, and what
neither names is allowed: ``deny_out=["0.0.0.0/0"]`` plus an allow list locks a
guest down. A name matches the addresses the guest was told for it: the
:class:`EgressFilter` reads the answers of the VM's resolver (the DNS forwarder,
which only passt speaks for) on their way in, following CNAMEs, so a guest cannot
claim an address for a name. ``host.internal`` is the gateway, the host.

DNS to the forwarder and DHCP are always let through, or names could not work.
"""

from __future__ import annotations

import collections
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from .packets import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Oddity, Packet, read_outbound, refusal, udp_payload_from
from .stream_framing import BytesLike

DNS_PORT = 53
DHCP_SERVER_PORT = 67
HOST_NAME = "host.internal"
"""The name of the gateway (the host) in the guest's ``/etc/hosts``, which policies may name too."""
MAX_LEARNED_ADDRESSES = 4096
"""Addresses whose names are remembered; the oldest are forgotten past this (a guest looking up names
forever must not grow the host's memory)."""
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_PROTOCOL_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp"}


@dataclass(frozen=True)
class EgressPolicy:
    """Where a guest may connect to: E2B's ``allow_out``/``deny_out``. The empty policy allows everything."""

    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()
    _allow: _Entries = field(init=False, repr=False, compare=False)
    _deny: _Entries = field(init=False, repr=False, compare=False)

    @classmethod
    def of(cls, allow_out: Sequence[str], deny_out: Sequence[str]) -> EgressPolicy:
        """The policy of two lists of entries (any sequence but a string)."""
        for name, entries in (("allow_out", allow_out), ("deny_out", deny_out)):
            if isinstance(entries, str):
                raise TypeError(f"{name} takes a list of entries, not the string {entries!r}")
        return cls(tuple(allow_out), tuple(deny_out))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", _Entries.parse(self.allow_out, "allow_out"))
        object.__setattr__(self, "_deny", _Entries.parse(self.deny_out, "deny_out"))

    @property
    def active(self) -> bool:
        """Whether it can refuse anything (it denies something)."""
        return bool(self.deny_out)

    def allows(self, address: ipaddress.IPv4Address, names: Iterable[str]) -> bool:
        """Whether a flow to ``address``, known by ``names``, may open."""
        names = tuple(names)
        if self._allow.match(address, names):
            return True
        return not self._deny.match(address, names)


@dataclass(frozen=True)
class _Entries:
    networks: tuple[ipaddress.IPv4Network, ...]
    names: frozenset[str]
    suffixes: tuple[str, ...]
    """``.example.org`` for ``*.example.org``."""

    @classmethod
    def parse(cls, entries: Iterable[str], option: str) -> _Entries:
        networks: list[ipaddress.IPv4Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise TypeError(f"{option} entries are strings, not {entry!r}")
            text = entry.strip().lower().rstrip(".")
            if text and (text[0].isdigit() or "/" in text):
                try:
                    networks.append(ipaddress.IPv4Network(text))
                except ValueError as error:
                    raise ValueError(f"{option}: {entry!r} is not an IPv4 address or network ({error})") from None
            elif text.startswith("*.") and _is_host_name(text[2:]):
                suffixes.append(text[1:])
            elif _is_host_name(text):
                names.add(text)
            else:
                raise ValueError(f"{option}: {entry!r} is neither an IPv4 address, a network nor a host name")
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def match(self, address: ipaddress.IPv4Address, names: tuple[str, ...]) -> bool:
        if any(address in network for network in self.networks):
            return True
        return any(name in self.names or name.endswith(self.suffixes) for name in names)


def _is_host_name(text: str) -> bool:
    return 0 < len(text) <= 253 and all(_LABEL.match(label) for label in text.split("."))


class EgressFilter:
    """One VM's policy at work: judges the guest's frames, learns names from its resolver's answers, counts.

    ``gateway`` is the host's address in the guest, ``resolver`` the DNS forwarder's.
    """

    def __init__(self, policy: EgressPolicy, *, gateway: str, resolver: str) -> None:
        self.policy = policy
        self._gateway = ipaddress.IPv4Address(gateway)
        self._resolver = ipaddress.IPv4Address(resolver)
        self._resolver_bytes = self._resolver.packed
        self._names: collections.OrderedDict[bytes, frozenset[str]] = collections.OrderedDict()
        self._names[self._gateway.packed] = frozenset({HOST_NAME})
        self._refused: collections.Counter[str] = collections.Counter()

    @property
    def refused(self) -> Mapping[str, int]:
        """Frames refused so far, by why: ``tcp``, ``udp``, ``icmp`` (the policy) or an :class:`Oddity`."""
        return MappingProxyType(dict(self._refused))

    def outbound(self, frame: BytesLike) -> bytes | None:
        """Judge a frame from the guest: None lets it through, else what to answer the guest (possibly
        nothing, ``b""``, for a frame dropped unread)."""
        if not self.policy.active:
            return None
        packet = read_outbound(frame)
        if packet is None:
            return None
        if isinstance(packet, Oddity):
            self._refused[packet.value] += 1
            return b""
        if self._always_allowed(packet):
            return None
        if self.policy.allows(ipaddress.IPv4Address(packet.destination), self._names.get(packet.destination, ())):
            return None
        self._refused[_PROTOCOL_NAMES[packet.protocol]] += 1
        return refusal(frame, packet)

    def _always_allowed(self, packet: Packet) -> bool:
        if packet.protocol == IPPROTO_UDP and packet.destination_port == DHCP_SERVER_PORT:
            return True
        return packet.destination == self._resolver_bytes and packet.destination_port == DNS_PORT

    def inbound(self, frame: BytesLike) -> None:
        """Learn the addresses of names from a frame going to the guest, if it is its resolver's answer."""
        if not self.policy.active:
            return
        payload = udp_payload_from(frame, self._resolver_bytes, DNS_PORT)
        if payload is not None:
            for address, names in dns_answers(payload).items():
                self._learn(address, names)

    def _learn(self, address: bytes, names: frozenset[str]) -> None:
        known = self._names.pop(address, frozenset())
        self._names[address] = known | names
        while len(self._names) > MAX_LEARNED_ADDRESSES:
            self._names.popitem(last=False)


def dns_answers(message: BytesLike) -> dict[bytes, frozenset[str]]:
    """The IPv4 addresses a DNS response gives for its question, each with the names on the way (the
    question's, then each CNAME's), as a stub resolver reads it: records off that chain are ignored.
    Empty for anything but a well-formed response to one question."""
    try:
        parsed = dns.message.from_wire(bytes(message))
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return {}
    if not parsed.flags & dns.flags.QR or len(parsed.question) != 1:
        return {}
    canonical: dict[dns.name.Name, dns.name.Name] = {}
    owned: dict[dns.name.Name, list[bytes]] = {}
    for rrset in parsed.answer:
        for record in rrset:
            if rrset.rdtype == dns.rdatatype.CNAME:
                canonical.setdefault(rrset.name, record.target)
            elif rrset.rdtype == dns.rdatatype.A:
                owned.setdefault(rrset.name, []).append(ipaddress.IPv4Address(record.address).packed)
    chain = [parsed.question[0].name]
    while chain[-1] in canonical and canonical[chain[-1]] not in chain:
        chain.append(canonical[chain[-1]])
    names = frozenset(name.to_text(omit_final_dot=True).lower() for name in chain)
    return {address: names for name in chain for address in owned.get(name, ())}
